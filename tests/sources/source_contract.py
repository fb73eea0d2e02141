"""The source contract as tests (zarr-python's ``StoreTests`` shape): every reader of the format
registry (:mod:`geoseg_pipeline.formats`) gets one subclass of :class:`RasterSourceContract` or
:class:`VolumeSourceContract` that writes a small item and says what was written; every test is
inherited.

A subclass provides:

* ``format_name`` (the registry name) and ``reader`` (the class the registry must open);
* ``write_item(folder)``: write one small item with odd sizes and several bands (channels)
  holding a known array, and return a :class:`RasterItem` / :class:`VolumeItem` with what a
  reader must give back;
* optionally ``options`` (a :class:`SourceOptions`, e.g. a NIfTI ``channel_axis``).

Items are opened the way the pipeline opens them: ``open_source(lookup(name, kind), path,
options)``, after :func:`~geoseg_pipeline.sources.base.stage_item` for a staged format.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS

from geoseg_pipeline.errors import ReadRequestError
from geoseg_pipeline.formats import Kind, detect, lookup
from geoseg_pipeline.geometry import Window, full_window
from geoseg_pipeline.sources.base import (
    RasterSource,
    SourceOptions,
    VolumeSource,
    open_source,
    stage_item,
)

#: What a read of a window outside the grid may raise: the volume readers' ``ValueError``, or one
#: of the package's own errors.
#: What a read outside the grid or of bands the item lacks raises, for every reader.
OUTSIDE_ERRORS = ReadRequestError


@dataclass(frozen=True)
class RasterItem:
    """A written raster item and what a reader must give back.

    ``data`` is ``(bands, rows, cols)`` of the stored dtype; ``crs`` anything pyproj reads.
    """

    path: Path
    data: np.ndarray
    transform: Affine
    crs: str | None
    nodata: float | None


@dataclass(frozen=True)
class VolumeItem:
    """A written volume item and what a reader must give back.

    ``data`` is float32 ``(channels, i, j, k)`` after any value scaling; ``affine`` the 4x4
    voxel-index -> world (mm) matrix.
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray


def positional(shape: Sequence[int], dtype: Any) -> np.ndarray:
    """A known array whose values encode their own index (band, row, col, ...), so that a read of
    the wrong place or band shows which place it read."""
    weights = [10 ** (2 * (len(shape) - 1 - a)) for a in range(len(shape))]
    grids = np.indices(shape)
    values = sum(g * w for g, w in zip(grids, weights, strict=True))
    out: np.ndarray = np.asarray(values).astype(dtype)
    return out


def edge_windows(shape: Sequence[int]) -> dict[str, Window]:
    """Windows that touch the grid's edges: a one-pixel slab along every face, a one-pixel window
    and a small box in every corner, and the whole grid."""
    ndim = len(shape)
    out: dict[str, Window] = {"whole": full_window(shape)}
    for axis, side in itertools.product(range(ndim), (0, 1)):
        start = [0] * ndim
        size = list(shape)
        start[axis], size[axis] = (0 if side == 0 else shape[axis] - 1), 1
        out[f"face axis {axis} {'low' if side == 0 else 'high'}"] = Window(tuple(start), tuple(size))
    for sides in itertools.product((0, 1), repeat=ndim):
        pixel = tuple(0 if s == 0 else n - 1 for s, n in zip(sides, shape, strict=True))
        out[f"corner pixel {pixel}"] = Window(pixel, (1,) * ndim)
        box = tuple(min(3, n) for n in shape)
        start = tuple(0 if s == 0 else n - b for s, n, b in zip(sides, shape, box, strict=True))
        out[f"corner box {start}"] = Window(start, box)
    return out


def tiling(shape: Sequence[int], step: Sequence[int]) -> list[Window]:
    """The windows of a regular tiling of ``shape`` by ``step``, the last ones clipped."""
    starts = itertools.product(*(range(0, n, s) for n, s in zip(shape, step, strict=True)))
    return [Window(st, tuple(min(s, n - a) for a, s, n in zip(st, step, shape, strict=True))) for st in starts]


def outside_windows(shape: Sequence[int]) -> dict[str, Window]:
    """Windows that do not lie inside the grid: past each far edge, before each near edge, wholly
    outside."""
    ndim = len(shape)
    out: dict[str, Window] = {}
    for axis in range(ndim):
        start, size = [0] * ndim, [2] * ndim
        start[axis] = shape[axis] - 1  # one pixel inside, one past the edge
        out[f"past the far edge of axis {axis}"] = Window(tuple(start), tuple(size))
        start = [0] * ndim
        start[axis] = -1
        out[f"before the near edge of axis {axis}"] = Window(tuple(start), tuple(size))
    out["wholly outside"] = Window(tuple(shape), (1,) * ndim)
    out["larger than the grid"] = Window((0,) * ndim, tuple(n + 1 for n in shape))
    return out


