"""A STAC item read as one multiband raster: its listed assets, each a separate file on its own
grid, brought window by window onto one output grid; its quality band masking pixels.

An asset on the output grid is read as it is. Any other (a 20 m band under a 10 m grid, another
CRS) is read through a GDAL warped VRT (:class:`rasterio.vrt.WarpedVRT`) onto the output grid
with the workflow's resampling, so that every window holds what warping the whole band with GDAL
gives, without reading the whole band. Two faster reads give the same values where they apply: a
nodata-free warp away from nodata pixels (:class:`FastWarp`), and GDAL's resampling on read for an
asset on a coarser grid aligned with the output grid (:class:`AlignedRead`). The quality band is
warped with ``nearest``; pixels it marks invalid become nodata in every band, like the items' own
nodata.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RioWindow

from ..errors import InputDataError, SourceError, chained_reason, ignoring_warnings
from ..geometry import Grid, Window
from ..storage.transient import open_error, read_error
from .base import SourceOptions, check_window, checked_indices
from .stac_items import AssetBand, StacItemRef
from .warp_tiles import SharedWarp


def _same_grid(ds: Any, grid: Grid) -> bool:
    """Whether a dataset lies exactly on ``grid`` (then it is read without warping)."""
    return (ds.height, ds.width) == grid.shape and ds.crs is not None and grid.crs is not None and \
        ds.crs == rasterio.crs.CRS.from_wkt(grid.crs) and ds.transform.almost_equals(grid.transform, 1e-9)


def output_grid(ref: StacItemRef, datasets: dict[str, Any]) -> Grid:
    """The item's output grid: the finest listed asset's (smallest pixel area; the first listed
    of equals), the named asset's, or the finest asset's extent at the given pixel size.

    Raises:
        InputDataError: an asset has no CRS, or a pixel size is asked of a rotated grid.
    """
    for band in ref.bands:
        if datasets[band.href].crs is None:
            raise InputDataError(f"{ref.href}: asset {band.key!r} ({band.href}) has no CRS")
    if isinstance(ref.grid, str) and ref.grid != "finest":
        chosen = next(b for b in ref.bands if b.key == ref.grid)
    else:
        chosen = min(ref.bands, key=lambda b: _pixel_area(datasets[b.href], datasets[ref.bands[0].href].crs))
    ds = datasets[chosen.href]
    if isinstance(ref.grid, str):
        return Grid((ds.height, ds.width), ds.transform, ds.crs.to_wkt())
    size = float(ref.grid)
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise InputDataError(f"{ref.href}: asset {chosen.key!r} has a rotated grid: give inputs.stac.grid as "
                             "an asset key, not a pixel size")
    left, bottom, right, top = ds.bounds
    width, height = max(1, round((right - left) / size)), max(1, round((top - bottom) / size))
    return Grid((height, width), Affine(size, 0.0, left, 0.0, -size, top), ds.crs.to_wkt())


def _pixel_area(ds: Any, crs: Any) -> float:
    """A dataset's mean pixel area in the units of ``crs`` (assets in other CRSs compare fairly)."""
    if ds.crs == crs:
        return float(abs(ds.transform.determinant))
    left, bottom, right, top = transform_bounds(ds.crs, crs, *ds.bounds, densify_pts=21)
    return float(abs((right - left) * (top - bottom)) / (ds.width * ds.height))


