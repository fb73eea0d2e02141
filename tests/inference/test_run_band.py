"""A worker finishes a band's blocks itself: the labels (and logits) equal those of one global
blend of every task of the item, whatever the number of bands, in 2D with nodata and in 3D."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geoseg_pipeline.inference.tile_executor import TileExecutor
from geoseg_pipeline.preprocess import Preprocessing
from geoseg_pipeline.sinks.regions import block_regions
from geoseg_pipeline.spec import ModelSpec
from geoseg_pipeline.stitching import BlockStitcher
from geoseg_pipeline.tasks import BandResult, ItemJob, RegionSettings, StitchSettings
from geoseg_pipeline.tiling import BandTask, plan_tiles


class _Mix(torch.nn.Module):
    """Three classes from the channels, position-dependent (so overlaps matter)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1.0, 1.0, x.shape[-1], dtype=x.dtype)
        first = x[:, :1]
        return torch.cat([first * ramp, -first, first.sin() * 3], dim=1)


def _executor(tmp_path: Path, readers: int = 1) -> TileExecutor:
    torch.jit.script(_Mix()).save(str(tmp_path / "mix.pt"))
    return TileExecutor(ModelSpec(type="torchscript", path=tmp_path / "mix.pt"), device="cpu", threads=1,
                        reader_threads=readers)


def _global(executor: TileExecutor, job: ItemJob) -> dict[tuple[int, ...], tuple[np.ndarray, np.ndarray | None]]:
    """Every task of the item into one stitcher, as the driver used to blend."""
    assert job.plan is not None and job.stitch is not None
    st = job.stitch
    stitcher = BlockStitcher(job.plan, st.num_classes, st.nodata_label, np.dtype(st.label_dtype),
                             keep_logits=st.keep_logits)
    out = {}
    for task in job.plan.tasks():
        for block in stitcher.add(executor.run(job, task)):
            out[block.index] = (block.labels, block.logits)
    assert stitcher.done
    return out


def _whole(executor: TileExecutor, job: ItemJob, band: BandTask) -> BandResult:
    """A band's streamed parts in one: each block comes once, in some part."""
    parts = list(executor.run_band(job, band))
    blocks = [b for p in parts for b in p.blocks]
    assert len({b.index for b in blocks}) == len(blocks)
    assert all(p.blocks for p in parts[:-1])  # a part goes back as soon as a block is finished
    return BandResult(band.index, tuple(blocks), sum(p.windows_run for p in parts),
                      sum(p.windows_skipped for p in parts), sum(p.halo_windows for p in parts))


@pytest.mark.parametrize(("bands", "readers"), [(1, 1), (2, 1), (3, 2), (7, 3)])
def test_raster_bands_equal_the_global_blend(tmp_path: Path, bands: int, readers: int) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 150, 97)).astype(np.float32)
    data[:, 40:70, 10:60] = -9999.0  # nodata across band edges
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=97, height=150, count=2, dtype="float32",
                       nodata=-9999.0, crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10)) as ds:
        ds.write(data)
    plan = plan_tiles((150, 97), (32, 32), 0.25, (32, 48))
    job = ItemJob("s", str(tmp_path / "s.tif"), "geotiff", Preprocessing((1, 2), nodata=-9999.0), (32, 32),
                  "gaussian", 0.125, 4, plan=plan, stitch=StitchSettings(3, 255, "uint8", keep_logits=True))
    executor = _executor(tmp_path, readers)  # several reading threads read ahead, in order
    expected = _global(executor, job)
    got = {}
    own = 0
    for band in plan.bands(bands):
        result = _whole(executor, job, band)
        own += result.windows_run + result.windows_skipped
        assert {b.index for b in result.blocks} == set(plan.band_blocks(band))
        got.update({b.index: (b.labels, b.logits) for b in result.blocks})
    assert own == plan.window_count  # halo windows are counted apart
    assert set(got) == set(expected)
    for index, (labels, logits) in expected.items():
        np.testing.assert_array_equal(got[index][0], labels)
        np.testing.assert_allclose(got[index][1], logits, rtol=1e-6, atol=1e-6)  # NaN where nodata
    assert any((labels == 255).any() for labels, _ in expected.values())  # the nodata is there
    executor.close()


