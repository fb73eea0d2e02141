"""The sink contract: a label sink takes finished blocks, then commits its outputs atomically
or aborts leaving nothing; :class:`StagedSink` does the staging, the state and the renames
for every format; :func:`commit_together` commits an item's sinks all or none.

A sink is also a block consumer (:class:`~geoseg_pipeline.stitching.BlockConsumer`): ``add``
writes a block, ``finish`` commits.
"""

from __future__ import annotations

import importlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..errors import SinkError
from ..formats import OutputFormat
from ..geometry import Grid, Window
from ..volumes import VolumeGrid
from .legend import ClassLegend

if TYPE_CHECKING:  # types only: the spec (pydantic) and the stitching are not needed to write a map
    from ..spec import OutputSpec
    from ..stitching.consumer import LabelBlock


@dataclass(frozen=True)
class SinkTarget:
    """What every sink of an item may need to know, so that all are made alike
    (``Sink.for_item(out_dir, target)``).

    Args:
        grid: the item's grid (a raster's :class:`Grid` or a volume's :class:`VolumeGrid`).
        legend: class names and colours.
        nodata_label: the label of pixels without valid input (``None``: none).
        num_classes: classes the model predicts.
        output: the workflow's output section (compression, overviews, ...).
        block_shape: the plan's output block (chunking).
        header_source: a NIfTI input (its path, or its nibabel header) whose header a NIfTI
            output copies.
        source_series: a DICOM series item's path, whose instances a DICOM SEG references.
        dicomweb: the DICOMweb server of a ``dicomweb+`` series (its instances' headers).
        provenance: what made the labels (``model``, ``model_version``, ``software``), for
            outputs that record it (DICOM SEG).
        row_area_m2: a raster's ground area of one pixel per row, m² (``None``: none), for
            outputs that report areas (polygons).
    """

    grid: Grid | VolumeGrid
    legend: ClassLegend
    nodata_label: int | None
    num_classes: int
    output: OutputSpec
    block_shape: tuple[int, ...]
    header_source: Any = None
    provenance: dict[str, str] = field(default_factory=dict)
    source_series: str | None = None
    dicomweb: Any = None
    row_area_m2: np.ndarray | None = field(default=None, compare=False)


@runtime_checkable
class LabelSink(Protocol):
    """Where one item's label map goes.

    Contract (``tests/sinks/sink_contract.py`` checks it for every sink):
        * ``write`` takes blocks in any order, each once; nothing is visible under the final
          names until ``commit``;
        * ``commit`` publishes every output file at once (``prepare`` does the work that can
          fail, ``publish`` only renames) and returns the main output's path;
        * ``abort`` leaves nothing behind, at any point before ``publish``;
        * ``write`` or ``commit`` after ``commit`` or ``abort`` raises :class:`SinkError`.
    """

    name: ClassVar[str]
    out_dir: Path

    def write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None = None) -> None: ...

    def prepare(self) -> None: ...

    def publish(self) -> Path: ...

    def commit(self) -> Path: ...

    def retract(self) -> None: ...

    def abort(self) -> None: ...