def check_covers(ref: StacItemRef, band: AssetBand, ds: Any, grid: Grid, what: str) -> None:
    """Refuse an asset whose extent does not cover the output grid, with the slack of half the
    asset's pixel or one output pixel, whichever is more (bands of one item at 10 m and 20 m may
    end half a 20 m pixel apart).

    Raises:
        InputDataError: naming the item, the asset and both extents.
    """
    h, w = grid.shape
    t = grid.transform
    corners_x = [t.c, t.c + t.a * w + t.b * h, t.c + t.a * w, t.c + t.b * h]
    corners_y = [t.f, t.f + t.d * w + t.e * h, t.f + t.d * w, t.f + t.e * h]
    bounds = (min(corners_x), min(corners_y), max(corners_x), max(corners_y))
    left, bottom, right, top = transform_bounds(rasterio.crs.CRS.from_wkt(grid.crs), ds.crs, *bounds, densify_pts=21)
    a = ds.transform
    out_x, out_y = (right - left) / w, (top - bottom) / h  # an output pixel, in the asset's CRS
    slack_x = max(abs(a.a) / 2 + abs(a.b) / 2, out_x)
    slack_y = max(abs(a.e) / 2 + abs(a.d) / 2, out_y)
    have = ds.bounds
    if left < have.left - slack_x or right > have.right + slack_x or bottom < have.bottom - slack_y \
            or top > have.top + slack_y:
        raise InputDataError(
            f"{ref.href}: {what} asset {band.key!r} ({band.href}) does not cover the output grid: it spans "
            f"[{have.left:g}, {have.bottom:g}, {have.right:g}, {have.top:g}], the grid needs "
            f"[{left:g}, {bottom:g}, {right:g}, {top:g}] (in the asset's CRS)")


#: Resamplings whose nodata-free warp GDAL computes exactly as its nodata-aware one wherever no
#: nodata pixel is near (checked by ``tests/sources/test_stac_source.py``). Not bilinear: its two
#: kernels compute a pixel's source position with different rounding, and where the weighted sum
#: is a tie (x.5 before rounding to an integer type) they round it apart: 11 pixels of a real
#: Landsat band's 365,000 at a 300.04 m grid (``tests/test_real_data.py``); not cubic either.
_FAST_RESAMPLINGS = frozenset({"nearest", "average"})
#: Source pixels around a window's footprint that may weigh in its pixels (average: the
#: footprint itself); with slack.
_SUPPORT = 3


class FastWarp:
    """A warped asset read through GDAL's nodata-free warp where the window's source holds no
    nodata pixel, and through the nodata-aware one elsewhere. GDAL's warper takes a general,
    per-pixel-masked path as soon as the source has a nodata value (several times slower); away
    from nodata both give the same values for the resamplings of :data:`_FAST_RESAMPLINGS`, so
    the result is still what warping the whole band with its nodata gives. Same CRS, north-up
    grids only (see :meth:`usable`).

    Args:
        ds: the asset's dataset.
        exact, fast: warped views of it onto the output grid, with and without its nodata.
        nodata: the asset's nodata value (NaN allowed).
    """

    def __init__(self, ds: Any, exact: Any, fast: Any, nodata: float) -> None:
        self.ds, self.exact, self.fast, self.nodata = ds, exact, fast, nodata
        self._to_source = ~ds.transform * exact.transform

    @staticmethod
    def usable(ds: Any, grid: Grid, resampling: str) -> bool:
        """Whether the fast path applies: the same CRS and north-up grids on both sides, an
        integer type (float kernels are not checked), a resampling of :data:`_FAST_RESAMPLINGS`."""
        t, s = grid.transform, ds.transform
        return resampling in _FAST_RESAMPLINGS and ds.crs == rasterio.crs.CRS.from_wkt(grid.crs) \
            and t.b == t.d == s.b == s.d == 0 and np.issubdtype(np.dtype(ds.dtypes[0]), np.integer)

    def read(self, band: int, window: RioWindow) -> np.ndarray:
        """``window`` of the warped ``band``."""
        m = self._to_source
        cols = sorted((m.a * window.col_off + m.c, m.a * (window.col_off + window.width) + m.c))
        rows = sorted((m.e * window.row_off + m.f, m.e * (window.row_off + window.height) + m.f))
        c0, c1 = max(math.floor(cols[0]) - _SUPPORT, 0), min(math.ceil(cols[1]) + _SUPPORT, self.ds.width)
        r0, r1 = max(math.floor(rows[0]) - _SUPPORT, 0), min(math.ceil(rows[1]) + _SUPPORT, self.ds.height)
        clean = c1 > c0 and r1 > r0
        if clean:
            source = self.ds.read(band, window=RioWindow(c0, r0, c1 - c0, r1 - r0))
            clean = not bool(np.isnan(source).any() if math.isnan(self.nodata) else (source == self.nodata).any())
        return np.asarray((self.fast if clean else self.exact).read(band, window=window))


