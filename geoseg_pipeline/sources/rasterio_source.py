"""GeoTIFF / COG (and anything else GDAL reads) through rasterio windowed reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window as RioWindow

from ..errors import SourceError, chained_reason
from ..geometry import Grid, Window
from ..storage.transient import open_error, read_error
from .base import SourceOptions, check_window, checked_indices


def _stac_hint(path: str) -> str:
    """A hint when ``path`` (a local file GDAL cannot open) is a STAC document."""
    if not path.lower().endswith((".json", ".geojson", ".parquet")):
        return ""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return ""
    if b"stac_version" not in head and not path.lower().endswith(".parquet"):
        return ""
    return ("; it is a STAC document: give its assets in the model's channel order "
            "(--assets B04,B03,B02,B08, or inputs.stac with assets in a workflow)")


class RasterioSource:
    """A raster opened with rasterio; every read is a window."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._ds = rasterio.open(path)
        except RasterioError as exc:
            raise open_error(f"{path}: cannot open as a raster: {exc}{_stac_hint(path)}", exc, path) from exc
        if self._ds.count < 1:
            self._ds.close()
            raise SourceError(f"{path}: the raster has no bands")
        dtypes = set(self._ds.dtypes)
        if len(dtypes) > 1:
            self._ds.close()
            raise SourceError(f"{path}: bands have different pixel types {sorted(dtypes)}")
        crs = self._ds.crs.to_wkt() if self._ds.crs else None
        self._grid = Grid((self._ds.height, self._ds.width), self._ds.transform, crs)

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> RasterioSource:
        """The registry's way in (:mod:`geoseg_pipeline.formats`); ``s3://`` objects are read
        through GDAL's ``/vsis3/`` in the :func:`~geoseg_pipeline.storage.rasterio_env` the job
        entered with its :class:`~geoseg_pipeline.storage.S3Config`."""
        return cls(path)

    @property
    def grid(self) -> Grid:
        """Shape, transform and CRS."""
        return self._grid

    @property
    def band_count(self) -> int:
        """Number of bands."""
        return int(self._ds.count)

    @property
    def dtype(self) -> np.dtype:
        """Stored pixel type."""
        dtype: np.dtype = np.dtype(self._ds.dtypes[0])
        return dtype

    @property
    def nodata(self) -> float | None:
        """The file's nodata value (``None`` when unset)."""
        value = self._ds.nodata
        return None if value is None else float(value)

    def read(self, window: Window, bands: Sequence[int]) -> np.ndarray:
        """Read ``bands`` (1-based) in ``window``, which must lie inside the grid."""
        check_window(self.path, window, self._grid.shape)
        indices = checked_indices(self.path, bands, self.band_count, first=1, what="bands")
        (r0, c0), (h, w) = window.start, window.size
        try:
            return np.asarray(self._ds.read([i + 1 for i in indices], window=RioWindow(c0, r0, w, h)))
        except RasterioError as exc:
            message = f"{self.path}: cannot read rows {r0}..{r0 + h}, cols {c0}..{c0 + w}: {chained_reason(exc)}"
            raise read_error(message, exc, self.path) from exc

    def close(self) -> None:
        """Release the dataset; may be called again."""
        self._ds.close()
