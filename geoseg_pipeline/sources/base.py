"""The source contract: what every reader of 2D raster items provides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from ..errors import SourceError
from ..geometry import Grid, Window

#: On-disk dtypes we segment. Complex and boolean rasters are refused.
SUPPORTED_DTYPES = frozenset(
    np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
)


@runtime_checkable
class RasterSource(Protocol):
    """A 2D multiband raster item, read window by window.

    Contract:
        * ``grid`` gives shape (rows, cols), transform and CRS without reading pixels;
        * ``read(window, bands)`` returns ``(len(bands), rows, cols)`` of the stored dtype for a
          window lying inside the grid; ``bands`` are 1-based;
        * nothing reads the whole item unless the window is the whole item.
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


def detect_format(path: str) -> Literal["geotiff", "zarr"]:
    """Pick a reader by name: ``.zarr`` directories (or ones holding zarr metadata) are Zarr."""
    p = Path(path)
    if p.suffix.lower() == ".zarr" or (p.is_dir() and any(
        (p / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")
    )):
        return "zarr"
    return "geotiff"


def open_raster_source(path: str, fmt: str = "auto") -> RasterSource:
    """Open an item with the reader for ``fmt`` (``auto``, ``geotiff`` or ``zarr``).

    Raises:
        SourceError: the item is missing, unreadable or not a raster.
    """
    from .rasterio_source import RasterioSource
    from .zarr_source import ZarrRasterSource

    if not Path(path).exists() and "://" not in path:
        raise SourceError(f"{path}: no such file or directory")
    kind = detect_format(path) if fmt == "auto" else fmt
    source: RasterSource = ZarrRasterSource(path) if kind == "zarr" else RasterioSource(path)
    if source.dtype not in SUPPORTED_DTYPES:
        source.close()
        raise SourceError(
            f"{path}: unsupported pixel type {source.dtype}; "
            f"supported: {', '.join(sorted(str(d) for d in SUPPORTED_DTYPES))}"
        )
    return source