class StagedSink(ABC):
    """A sink whose files are written into a hidden ``OUT/<item>/.staging-*`` folder and renamed
    into ``OUT/<item>`` on commit, main output last: a crash leaves only the staging folder,
    never an output that looks complete.

    Subclasses implement :meth:`_write` (one block), :meth:`_prepare` (finish the staged files;
    return ``(staged, final name)`` pairs, main output last) and, when they hold open handles,
    :meth:`_close`.
    """

    #: The output format's name (``output.formats``).
    name: ClassVar[str] = ""
    #: Whether finished blocks must carry their blended logits for this sink.
    needs_logits: ClassVar[bool] = False

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._files: list[tuple[Path, Path]] = []
        self._published: list[Path] = []
        if out_dir.is_symlink():  # the outputs would land wherever it points, out of the output folder
            raise SinkError(f"{out_dir}: is a symbolic link (to {os.readlink(out_dir)}); outputs are never written "
                            "through a link out of the output folder: remove it")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.staging = out_dir / f".staging-{uuid.uuid4().hex[:12]}"
            self.staging.mkdir()
        except OSError as exc:
            raise SinkError(f"{out_dir}: cannot create the output folder: {exc.strerror or exc}") from exc
        self._state = "open"

    @property
    def is_open(self) -> bool:
        """Blocks may still be written."""
        return self._state == "open"

    def write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None = None) -> None:
        """Write one finished block.

        Raises:
            SinkError: after commit or abort, or a block the sink refuses (named).
        """
        self._check_open()
        self._write(window, labels, logits)

    def _check_open(self) -> None:
        if self._state != "open":
            raise SinkError(f"{self.out_dir}: write after commit() or abort()")

    def add(self, block: LabelBlock) -> None:
        """The block-consumer side: write ``block``."""
        self.write(block.window, block.labels, block.logits)

    def finish(self) -> Path:
        """The block-consumer side: commit."""
        return self.commit()

    def prepare(self) -> None:
        """Finish the staged files (compression, overviews, sidecars): everything that can fail.

        Raises:
            SinkError: the outputs cannot be finished (the sink is aborted).
        """
        if self._state != "open":
            raise SinkError(f"{self.out_dir}: commit() after commit() or abort()")
        self._state = "preparing"
        try:
            self._files = self._prepare()
        except SinkError:
            self.abort()
            raise
        except Exception as exc:  # GDAL, nibabel and zarr raise their own types besides OSError
            self.abort()
            raise SinkError(f"{self.out_dir}: cannot finish the {self.name} output: {exc}"
                            f"{disk_note(self.out_dir)}") from exc
        self._state = "prepared"

    def publish(self) -> Path:
        """Rename the prepared files into ``out_dir`` (replacing earlier ones), main output last;
        returns the main output's path.

        Raises:
            SinkError: a rename failed (what this call published is removed again).
        """
        if self._state != "prepared":
            raise SinkError(f"{self.out_dir}: publish() before prepare(), or after commit() or abort()")
        try:
            for staged, final in self._files:
                _replace(staged, final, self.staging)
                self._published.append(final)
        except OSError as exc:
            self.retract()
            self.abort()
            raise SinkError(f"{self._files[-1][1]}: cannot publish: {exc}") from exc
        self._state = "published"
        shutil.rmtree(self.staging, ignore_errors=True)
        return self._files[-1][1]

    def commit(self) -> Path:
        """:meth:`prepare` then :meth:`publish`; returns the main output's path."""
        self.prepare()
        return self.publish()

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file this sink published (main output last)."""
        return tuple(self._published)

    def retract(self) -> None:
        """Remove what :meth:`publish` put in place (a sibling sink of the item failed)."""
        for path in reversed(self._published):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self._published = []

    def abort(self) -> None:
        """Drop everything written so far (the staging folder); may be called again."""
        if self._state in ("open", "preparing", "prepared"):
            self._close()
        if self._state != "published":
            self._state = "aborted"
        shutil.rmtree(self.staging, ignore_errors=True)

    @abstractmethod
    def _write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None) -> None:
        """Write one block into the staged files."""

    @abstractmethod
    def _prepare(self) -> list[tuple[Path, Path]]:
        """Finish the staged files; ``(staged path, final path)`` pairs, main output last."""

    def _close(self) -> None:  # noqa: B027 -- optional hook: most sinks hold no handle
        """Release open handles (before the staging folder is removed)."""


#: Free bytes below which a failed write is put down to a full file system.
FULL_BELOW = 8 << 20


def disk_note(path: Path) -> str:
    """``" (no space left on device: N bytes free on the file system of PATH)"`` when that file
    system is (nearly) full, else ``""``: GDAL reports a full disk as a bare write error."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return ""
    return f" (no space left on device: {free} bytes free on the file system of {path})" if free < FULL_BELOW else ""


def make_sinks(outputs: Sequence[OutputFormat], out_dir: Path, target: SinkTarget) -> list[StagedSink]:
    """One sink per output record (see :data:`geoseg_pipeline.formats.OUTPUTS`), in order; if one
    cannot be made, those made before are aborted.

    Raises:
        SinkError: a sink cannot be created.
    """
    sinks: list[StagedSink] = []
    try:
        for fmt in outputs:
            module, _, name = fmt.sink.partition(":")
            cls: Any = getattr(importlib.import_module(f"{__package__}.{module}"), name)
            sinks.append(cls.for_item(out_dir, target))
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return sinks


def _replace(staged: Path, final: Path, staging: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        # a directory cannot be renamed over a non-empty one: move the old one aside first
        os.replace(final, staging / f".previous-{uuid.uuid4().hex[:8]}")
    os.replace(staged, final)


def commit_together(sinks: Sequence[LabelSink]) -> list[Path]:
    """Commit every sink of an item, or none: all are prepared first (a failure aborts them
    all), then published (a failed rename retracts what the others published). Returns each
    sink's main output, in order.

    Raises:
        SinkError: naming the output that failed; nothing of this item is left published.
    """
    try:
        for sink in sinks:
            sink.prepare()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    published: list[Path] = []
    try:
        for sink in sinks:
            published.append(sink.publish())
    except BaseException:
        retract(sinks)
        raise
    return published


def retract(sinks: Sequence[LabelSink]) -> None:
    """Take back what ``sinks`` published and drop their staging (the item failed after its
    label maps were published, for example while its statistics were written)."""
    for sink in sinks:
        sink.retract()
        sink.abort()


__all__ = ["LabelSink", "SinkTarget", "StagedSink", "commit_together", "make_sinks", "retract"]
