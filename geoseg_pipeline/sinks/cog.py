"""Cloud-Optimized GeoTIFF label maps, written block by block and published atomically.

Blocks go to a tiled GeoTIFF in a hidden staging folder next to the output; on
:meth:`CogLabelSink.commit` GDAL's COG driver copies it (internal overviews, nearest or mode
resampling) to another staging file, which is then renamed over ``labels.tif``. A crash
leaves only the staging folder (``.staging-*``), never a ``labels.tif`` that looks complete.

Nearest overviews are picked from each block as it is written (:class:`_Overview`) and handed
to the COG driver through a VRT: GDAL would otherwise read the whole staged map again to make
them, which costs as much as compressing the map itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window as RioWindow

from ..errors import SinkError
from ..geometry import Grid, Window
from .base import SinkTarget, StagedSink, disk_note
from .legend import ClassLegend

COG_BLOCK = 512


def overview_factors(height: int, width: int, block: int = COG_BLOCK) -> tuple[int, ...]:
    """The overview factors GDAL's COG driver makes for a ``height`` x ``width`` map: halving
    while the larger side, divided by the factor (integer division), exceeds one block."""
    factors: list[int] = []
    f = 1
    while max(height // f, width // f) > block:
        f *= 2
        factors.append(f)
    return tuple(factors)


def write_band(ds: Any, array: np.ndarray, window: RioWindow) -> None:
    """Write a 2D block to a one-band dataset. Given as ``(1, h, w)`` because rasterio copies a
    2D array into a new 3D one first (``np.stack``), which took as long as GDAL's write."""
    ds.write(array[np.newaxis], indexes=[1], window=window)


