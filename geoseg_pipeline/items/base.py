"""What every open item is: its plan, the job sent to the actors, and where its finished blocks
go (sinks and statistics, all block consumers). :mod:`.raster` and :mod:`.volume` differ only
in which consumers they make and what they publish; the driver schedules both alike.

Torch-free and Ray-free: the driver opens items (metadata only), the actors read pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..errors import InputDataError
from ..formats import InputFormat, detect, lookup
from ..preprocess import Preprocessing
from ..sinks import StagedSink, commit_together, retract
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..statistics import ItemStats
from ..stitching import BlockConsumer, LabelBlock
from ..tasks import ItemJob, ModelInfo, RegionSettings
from ..tiling import TilePlan


class OpenItem(ABC):
    """An item being processed: ``plan`` and ``job`` drive the actors; :meth:`write` hands each
    finished block to every sink and statistic; :meth:`commit` publishes the sinks together, then
    the statistics (it may run in a thread); :meth:`abort` drops everything."""

    item: Item
    plan: TilePlan
    job: ItemJob
    nodata_label: int | None
    label_dtype: str
    small: bool
    #: where the stitcher keeps open blocks' sums (``None``: in memory)
    scratch: Path | None = None
    #: whether finished blocks must carry their blended logits
    keep_logits: bool = False
    #: how the workers find each finished block's connected regions (``None``: they do not)
    regions: RegionSettings | None = None

    def __init__(self) -> None:
        self.sinks: list[StagedSink] = []
        self.statistics: list[BlockConsumer[Any]] = []

    @property
    def consumers(self) -> list[BlockConsumer[Any]]:
        """Every block consumer of the item: its sinks, then its statistics."""
        return [*self.sinks, *self.statistics]

    def write(self, block: LabelBlock) -> None:
        """Hand one finished block (on the item's grid) to every sink and statistic."""
        for consumer in self.consumers:
            consumer.add(block)

    def commit(self, meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        """Publish the label maps (all sinks, or none), then the statistics and reports; returns
        the statistics and every written path. A failure takes back what was published."""
        outputs = commit_together(self.sinks)
        try:
            stats, written = self._report(outputs, meta)
        except BaseException:
            retract(self.sinks)
            raise
        return stats, [*outputs, *written]

    @abstractmethod
    def _report(self, outputs: list[Path], meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        """Finish the statistics and write the item's reports next to ``outputs`` (the sinks'
        main outputs, in order); returns the statistics and the report files."""

    def abort(self) -> None:
        """Drop everything written so far."""
        for sink in self.sinks:
            sink.abort()


def item_format(item: Item, spec: WorkflowSpec) -> InputFormat:
    """The format ``item`` is read as: a STAC item's (its assets came resolved with it), else the
    one its path and ``inputs.format`` give."""
    if item.stac is not None:
        return lookup("stac", spec.tiling.kind)
    return detect(item.path, spec.tiling.kind, spec.inputs.format)


def named_bands(source: Any, spec: WorkflowSpec) -> tuple[int, ...] | None:
    """The 1-based bands ``inputs.variables`` names (a datacube's variables), in that order;
    ``None`` when the workflow names none.

    Raises:
        InputDataError: a name the item does not have.
    """
    if spec.inputs.variables is None:
        return None
    picked: tuple[int, ...] = source.select(spec.inputs.variables)
    return picked


def band_selection(item: Item, spec: WorkflowSpec, count: int, info: ModelInfo, kind: str, what: str,
                   named: tuple[int, ...] | None = None) -> Preprocessing:
    """Band (channel) selection and normalization, checked against the model and the item;
    ``preprocessing.bands`` select among the ``named`` bands (``inputs.variables``) when given."""
    if named is not None:
        count = len(named)
    bands = spec.preprocessing.bands or tuple(range(1, count + 1))
    if max(bands) > count:
        raise InputDataError(f"{item.path}: preprocessing.bands selects {max(bands)} but the {kind} has {count} {what}")
    if len(bands) != info.in_channels:
        raise InputDataError(
            f"{item.path}: the model takes {info.in_channels} input channel(s) but the {kind} gives "
            f"{len(bands)} {what}" + (" after band selection" if spec.preprocessing.bands else "")
        )
    norm = spec.preprocessing.normalize
    if norm is not None and len(norm.mean) != len(bands):
        raise InputDataError(
            f"{item.path}: preprocessing.normalize has {len(norm.mean)} entries for {len(bands)} {what}"
        )
    if named is not None:
        bands = tuple(named[b - 1] for b in bands)
    return Preprocessing(bands, norm.mean if norm else None, norm.std if norm else None)


def item_job(item: Item, spec: WorkflowSpec, fmt: InputFormat, prep: Preprocessing, **extra: Any) -> ItemJob:
    """The actors' view of an item (small: sent with every task)."""
    t = spec.tiling
    return ItemJob(item.name, item.path, fmt.name, prep, tuple(t.roi_size), t.blend, t.sigma_scale,
                   t.batch_size, kind=fmt.kind, read_retries=spec.resources.read_retries, **extra)


__all__ = ["OpenItem", "band_selection", "item_format", "item_job", "named_bands"]