#: Resamplings for which GDAL's resampled read (``RasterIO`` with an output size) of an aligned
#: coarser asset gives exactly what its warper gives, by the integer factors it is exact for
#: (``None``: every factor): nearest and average pick or average whole source pixels. Not
#: bilinear: its ties round apart from the warper's wherever the grid's pixel size makes the
#: warper's source positions inexact, which no rule on the grid predicts (a 300 m grid: 2.8 % of
#: the pixels one apart; 10, 20 and 30 m grids: none). Checked pixel for pixel against warping the
#: whole band by ``tests/sources/test_stac_aligned.py``.
_ALIGNED_FACTORS: dict[str, frozenset[int] | None] = {"nearest": None, "average": None}


class AlignedRead:
    """An asset whose grid is the output grid coarsened by an integer factor ``k`` (same CRS,
    north-up, corners on output pixel corners), as Sentinel-2's 20 m bands are under its 10 m
    ones: a window is read from the asset's matching fractional window with GDAL's resampling on
    read, several times cheaper than its warper and equal to it (see
    :data:`_ALIGNED_FACTORS`). Windows whose source would run past the asset's edge (an asset
    ending half a coarse pixel short of the grid) are read through ``fallback``, the warped view.

    Args:
        ds: the asset's dataset.
        factor, col_shift, row_shift: ``k``, and the output grid's origin in output pixels from
            the asset's.
        resampling: the workflow's resampling.
        fallback: the warped view onto the output grid.
    """

    def __init__(self, ds: Any, factor: int, col_shift: int, row_shift: int, resampling: str, fallback: Any) -> None:
        self.ds, self.factor, self.fallback = ds, factor, fallback
        self.col_shift, self.row_shift = col_shift, row_shift
        self.resampling = Resampling[resampling]

    @classmethod
    def make(cls, ds: Any, grid: Grid, resampling: str, fallback: Any) -> AlignedRead | None:
        """The aligned reader of ``ds`` onto ``grid``, or ``None`` where it does not apply (another
        CRS, a rotated grid, a factor that is not an integer or not exact for ``resampling``, an
        origin off the output pixels)."""
        t, s = grid.transform, ds.transform
        if resampling not in _ALIGNED_FACTORS or ds.crs != rasterio.crs.CRS.from_wkt(grid.crs) \
                or t.b != 0 or t.d != 0 or s.b != 0 or s.d != 0:
            return None
        k = round(s.a / t.a)
        exact = _ALIGNED_FACTORS[resampling]
        if k < 1 or not math.isclose(s.a, k * t.a, rel_tol=1e-9) or not math.isclose(s.e, k * t.e, rel_tol=1e-9) \
                or (exact is not None and k not in exact):
            return None
        dx, dy = (t.c - s.c) / t.a, (t.f - s.f) / t.e
        if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
            return None
        return cls(ds, k, round(dx), round(dy), resampling, fallback)

    def read(self, band: int, window: RioWindow) -> np.ndarray:
        """``window`` of the output grid, from ``band`` of the asset."""
        k = self.factor
        c0, r0 = (window.col_off + self.col_shift) / k, (window.row_off + self.row_shift) / k
        w, h = window.width / k, window.height / k
        if c0 < 0 or r0 < 0 or c0 + w > self.ds.width or r0 + h > self.ds.height:
            return np.asarray(self.fallback.read(band, window=window))
        return np.asarray(self.ds.read(band, window=RioWindow(c0, r0, w, h),
                                       out_shape=(int(window.height), int(window.width)), resampling=self.resampling))


