"""Cloud-Optimized GeoTIFF label maps, written block by block and published atomically.

Blocks go to a tiled GeoTIFF in a hidden staging folder next to the output; on
:meth:`CogLabelSink.commit` GDAL's COG driver copies it (internal overviews, nearest or mode
resampling) to another staging file, which is then renamed over ``labels.tif``. A crash
leaves only the staging folder (``.staging-*``), never a ``labels.tif`` that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window as RioWindow

from ..errors import SinkError
from ..geometry import Grid, Window

COG_BLOCK = 512


@dataclass(frozen=True)
class ClassLegend:
    """Class names and ``#rrggbb`` colours, index = label value."""

    names: tuple[str, ...]
    colours: tuple[str, ...]

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table entries."""
        return {
            i: (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16), 255) for i, c in enumerate(self.colours)
        }


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (mode as for any new
    file under the process umask, not mkstemp's private 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _category_aux_xml(names: Sequence[str]) -> str:
    cats = "".join(f"      <Category>{escape(n)}</Category>\n" for n in names)
    return (
        "<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n"
        f"{cats}    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n"
    )


class CogLabelSink:
    """Write one item's label map (and optionally its blended logits).

    Args:
        out_dir: ``OUT/<item>``; created if needed.
        grid: the item's grid; CRS and transform are copied unchanged.
        legend: class names and colours.
        nodata_label: label value for pixels without valid input.
        compression: ``deflate``, ``lzw`` or ``zstd``.
        overview_resampling: ``nearest`` or ``mode``.
        logits_classes: when set, also write ``logits.tif`` with that many float32 bands.
    """

    def __init__(
        self,
        out_dir: Path,
        grid: Grid,
        legend: ClassLegend,
        nodata_label: int,
        *,
        compression: str = "deflate",
        overview_resampling: str = "nearest",
        logits_classes: int | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.grid = grid
        self.legend = legend
        self.nodata_label = nodata_label
        self.compression = compression
        self.overview_resampling = overview_resampling
        self.dtype = "uint8" if nodata_label <= 255 else "uint16"
        out_dir.mkdir(parents=True, exist_ok=True)
        self.staging = out_dir / f".staging-{uuid.uuid4().hex[:12]}"
        self.staging.mkdir()
        block = min(COG_BLOCK, _pow2_floor(max(grid.width, grid.height, 16)))
        common = dict(
            driver="GTiff", width=grid.width, height=grid.height, crs=grid.crs, transform=grid.transform,
            tiled=True, blockxsize=block, blockysize=block, BIGTIFF="IF_SAFER",
        )
        try:
            # The staging file is compressed again by the COG copy: use the cheapest codec
            # that still keeps a huge label map's temporary file small.
            self._labels = rasterio.open(
                self.staging / "labels.gtiff", "w", count=1, dtype=self.dtype, nodata=nodata_label,
                compress="zstd", zstd_level=1, **common,
            )
            # The colour table must be set before any pixel is written (TIFF photometric tag).
            colormap = legend.colormap()
            if nodata_label <= 255:
                colormap[nodata_label] = (0, 0, 0, 0)  # transparent in viewers
            self._labels.write_colormap(1, colormap)
            self._labels.update_tags(GEOSEG_CLASSES=",".join(legend.names))
            self._labels.update_tags(1, **{f"class_{i}": n for i, n in enumerate(legend.names)})
            self._labels.set_band_description(1, "class")
            self._logits = None
            if logits_classes:
                self._logits = rasterio.open(
                    self.staging / "logits.tif", "w", count=logits_classes, dtype="float32",
                    nodata=float("nan"), compress=compression, predictor=3, **common,
                )
        except RasterioError as exc:
            self.abort()
            raise SinkError(f"{out_dir}: cannot create output: {exc}") from exc

    def write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None = None) -> None:
        """Write one finished block."""
        (r0, c0), (h, w) = window.start, window.size
        rw = RioWindow(c0, r0, w, h)
        self._labels.write(labels, 1, window=rw)
        if self._logits is not None and logits is not None:
            self._logits.write(logits, window=rw)

    def commit(self) -> Path:
        """Finish the COG and publish it as ``labels.tif``; returns its path."""
        names = self.legend.names
        self._labels.close()
        final = self.out_dir / "labels.tif"
        try:
            cog = self.staging / "labels.tif"
            rio_copy(
                self.staging / "labels.gtiff", cog, driver="COG", COMPRESS=self.compression.upper(),
                BLOCKSIZE=str(COG_BLOCK), OVERVIEW_RESAMPLING=self.overview_resampling.upper(),
                BIGTIFF="IF_SAFER",
            )
            (self.staging / "labels.tif.aux.xml").write_text(_category_aux_xml(names), encoding="utf-8")
            if self._logits is not None:
                self._logits.close()
                os.replace(self.staging / "logits.tif", self.out_dir / "logits.tif")
            os.replace(self.staging / "labels.tif.aux.xml", self.out_dir / "labels.tif.aux.xml")
            os.replace(cog, final)
        except (RasterioError, OSError) as exc:
            self.abort()
            raise SinkError(f"{final}: cannot write the COG: {exc}") from exc
        shutil.rmtree(self.staging, ignore_errors=True)
        return final

    def abort(self) -> None:
        """Drop everything written so far."""
        for ds in (getattr(self, "_labels", None), getattr(self, "_logits", None)):
            if ds is not None and not ds.closed:
                ds.close()
        shutil.rmtree(self.staging, ignore_errors=True)


def _pow2_floor(n: int) -> int:
    p = 16
    while p * 2 <= n:
        p *= 2
    return p