def overview_pixels(size: int, factors: Sequence[int]) -> list[np.ndarray]:
    """For each overview level of a map axis of ``size`` pixels, the map pixel each of its
    pixels takes, as GDAL's COG driver picks them with nearest resampling: level ``f`` has
    ``size // f`` pixels (at least one), each level made from the one before, its pixel ``i``
    being the previous level's pixel ``round(i * previous / this)``. Where the factor divides
    the size that is the top-left pixel of each ``f``-pixel cell."""
    levels = []
    picked = np.arange(size)
    for f in factors:
        n = max(1, size // f)
        at = np.minimum(np.floor(np.arange(n) * (picked.size / n) + 0.5).astype(np.int64), picked.size - 1)
        picked = picked[at]
        levels.append(picked)
    return levels


class _Overview:
    """One nearest overview level, filled block by block: its pixel ``(i, j)`` is the map's pixel
    ``(rows[i], cols[j])`` (:func:`overview_pixels`)."""

    def __init__(self, path: Path, rows: np.ndarray, cols: np.ndarray, profile: dict[str, Any]) -> None:
        self.path = path
        self.rows, self.cols = rows, cols
        self.height, self.width = rows.size, cols.size
        self._row_step, self._col_step = _step(rows), _step(cols)
        block = min(COG_BLOCK, _pow2_floor(max(self.width, self.height, 16)))
        self.ds = rasterio.open(path, "w", **{**profile, "width": self.width, "height": self.height,
                                              "blockxsize": block, "blockysize": block})

    def write(self, r0: int, c0: int, labels: np.ndarray) -> None:
        """Write the overview pixels that ``labels`` (a block at ``(r0, c0)``) holds."""
        h, w = labels.shape
        i0, i1 = (int(v) for v in np.searchsorted(self.rows, (r0, r0 + h)))
        j0, j1 = (int(v) for v in np.searchsorted(self.cols, (c0, c0 + w)))
        if i0 == i1 or j0 == j1:
            return
        rows: slice | np.ndarray = (slice(int(self.rows[i0]) - r0, None, self._row_step) if self._row_step
                                    else self.rows[i0:i1] - r0)
        cols: slice | np.ndarray = (slice(int(self.cols[j0]) - c0, None, self._col_step) if self._col_step
                                    else self.cols[j0:j1] - c0)
        picked = labels[rows][:, cols][: i1 - i0, : j1 - j0]
        write_band(self.ds, np.ascontiguousarray(picked), RioWindow(j0, i0, j1 - j0, i1 - i0))

    def close(self) -> None:
        if not self.ds.closed:
            self.ds.close()


def _with_overviews(vrt: str, paths: Sequence[Path]) -> str:
    """A one-band VRT's XML with ``paths`` as its band's overviews, finest first."""
    entries = "".join(f"<Overview><SourceFilename relativeToVRT=\"0\">{escape(str(p))}</SourceFilename>"
                      "<SourceBand>1</SourceBand></Overview>" for p in paths)
    head, sep, tail = vrt.rpartition("</VRTRasterBand>")
    if not sep:
        raise SinkError(f"GDAL's VRT of the staged map has no band: {vrt[:200]}")
    return head + entries + sep + tail


def _category_aux_xml(names: Sequence[str]) -> str:
    cats = "".join(f"      <Category>{escape(n)}</Category>\n" for n in names)
    return (
        "<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n"
        f"{cats}    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n"
    )


class CogLabelSink(StagedSink):
    """Write one item's label map (its logits, when asked, go to a :class:`LogitsSink`).

    Args:
        out_dir: ``OUT/<item>``; created if needed.
        grid: the item's grid; CRS and transform are copied unchanged.
        legend: class names and colours.
        nodata_label: label value for pixels without valid input.
        compression: ``deflate``, ``lzw`` or ``zstd``.
        overview_resampling: ``nearest`` or ``mode``.
    """

    name = "cog"

    def __init__(
        self,
        out_dir: Path,
        grid: Grid,
        legend: ClassLegend,
        nodata_label: int,
        *,
        compression: str = "deflate",
        overview_resampling: str = "nearest",
    ) -> None:
        super().__init__(out_dir)
        self.grid = grid
        self.legend = legend
        self.nodata_label = nodata_label
        self.compression = compression
        self.overview_resampling = overview_resampling
        self.dtype = "uint8" if nodata_label <= 255 else "uint16"
        self._labels: Any = None
        self._overviews: list[_Overview] = []
        block = min(COG_BLOCK, _pow2_floor(max(grid.width, grid.height, 16)))
        # The staging files are compressed again by the COG copy: use the cheapest codec
        # that still keeps a huge label map's temporary files small.
        profile: dict[str, Any] = dict(
            driver="GTiff", width=grid.width, height=grid.height, crs=grid.crs, transform=grid.transform,
            tiled=True, blockxsize=block, blockysize=block, BIGTIFF="IF_SAFER", count=1, dtype=self.dtype,
            nodata=nodata_label, compress="zstd", zstd_level=1,
        )
        try:
            self._labels = rasterio.open(self.staging / "labels.gtiff", "w", **profile)
            if overview_resampling == "nearest":
                factors = overview_factors(grid.height, grid.width)
                picks = zip(overview_pixels(grid.height, factors), overview_pixels(grid.width, factors), strict=True)
                for f, (rows, cols) in zip(factors, picks, strict=True):
                    self._overviews.append(_Overview(self.staging / f"labels.ovr{f}.gtiff", rows, cols, profile))
            # The colour table must be set before any pixel is written (TIFF photometric tag).
            colormap = legend.colormap()
            if nodata_label <= 255:
                colormap[nodata_label] = (0, 0, 0, 0)  # transparent in viewers
            self._labels.write_colormap(1, colormap)
            self._labels.update_tags(GEOSEG_CLASSES=",".join(legend.names))
            self._labels.update_tags(1, **{f"class_{i}": n for i, n in enumerate(legend.names)})
            self._labels.set_band_description(1, "class")
        except (RasterioError, OSError) as exc:
            self.abort()
            raise SinkError(f"{out_dir}: cannot create output: {exc}") from exc

    @classmethod
    def for_item(cls, out_dir: Path, target: SinkTarget) -> CogLabelSink:
        """The registry's way in (:data:`geoseg_pipeline.formats.OUTPUTS`)."""
        assert isinstance(target.grid, Grid)
        nodata = target.nodata_label if target.nodata_label is not None else 255
        return cls(out_dir, target.grid, target.legend, nodata, compression=target.output.compression,
                   overview_resampling=target.output.overview_resampling)

    def _write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None) -> None:
        _check_window(self.out_dir, self.grid, window)
        (r0, c0), (h, w) = window.start, window.size
        if labels.shape != (h, w):
            raise SinkError(f"{self.out_dir}: block {window} got labels of shape {labels.shape}")
        rw = RioWindow(c0, r0, w, h)
        try:
            write_band(self._labels, labels, rw)
            for overview in self._overviews:
                overview.write(r0, c0, labels)
        except RasterioError as exc:
            raise SinkError(f"{self.out_dir}: cannot write block {window}: {exc}{disk_note(self.out_dir)}") from exc

    def _prepare(self) -> list[tuple[Path, Path]]:
        """The COG copy (internal overviews) and the category sidecar."""
        self._labels.close()
        source = self.staging / "labels.gtiff"
        if self._overviews:
            for overview in self._overviews:
                overview.close()
            rio_copy(source, self.staging / "labels.vrt", driver="VRT")
            # surrogateescape: a folder name in another encoding than UTF-8 goes through unchanged
            vrt = (self.staging / "labels.vrt").read_text(encoding="utf-8", errors="surrogateescape")
            (self.staging / "labels.vrt").write_text(
                _with_overviews(vrt, [o.path for o in self._overviews]), encoding="utf-8", errors="surrogateescape")
            source = self.staging / "labels.vrt"
        cog = self.staging / "labels.tif"
        rio_copy(
            source, cog, driver="COG", COMPRESS=self.compression.upper(),
            BLOCKSIZE=str(COG_BLOCK), OVERVIEW_RESAMPLING=self.overview_resampling.upper(),
            BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",  # tiles compressed in parallel (same bytes)
        )
        for staged in [self.staging / "labels.gtiff", self.staging / "labels.vrt", *(o.path for o in self._overviews)]:
            staged.unlink(missing_ok=True)
        (self.staging / "labels.tif.aux.xml").write_text(_category_aux_xml(self.legend.names), encoding="utf-8")
        return [(self.staging / "labels.tif.aux.xml", self.out_dir / "labels.tif.aux.xml"),
                (cog, self.out_dir / "labels.tif")]

    def _close(self) -> None:
        handles = [self._labels, *(o.ds for o in self._overviews)]
        for handle in handles:  # each one, even after another failed to close
            try:
                if handle is not None and not handle.closed:
                    handle.close()
            except RasterioError:
                pass  # a staging file: abort removes it, commit has already closed it