class StacRasterSource:
    """One STAC item's listed assets as bands of one raster on the output grid
    (:func:`output_grid`); see the module's docstring."""

    def __init__(self, ref: StacItemRef) -> None:
        self.path = ref.href
        self.ref = ref
        self._datasets: dict[str, Any] = {}
        self._vrts: list[Any] = []
        self._shared: list[SharedWarp] = []
        try:
            for band in ref.assets:
                if band.href not in self._datasets:
                    self._datasets[band.href] = self._open(band)
                ds = self._datasets[band.href]
                if band.band > ds.count:
                    raise SourceError(f"{ref.href}: asset {band.key!r} ({band.href}) has {ds.count} band(s), "
                                      f"band {band.band} is listed")
            self._grid = output_grid(ref, self._datasets)
            self._readers = [self._reader(b, ref.resampling, "listed") for b in ref.bands]
            self._mask = None if ref.mask is None else self._reader(ref.mask.band, "nearest", "mask")
        except BaseException:
            self.close()
            raise
        self._dtype, self._nodata = self._output_type()

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> StacRasterSource:
        """The registry's way in (:mod:`geoseg_pipeline.formats`): the item comes resolved with
        the job (``options.stac``).

        Raises:
            SourceError: no resolved item came with the options.
        """
        if options.stac is None:
            raise SourceError(f"{path}: a STAC item is read through its workflow's inputs.stac")
        return cls(options.stac)

    def _open(self, band: AssetBand) -> Any:
        try:
            # a file without georeferencing: refused with the reason below
            with ignoring_warnings((NotGeoreferencedWarning, "")):
                return rasterio.open(band.href)
        except RasterioError as exc:
            raise open_error(f"{self.ref.href}: asset {band.key!r}: cannot open {band.href}: {exc}", exc,
                             band.href) from exc

    def _reader(self, band: AssetBand, resampling: str, what: str) -> Any:
        """The dataset itself when it lies on the output grid, else a warped VRT onto it."""
        ds = self._datasets[band.href]
        if _same_grid(ds, self._grid):
            return ds
        check_covers(self.ref, band, ds, self._grid, what)
        def view(nodata: float | None) -> Any:
            vrt = WarpedVRT(ds, crs=rasterio.crs.CRS.from_wkt(self._grid.crs), transform=self._grid.transform,
                            width=self._grid.width, height=self._grid.height, resampling=Resampling[resampling],
                            src_nodata=nodata, nodata=nodata)
            self._vrts.append(vrt)
            return vrt

        def shared(vrt: Any, nodata: float | None) -> SharedWarp:
            """``vrt`` read through tiles shared with the process's other reading threads."""
            key = (band.href, band.band, tuple(self._grid.transform), self._grid.shape, self._grid.crs, resampling,
                   repr(nodata))
            warp = SharedWarp(vrt, key)
            self._shared.append(warp)
            return warp

        nodata = band.nodata if band.nodata is not None else ds.nodata
        if nodata is None or resampling == "nearest":  # nearest copies a nodata pixel as any other
            plain = view(nodata)
            return AlignedRead.make(ds, self._grid, resampling, plain) or shared(plain, nodata)
        if FastWarp.usable(ds, self._grid, resampling):
            fast = view(None)
            return FastWarp(ds, view(nodata), AlignedRead.make(ds, self._grid, resampling, fast) or fast, nodata)
        return shared(view(nodata), nodata)

    def _band_nodata(self, band: AssetBand) -> float | None:
        if band.nodata is not None:
            return band.nodata
        value = self._datasets[band.href].nodatavals[band.band - 1]
        return None if value is None else float(value)

    def _output_type(self) -> tuple[np.dtype, float | None]:
        """The bands' common type and nodata: the stored type and the first band's nodata;
        float32 and NaN where values are scaled, or a mask needs a nodata the bands lack."""
        stored = np.result_type(*(np.dtype(self._datasets[b.href].dtypes[b.band - 1]) for b in self.ref.bands))
        scaled = self.ref.scale_offset and any(b.scale != 1.0 or b.offset != 0.0 for b in self.ref.bands)
        nodata = self._band_nodata(self.ref.bands[0])
        if scaled or (self.ref.mask is not None and nodata is None):
            return np.dtype(np.float64 if stored == np.float64 else np.float32), math.nan
        if nodata is not None and np.issubdtype(stored, np.integer):
            info = np.iinfo(stored)
            if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
                return np.dtype(np.float32), math.nan
        return np.dtype(stored), nodata

    @property
    def grid(self) -> Grid:
        """The output grid."""
        return self._grid

    @property
    def band_count(self) -> int:
        """The listed assets' bands (the mask is not one)."""
        return len(self.ref.bands)

    @property
    def dtype(self) -> np.dtype:
        """The bands' common pixel type (see :meth:`_output_type`)."""
        return self._dtype

    @property
    def nodata(self) -> float | None:
        """The value marking nodata (and masked) pixels in every band."""
        return self._nodata

    def _read_one(self, reader: Any, band: AssetBand, window: Window) -> np.ndarray:
        (r0, c0), (h, w) = window.start, window.size
        try:
            return np.asarray(reader.read(band.band, window=RioWindow(c0, r0, w, h)))
        except RasterioError as exc:
            message = (f"{self.ref.href}: asset {band.key!r} ({band.href}): cannot read rows {r0}..{r0 + h}, "
                       f"cols {c0}..{c0 + w}: {chained_reason(exc)}")
            raise read_error(message, exc, band.href) from exc

    def read(self, window: Window, bands: Sequence[int]) -> np.ndarray:
        """``bands`` (1-based, in ``inputs.stac.assets`` order) in ``window`` of the output grid,
        masked pixels set to :attr:`nodata`."""
        check_window(self.path, window, self._grid.shape)
        indices = checked_indices(self.path, bands, self.band_count, first=1, what="bands")
        out = np.empty((len(indices), *window.size), dtype=self._dtype)
        fill = self._nodata
        for i, k in enumerate(indices):
            band = self.ref.bands[k]
            raw = self._read_one(self._readers[k], band, window)
            own = self._band_nodata(band)
            scaled = self.ref.scale_offset and (band.scale != 1.0 or band.offset != 0.0)
            if scaled:
                out[i] = raw * band.scale + band.offset
            else:
                out[i] = raw
            # the band's own nodata is looked for only where it is not the output's already
            # (NaN never is: NaN != NaN) or scaling would change it
            if own is not None and fill is not None and (own != fill or scaled):
                np.copyto(out[i], self._dtype.type(fill), where=np.isnan(raw) if math.isnan(own) else raw == own)
        if self._mask is not None and fill is not None:
            assert self.ref.mask is not None
            invalid = self.invalid(self._read_one(self._mask, self.ref.mask.band, window))
            np.copyto(out, self._dtype.type(fill), where=invalid[None])  # every band at once, no boolean gather
        return out

    def invalid(self, quality: np.ndarray) -> np.ndarray:
        """The pixels the quality band marks invalid: one of its ``invalid`` values, or any of its
        ``bits`` set."""
        mask = self.ref.mask
        assert mask is not None
        if mask.invalid is not None:
            return np.isin(quality, np.asarray(mask.invalid))
        flags = 0
        for bit in mask.bits or ():
            flags |= 1 << bit
        found: np.ndarray = (quality.astype(np.uint64) & np.uint64(flags)) != 0
        return found

    def close(self) -> None:
        """Release the warped views and the assets' datasets; may be called again."""
        for warp in self._shared:
            warp.close()
        self._shared = []
        for vrt in self._vrts:
            vrt.close()
        self._vrts = []
        for ds in self._datasets.values():
            ds.close()
        self._datasets = {}


__all__ = ["StacRasterSource", "check_covers", "output_grid"]
