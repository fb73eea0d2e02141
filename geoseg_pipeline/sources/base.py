"""The source contract: what every reader of raster and volume items provides, and opening an
item through the format registry (:mod:`geoseg_pipeline.formats`)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InputDataError, ReadRequestError, SourceError
from ..formats import SERIES_MARK, InputFormat, Kind, detect
from ..geometry import Grid, Window
from ..storage import S3Config, is_s3
from ..volumes import VolumeGrid
from .dicomweb import is_dicomweb

#: On-disk dtypes we segment. Complex and boolean rasters are refused.
SUPPORTED_DTYPES = frozenset(
    np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
)


#: The most pixels (voxels) an item may declare by default: see ``inputs.max_pixels``.
MAX_PIXELS = 2**36


@dataclass(frozen=True)
class SourceOptions:
    """How to open an item, passed explicitly to every reader (readers read no environment).

    Args:
        s3: the object store's configuration, needed for ``s3://`` items.
        channel_axis: volumes: the on-disk axis holding channels (``inputs.channel_axis``).
        data_path: a staged reader's local copy (see ``stage``); ``None``: read ``path`` itself.
        dicomweb: the DICOMweb server of ``dicomweb+`` series items (URL and credentials).
        max_pixels: the most pixels (voxels) an item may declare (``inputs.max_pixels``).
        stac: a STAC item resolved by discovery (:class:`~.stac_items.StacItemRef`): its assets.
    """

    s3: S3Config | None = None
    channel_axis: int | None = None
    data_path: str | None = None
    dicomweb: Any = None
    max_pixels: int = MAX_PIXELS
    stac: Any = None


@runtime_checkable
class RasterSource(Protocol):
    """A 2D multiband raster item, read window by window.

    Contract (``tests/sources/source_contract.py`` checks it for every reader):
        * ``grid`` gives shape (rows, cols), transform and CRS without reading pixels;
        * ``read(window, bands)`` returns ``(len(bands), rows, cols)`` of the stored dtype for a
          window lying inside the grid; ``bands`` are 1-based;
        * nothing reads the whole item unless the window is the whole item;
        * ``close()`` may be called more than once.
    """

    path: str

    @property
    def grid(self) -> Grid: ...

    @property
    def band_count(self) -> int: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def nodata(self) -> float | None: ...

    def read(self, window: Window, bands: Sequence[int]) -> np.ndarray: ...

    def close(self) -> None: ...


@runtime_checkable
class VolumeSource(Protocol):
    """A 3D (optionally multi-channel) volume item, read window by window.

    Contract (``tests/sources/source_contract.py`` checks it for every reader):
        * ``grid`` gives shape ``(i, j, k)`` and affine without reading voxels;
        * ``read(window, channels)`` returns float32 ``(len(channels), i, j, k)`` for a window
          inside the grid; ``channels`` are 0-based, ``None`` means all;
        * nothing reads the whole item unless the window is the whole item;
        * ``close()`` may be called more than once.
    """

    path: str

    @property
    def grid(self) -> VolumeGrid: ...

    @property
    def channel_count(self) -> int: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def ndim_effective(self) -> int: ...

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


Source = RasterSource | VolumeSource


def check_window(path: str, window: Window, shape: Sequence[int]) -> None:
    """Refuse a window that does not lie inside the grid ``shape`` (readers clip or wrap silently).

    Raises:
        ReadRequestError: naming the item, the window and the grid.
    """
    if window.ndim != len(shape) or any(
        a < 0 or s < 1 or a + s > n for a, s, n in zip(window.start, window.size, shape, strict=True)
    ):
        raise ReadRequestError(f"{path}: window {window} does not lie inside the grid {tuple(shape)}")


def checked_indices(path: str, wanted: Sequence[int] | None, count: int, *, first: int, what: str) -> list[int]:
    """The 0-based indices of ``wanted`` bands (``first=1``, GDAL's numbering) or channels
    (``first=0``); all of them when ``None``.

    Raises:
        ReadRequestError: none asked for, or one the item does not have.
    """
    picked = list(range(first, first + count)) if wanted is None else [int(b) for b in wanted]
    if not picked or any(not first <= b < first + count for b in picked):
        raise ReadRequestError(f"{path}: {what} {picked} out of range: the item has {count} "
                               f"({first}..{first + count - 1})")
    return [b - first for b in picked]


def reader_class(fmt: InputFormat) -> Any:
    """The reader class a format record names (imported on first use): it has an ``open(path,
    options)`` class method, and ``stage(path, folder, s3)`` when the format is staged."""
    module, _, cls = fmt.reader.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def stage_item(fmt: InputFormat, path: str, folder: Path, options: SourceOptions) -> str:
    """Make the local copy a staged format reads (in ``folder``); the path to read. Unstaged
    formats read ``path`` itself.

    Raises:
        SourceError: the copy cannot be made (unreadable, truncated gzip, disk full).
    """
    if not fmt.staged:
        return path
    staged: str = reader_class(fmt).stage(path, folder, options)
    return staged


def _check_exists(fmt: InputFormat, path: str) -> None:
    """Refuse a local item that is not there (a DICOM series: its folder).

    Raises:
        SourceError: naming the path.
    """
    if fmt.name == "stac":  # the item's assets are checked when they are opened
        return
    local = path.rpartition(SERIES_MARK)[0] if fmt.series else path
    if not is_s3(path) and not is_dicomweb(path) and not Path(local).exists():
        raise SourceError(f"{path}: no such file or directory")


def open_source(fmt: InputFormat, path: str, options: SourceOptions = SourceOptions()) -> Source:
    """Open ``path`` with the reader of ``fmt``.

    Raises:
        SourceError: the item is missing, unreadable, or not of that format.
        InputDataError: it opens but cannot be read as configured.
    """
    _check_exists(fmt, path)
    if fmt.staged and is_s3(path) and options.data_path is None:
        raise SourceError(f"{path}: an s3:// {fmt.name} item is read from a local copy; stage it first")
    source: Source = reader_class(fmt).open(path, options)
    shape = tuple(int(n) for n in source.grid.shape)
    if min(shape) < 1:
        source.close()
        raise InputDataError(f"{path}: declares an empty image ({' x '.join(map(str, shape))})")
    if math.prod(shape) > options.max_pixels:
        source.close()
        raise InputDataError(
            f"{path}: declares {' x '.join(map(str, shape))} = {math.prod(shape):,} "
            f"{'pixels' if fmt.kind == 'raster' else 'voxels'}, more than inputs.max_pixels ({options.max_pixels:,}); "
            "a damaged header? (raise inputs.max_pixels for an image this large)"
        )
    if fmt.kind == "raster" and source.dtype not in SUPPORTED_DTYPES:
        source.close()
        raise SourceError(
            f"{path}: unsupported pixel type {source.dtype}; "
            f"supported: {', '.join(sorted(str(d) for d in SUPPORTED_DTYPES))}"
        )
    return source


def probe_channels(fmt: InputFormat, path: str, options: SourceOptions = SourceOptions()) -> int:
    """Bands (rasters) or channels (volumes) of an item, from its metadata only: a staged
    format's reader may answer without its local copy (``probe_channels``), others open it.

    Raises:
        SourceError: the item cannot be opened.
    """
    reader = reader_class(fmt)
    if hasattr(reader, "probe_channels"):
        count: int = reader.probe_channels(path, options)
        return count
    source = open_source(fmt, path, options)
    source.close()
    return source.band_count if isinstance(source, RasterSource) else source.channel_count


def open_metadata(fmt: InputFormat, path: str, options: SourceOptions = SourceOptions()) -> Source:
    """Open ``path`` for its metadata (grid, channels, voxel type) without staging it: a staged
    format's reader answers from the header alone (``metadata``: a ``.nii.gz`` not inflated, an
    ``s3://`` object's first bytes); the source it returns may refuse to read pixels. The
    driver opens items this way; the workers stage and read them.

    Raises:
        SourceError: the item is missing, unreadable, or not of that format.
        InputDataError: it opens but cannot be read as configured.
    """
    reader = reader_class(fmt)
    if fmt.staged and options.data_path is None and hasattr(reader, "metadata"):
        _check_exists(fmt, path)
        source: Source = reader.metadata(path, options)
        return source
    return open_source(fmt, path, options)


def open_item_source(path: str, kind: Kind, name: str = "auto", options: SourceOptions = SourceOptions()) -> Source:
    """Detect the format of ``path`` (:func:`~geoseg_pipeline.formats.detect`) and open it."""
    return open_source(detect(path, kind, name), path, options)


def open_raster_source(path: str, fmt: str = "auto", s3: S3Config | None = None) -> RasterSource:
    """Open a raster item with the reader for ``fmt`` (``auto`` or a raster format's name).

    Raises:
        SourceError: the item is missing, unreadable or not a raster.
    """
    source = open_item_source(path, "raster", fmt, SourceOptions(s3=s3))
    assert isinstance(source, RasterSource)
    return source


def open_volume_source(
    path: str, staging_dir: Path | None = None, channel_axis: int | None = None, s3: S3Config | None = None,
    fmt: str = "auto",
) -> VolumeSource:
    """Open a volume item: NIfTI (``.nii``, ``.nii.gz``) or Zarr (plain array or OME-Zarr).

    Args:
        path: the item.
        staging_dir: where a staged format makes its local copy (a ``.nii.gz`` inflated once, an
            ``s3://`` object fetched); without it a local ``.nii.gz`` is read in place,
            decompressing from the start for every window. The copy stays there after
            :meth:`close`: the caller owns and removes the folder.
        channel_axis: NIfTI only: on-disk axis holding channels (``3`` for ``(i, j, k, c)``).
            Zarr channels are always the first axis.
        s3: the object store's configuration, for ``s3://`` items.
        fmt: a volume format's name, or ``auto``.

    Raises:
        SourceError: missing, unreadable, corrupt, or not a volume format.
        InputDataError: dimensions that cannot be read as configured.
    """
    if not is_s3(path) and not Path(path).exists():
        raise SourceError(f"{path}: no such file or directory")
    found = detect(path, "volume", fmt)
    options = SourceOptions(s3=s3, channel_axis=channel_axis)
    if staging_dir is not None:
        options = SourceOptions(s3, channel_axis, stage_item(found, path, staging_dir, options))
    source = open_source(found, path, options)
    assert isinstance(source, VolumeSource)
    return source


def check_volume_channel_axis(path: str, channel_axis: int | None, allowed: Sequence[int | None]) -> None:
    """Refuse a ``channel_axis`` the volume format cannot honour.

    Raises:
        InputDataError: naming the item and the axis.
    """
    if channel_axis not in allowed:
        raise InputDataError(f"{path}: this format keeps channels on axis 0, got channel_axis={channel_axis}")


__all__ = [
    "SUPPORTED_DTYPES",
    "RasterSource",
    "Source",
    "SourceOptions",
    "VolumeSource",
    "check_volume_channel_axis",
    "open_item_source",
    "open_metadata",
    "open_raster_source",
    "open_source",
    "open_volume_source",
    "probe_channels",
    "reader_class",
    "stage_item",
]