class _SourceContract:
    """What both contracts share: opening through the registry."""

    kind: ClassVar[Kind]
    #: The registry name of the format (``inputs.format``).
    format_name: ClassVar[str]
    #: The reader class the registry must open the item with.
    reader: ClassVar[type]
    #: How to open the item.
    options: ClassVar[SourceOptions] = SourceOptions()
    #: Tilings checked by ``test_tiling_reads_assemble_the_whole_item``.
    tile_steps: ClassVar[tuple[tuple[int, ...], ...]] = ()
    #: ``auto`` finds the format from the item's path (a STAC item's comes from its workflow).
    detected: ClassVar[bool] = True

    @pytest.fixture(scope="class")
    @classmethod
    def item(cls, tmp_path_factory: pytest.TempPathFactory) -> Any:
        """The subclass's item, written once per class."""
        return cls().write_item(tmp_path_factory.mktemp(f"{cls.kind}-{cls.format_name}"))

    @pytest.fixture
    def source(self, item: Any, tmp_path: Path) -> Iterator[Any]:
        src = self.open_item(item, tmp_path / "staging")
        yield src
        src.close()

    def write_item(self, folder: Path) -> Any:
        """Write one small item in ``folder``; the subclass's job."""
        raise NotImplementedError

    def open_item(self, item: Any, staging: Path) -> Any:
        """Open ``item`` as the pipeline does: by the registry record, staged first when the
        format is staged."""
        fmt = lookup(self.format_name, self.kind)
        options = self.options
        if fmt.staged:
            options = replace(options, data_path=stage_item(fmt, str(item.path), staging, options))
        return open_source(fmt, str(item.path), options)

    # --- the registry -----------------------------------------------------------------------------

    def test_the_registry_opens_it_with_its_reader(self, item: Any, source: Any) -> None:
        assert type(source) is self.reader
        assert source.path == str(item.path)  # messages name the user's item, not a staged copy
        if self.detected:
            assert detect(str(item.path), self.kind) == lookup(self.format_name, self.kind)
        assert detect(str(item.path), self.kind, self.format_name) == lookup(self.format_name, self.kind)

    def test_close_twice(self, item: Any, tmp_path: Path) -> None:
        src = self.open_item(item, tmp_path / "again")
        src.close()
        src.close()


class RasterSourceContract(_SourceContract):
    """The :class:`~geoseg_pipeline.sources.base.RasterSource` contract; ``write_item`` returns a
    :class:`RasterItem`."""

    kind = "raster"
    tile_steps = ((16, 16), (5, 24))

    def test_is_a_raster_source(self, source: Any) -> None:
        assert isinstance(source, RasterSource)
        assert not isinstance(source, VolumeSource)

    def test_grid_as_written(self, item: RasterItem, source: RasterSource) -> None:
        grid = source.grid
        assert grid.shape == item.data.shape[1:]
        assert (grid.height, grid.width) == item.data.shape[1:]
        assert grid.transform == item.transform
        if item.crs is None:
            assert grid.crs is None
        else:
            assert grid.crs is not None
            assert CRS.from_user_input(grid.crs) == CRS.from_user_input(item.crs)

    def test_bands_dtype_nodata(self, item: RasterItem, source: RasterSource) -> None:
        assert source.band_count == item.data.shape[0]
        assert source.dtype == item.data.dtype
        if item.nodata is None:
            assert source.nodata is None
        else:
            assert isinstance(source.nodata, float)
            if math.isnan(item.nodata):
                assert math.isnan(source.nodata)
            else:
                assert source.nodata == item.nodata

    def test_windows_at_edges_and_corners(self, item: RasterItem, source: RasterSource) -> None:
        bands = list(range(1, source.band_count + 1))
        for name, window in edge_windows(item.data.shape[1:]).items():
            got = source.read(window, bands)
            assert got.dtype == item.data.dtype, name
            assert got.shape == (len(bands), *window.size), name
            np.testing.assert_array_equal(got, item.data[(slice(None), *window.slices())], err_msg=name)

    def test_tiling_reads_assemble_the_whole_item(self, item: RasterItem, source: RasterSource) -> None:
        bands = list(range(1, source.band_count + 1))
        whole = source.read(full_window(source.grid.shape), bands)
        np.testing.assert_array_equal(whole, item.data)
        for step in self.tile_steps:
            assembled = np.zeros_like(item.data)
            written = np.zeros(item.data.shape[1:], dtype=np.int64)
            for window in tiling(source.grid.shape, step):
                part = source.read(window, bands)
                assert part.shape == (len(bands), *window.size), window
                assembled[(slice(None), *window.slices())] = part
                written[window.slices()] += 1
            assert (written == 1).all(), step
            np.testing.assert_array_equal(assembled, whole, err_msg=str(step))

    def test_band_subsets_in_the_order_asked(self, item: RasterItem, source: RasterSource) -> None:
        n = source.band_count
        assert n >= 3, "the item needs at least 3 bands to check subsets and order"
        window = Window((3, 5), (20, 31))  # crosses 16-pixel tiles and chunks
        for bands in ([1], [n], [2, 3], [n, 1], list(range(n, 0, -1)), [1, n, 2], [2, 2]):
            got = source.read(window, bands)
            expected = item.data[(np.asarray(bands) - 1, *window.slices())]
            np.testing.assert_array_equal(got, expected, err_msg=str(bands))

    @pytest.mark.parametrize("bands", [[0], [-1], ["past"], [1, "past"]], ids=str)
    def test_bands_out_of_range_raise(self, source: RasterSource, bands: list[Any]) -> None:
        n = source.band_count
        wanted = [n + 1 if b == "past" else b for b in bands]
        with pytest.raises(OUTSIDE_ERRORS):
            source.read(Window((0, 0), (2, 2)), wanted)

    def test_windows_outside_the_grid_raise(self, item: RasterItem, source: RasterSource) -> None:
        bands = [1]
        for name, window in outside_windows(item.data.shape[1:]).items():
            with pytest.raises(OUTSIDE_ERRORS):
                source.read(window, bands)
                pytest.fail(f"read of {name} {window} did not raise")


