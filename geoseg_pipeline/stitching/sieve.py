"""A minimum mapping unit: regions smaller than the unit are removed from a finished label map with
GDAL's sieve (``GDALSieveFilter``: each one takes the class of its largest neighbouring region; one
with no valid neighbour stays), as ``gdal_sieve.py`` does.

The sieve needs the whole map's regions, so an item with a unit keeps its finished blocks in a
scratch GeoTIFF (and their validity in a second one) until every block has arrived; GDAL then reads
both line by line and writes the sieved map, which is handed out block by block to the item's
sinks and statistics. Memory: GDAL's region tables (proportional to the number of regions) and the
sieved map itself, one byte per pixel (two above 255 classes): rasterio's sieve returns it as an
array.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio import features
from rasterio.windows import Window as RioWindow

from ..geometry import Window
from .consumer import LabelBlock


class MappingUnitSieve:
    """Holds one item's finished label blocks, then sieves them (see the module doc).

    Args:
        folder: a scratch folder of its own (created; removed by :meth:`close`).
        shape: the map's ``(rows, columns)``.
        dtype: the labels' type (``uint8`` or ``uint16``).
        nodata: the label of pixels without prediction (never a region, never changed).
        threshold: regions of fewer pixels are removed.
        connectivity: 4 or 8, for the regions and their neighbours.
    """

    def __init__(self, folder: Path, shape: tuple[int, int], dtype: str, nodata: int, threshold: int,
                 connectivity: int = 4) -> None:
        self.folder, self.shape, self.dtype, self.nodata = folder, shape, dtype, nodata
        self.threshold, self.connectivity = threshold, connectivity
        self.changed = 0
        folder.mkdir(parents=True, exist_ok=True)
        # a north-up unit grid: scratch files need no georeferencing, and GDAL warns without one
        common = dict(driver="GTiff", width=shape[1], height=shape[0], count=1, tiled=True, blockxsize=256,
                      blockysize=256, compress="zstd", zstd_level=1, BIGTIFF="IF_SAFER",
                      transform=Affine(1.0, 0.0, 0.0, 0.0, -1.0, float(shape[0])))
        self._labels = rasterio.open(folder / "labels.tif", "w", dtype=dtype, **common)
        self._valid = rasterio.open(folder / "valid.tif", "w", dtype="uint8", **common)
        self._sieved: np.ndarray | None = None

    def add(self, window: Window, labels: np.ndarray) -> None:
        """Keep one finished block."""
        (r0, c0), (h, w) = window.start, window.size
        rio = RioWindow(c0, r0, w, h)
        self._labels.write(labels, 1, window=rio)
        self._valid.write((labels != self.nodata).astype(np.uint8), 1, window=rio)

    def sieved(self, windows: Iterable[Window]) -> Iterator[LabelBlock]:
        """Every block of ``windows``, sieved (GDAL runs once, on the first call); counts the
        pixels whose class changed in :attr:`changed`."""
        if self._sieved is None:
            self._labels.close()
            self._valid.close()
            with rasterio.open(self.folder / "labels.tif") as src, rasterio.open(self.folder / "valid.tif") as valid:
                self._sieved = features.sieve(rasterio.band(src, 1), self.threshold, mask=rasterio.band(valid, 1),
                                              connectivity=self.connectivity)
        with rasterio.open(self.folder / "labels.tif") as src:
            for window in windows:
                (r0, c0), (h, w) = window.start, window.size
                labels = np.ascontiguousarray(self._sieved[r0:r0 + h, c0:c0 + w])
                self.changed += int((src.read(1, window=RioWindow(c0, r0, w, h)) != labels).sum())
                yield LabelBlock(window, labels, labels != self.nodata)

    def close(self) -> None:
        """Drop the scratch files (also after a failure)."""
        for ds in (self._labels, self._valid):
            if not ds.closed:
                ds.close()
        self._sieved = None
        shutil.rmtree(self.folder, ignore_errors=True)


def unit_in_pixels(value: float, unit: str, pixel_area_m2: float | None, what: str) -> int:
    """A minimum mapping unit in pixels: regions of fewer pixels are smaller than the unit
    (``value`` m² or ha over ``pixel_area_m2``, rounded up; pixels as they are).

    Raises:
        ValueError: an area unit on a map without ground areas (``what`` names it).
    """
    if unit == "px":
        return int(np.ceil(value))
    if pixel_area_m2 is None:
        raise ValueError(f"{what}: min_mapping_unit in {unit} needs ground areas, and the item has none (no CRS, "
                         "or a rotated geographic grid); give it in pixels")
    m2 = value * (10_000.0 if unit == "ha" else 1.0)
    return int(np.ceil(m2 / pixel_area_m2 - 1e-9))


__all__ = ["MappingUnitSieve", "unit_in_pixels"]