def test_volume_bands_equal_the_global_blend(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(size=(41, 23, 17)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0])), tmp_path / "v.nii")
    plan = plan_tiles(data.shape, (12, 12, 8), 0.5, (16, 16, 16))
    job = ItemJob("v", str(tmp_path / "v.nii"), "nifti", Preprocessing((1,)), (12, 12, 8), "gaussian", 0.125, 4,
                  kind="volume", data_path=str(tmp_path / "v.nii"), image_shape=data.shape, plan=plan,
                  stitch=StitchSettings(3, None, "uint8"))
    executor = _executor(tmp_path)
    expected = _global(executor, job)
    for count in (1, 3):
        got = {b.index: b.labels for band in plan.bands(count) for b in _whole(executor, job, band).blocks}
        assert got.keys() == expected.keys()
        for index, (labels, _) in expected.items():
            np.testing.assert_array_equal(got[index], labels)
    executor.close()


def test_a_resumed_band_runs_only_what_its_open_blocks_need(tmp_path: Path) -> None:
    """Blocks an earlier run committed are neither returned nor recomputed; the others still
    equal the global blend."""
    data = np.random.default_rng(2).normal(size=(1, 160, 96)).astype(np.float32)
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=96, height=160, count=1, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10)) as ds:
        ds.write(data)
    plan = plan_tiles((160, 96), (32, 32), 0.25, (32, 32))
    job = ItemJob("s", str(tmp_path / "s.tif"), "geotiff", Preprocessing((1,)), (32, 32), "gaussian", 0.125, 4,
                  plan=plan, stitch=StitchSettings(3, 255, "uint8"))
    executor = _executor(tmp_path)
    expected = _global(executor, job)
    committed = {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 2), (3, 0), (3, 1), (3, 2), (4, 1)}
    full = plan.bands(2)
    for band in plan.bands(2, committed):
        result = _whole(executor, job, band)
        assert {b.index for b in result.blocks} == set(plan.band_blocks(band)) - committed
        for block in result.blocks:
            np.testing.assert_array_equal(block.labels, expected[block.index][0])
        own, halo = plan.band_window_count(band)
        assert result.windows_run + result.windows_skipped == own < plan.band_window_count(full[band.index])[0]
        assert result.halo_windows == halo
    executor.close()


def test_a_band_of_an_item_with_polygons_sends_each_blocks_regions(tmp_path: Path) -> None:
    """With ``StitchSettings.regions`` each finished block comes back with its connected regions,
    found on the worker exactly as the polygon sink would find them (rows' ground areas included);
    without it, none."""
    data = np.random.default_rng(4).normal(size=(1, 96, 80)).astype(np.float32)
    data[:, 10:30, 5:40] = -9999.0
    with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=80, height=96, count=1, dtype="float32",
                       nodata=-9999.0, crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10)) as ds:
        ds.write(data)
    plan = plan_tiles((96, 80), (32, 32), 0.25, (32, 48))
    row_area = np.linspace(90.0, 110.0, 96)
    for connectivity in (4, 8):
        regions = RegionSettings(connectivity, 255, row_area)
        job = ItemJob("s", str(tmp_path / "s.tif"), "geotiff", Preprocessing((1,), nodata=-9999.0), (32, 32),
                      "gaussian", 0.125, 4, plan=plan, stitch=StitchSettings(3, 255, "uint8", regions=regions))
        executor = _executor(tmp_path)
        blocks = [b for band in plan.bands(2) for b in _whole(executor, job, band).blocks]
        assert {b.index for b in blocks} == set(plan.blocks())
        for block in blocks:
            window = plan.block_window(block.index)
            rows = row_area[window.start[0]:window.stop[0]]
            expected = block_regions(block.labels, connectivity=connectivity, ignore=255, row_area_m2=rows)
            assert block.regions is not None and block.regions.count == expected.count > 0
            for name in ("classes", "pixels", "areas", "keys", "coords", "ring_ends", "polygon_ends"):
                np.testing.assert_array_equal(getattr(block.regions, name), getattr(expected, name))
            for got, want in zip(block.regions.edges, expected.edges, strict=True):
                np.testing.assert_array_equal(got, want)
        plain = replace(job, stitch=StitchSettings(3, 255, "uint8"))
        assert all(b.regions is None for band in plan.bands(1) for b in _whole(executor, plain, band).blocks)
        executor.close()