class VolumeSourceContract(_SourceContract):
    """The :class:`~geoseg_pipeline.sources.base.VolumeSource` contract; ``write_item`` returns a
    :class:`VolumeItem`."""

    kind = "volume"
    tile_steps = ((4, 4, 4), (5, 3, 2))

    def test_is_a_volume_source(self, source: Any) -> None:
        assert isinstance(source, VolumeSource)
        assert not isinstance(source, RasterSource)

    def test_grid_as_written(self, item: VolumeItem, source: VolumeSource) -> None:
        grid = source.grid
        assert grid.shape == item.data.shape[1:]
        np.testing.assert_allclose(grid.affine, item.affine, rtol=0, atol=1e-6)
        assert grid.voxel_volume_mm3 == pytest.approx(abs(np.linalg.det(item.affine[:3, :3])), rel=1e-6)
        assert source.ndim_effective == 3

    def test_channels_and_dtype(self, item: VolumeItem, source: VolumeSource) -> None:
        assert source.channel_count == item.data.shape[0]
        assert source.dtype == np.float32

    def test_windows_at_edges_and_corners(self, item: VolumeItem, source: VolumeSource) -> None:
        for name, window in edge_windows(item.data.shape[1:]).items():
            got = source.read(window)
            assert got.dtype == np.float32, name
            assert got.flags.c_contiguous, name
            assert got.shape == (item.data.shape[0], *window.size), name
            np.testing.assert_array_equal(got, item.data[(slice(None), *window.slices())], err_msg=name)

    def test_tiling_reads_assemble_the_whole_item(self, item: VolumeItem, source: VolumeSource) -> None:
        whole = source.read(full_window(source.grid.shape))
        np.testing.assert_array_equal(whole, item.data)
        for step in self.tile_steps:
            assembled = np.zeros_like(item.data)
            written = np.zeros(item.data.shape[1:], dtype=np.int64)
            for window in tiling(source.grid.shape, step):
                part = source.read(window, None)
                assert part.shape == (item.data.shape[0], *window.size), window
                assembled[(slice(None), *window.slices())] = part
                written[window.slices()] += 1
            assert (written == 1).all(), step
            np.testing.assert_array_equal(assembled, whole, err_msg=str(step))

    def test_channel_subsets_in_the_order_asked(self, item: VolumeItem, source: VolumeSource) -> None:
        n = source.channel_count
        assert n >= 3, "the item needs at least 3 channels to check subsets and order"
        window = Window((1, 2, 1), (5, 6, 3))
        for chans in ([0], [n - 1], [1, 2], [n - 1, 0], list(range(n))[::-1], [0, n - 1, 1], [1, 1]):
            got = source.read(window, chans)
            assert got.flags.c_contiguous, chans
            np.testing.assert_array_equal(got, item.data[(chans, *window.slices())], err_msg=str(chans))

    @pytest.mark.parametrize("channels", [[-1], ["past"], [0, "past"], []], ids=str)
    def test_channels_out_of_range_raise(self, source: VolumeSource, channels: list[Any]) -> None:
        wanted = [source.channel_count if c == "past" else c for c in channels]
        with pytest.raises(OUTSIDE_ERRORS):
            source.read(Window((0, 0, 0), (2, 2, 2)), wanted)

    def test_windows_outside_the_grid_raise(self, item: VolumeItem, source: VolumeSource) -> None:
        for name, window in outside_windows(item.data.shape[1:]).items():
            with pytest.raises(OUTSIDE_ERRORS):
                source.read(window)
                pytest.fail(f"read of {name} {window} did not raise")


__all__ = [
    "OUTSIDE_ERRORS",
    "RasterItem",
    "RasterSourceContract",
    "VolumeItem",
    "VolumeSourceContract",
    "edge_windows",
    "outside_windows",
    "positional",
    "tiling",
]