class LogitsSink(StagedSink):
    """Write one item's blended logits as ``logits.tif``: float32, one band per class, NaN where
    no window reached (a tiled GeoTIFF on the item's grid).

    Args:
        out_dir: ``OUT/<item>``; created if needed.
        grid: the item's grid; CRS and transform are copied unchanged.
        classes: bands to write.
        compression: ``deflate``, ``lzw`` or ``zstd`` (floating-point predictor).
    """

    name = "logits"
    needs_logits = True

    def __init__(self, out_dir: Path, grid: Grid, classes: int, *, compression: str = "deflate") -> None:
        super().__init__(out_dir)
        self.grid = grid
        self.classes = classes
        self._ds: Any = None
        block = min(COG_BLOCK, _pow2_floor(max(grid.width, grid.height, 16)))
        try:
            self._ds = rasterio.open(
                self.staging / "logits.tif", "w", driver="GTiff", width=grid.width, height=grid.height, count=classes,
                dtype="float32", nodata=float("nan"), crs=grid.crs, transform=grid.transform, tiled=True,
                blockxsize=block, blockysize=block, compress=compression, predictor=3, BIGTIFF="IF_SAFER",
            )
        except RasterioError as exc:
            self.abort()
            raise SinkError(f"{out_dir}: cannot create output: {exc}") from exc

    @classmethod
    def for_item(cls, out_dir: Path, target: SinkTarget) -> LogitsSink:
        """The registry's way in (:data:`geoseg_pipeline.formats.OUTPUTS`)."""
        assert isinstance(target.grid, Grid)
        return cls(out_dir, target.grid, target.num_classes, compression=target.output.compression)

    def _write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None) -> None:
        _check_window(self.out_dir, self.grid, window)
        if labels.shape != window.size:
            raise SinkError(f"{self.out_dir}: block {window} got labels of shape {labels.shape}")
        if logits is None or logits.shape != (self.classes, *window.size):
            got = None if logits is None else logits.shape
            raise SinkError(f"{self.out_dir}: block {window} needs logits of shape {(self.classes, *window.size)}, "
                            f"got {got}")
        (r0, c0), (h, w) = window.start, window.size
        try:
            self._ds.write(logits, window=RioWindow(c0, r0, w, h))
        except RasterioError as exc:
            raise SinkError(f"{self.out_dir}: cannot write block {window}: {exc}{disk_note(self.out_dir)}") from exc

    def _prepare(self) -> list[tuple[Path, Path]]:
        self._ds.close()
        return [(self.staging / "logits.tif", self.out_dir / "logits.tif")]

    def _close(self) -> None:
        if self._ds is not None and not self._ds.closed:
            self._ds.close()


def _check_window(out_dir: Path, grid: Grid, window: Window) -> None:
    if window.ndim != 2:  # before unpacking: a 3D block is a SinkError, not a ValueError
        raise SinkError(f"{out_dir}: block {window} is not 2D; the grid is {grid.shape}")
    (r0, c0), (h, w) = window.start, window.size
    if r0 < 0 or c0 < 0 or r0 + h > grid.height or c0 + w > grid.width:
        raise SinkError(f"{out_dir}: block {window} does not lie inside the grid {grid.shape}")


def _step(picked: np.ndarray) -> int:
    """The step of ``picked`` where it is ``0, s, 2s, ...`` (a slice picks them), else 0."""
    if picked.size < 2:
        return 1 if picked.size == 1 and picked[0] == 0 else 0
    step = int(picked[1] - picked[0])
    return step if step > 0 and np.array_equal(picked, np.arange(picked.size) * step) else 0


def _pow2_floor(n: int) -> int:
    p = 16
    while p * 2 <= n:
        p *= 2
    return p
