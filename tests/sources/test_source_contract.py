"""Every reader of the format registry runs the shared source contract (``source_contract.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import rasterio
import source_contract as contract
from affine import Affine
from dicom_files import orthonormal_affine, write_series
from rasterio.warp import Resampling, reproject
from test_raster_sources import write_geotiff
from test_raster_sources import write_zarr as write_raster_zarr
from test_volume_sources import write_nifti, write_ome_zarr
from test_volume_sources import write_zarr as write_volume_zarr

from geoseg_pipeline.formats import lookup
from geoseg_pipeline.geometry import Window
from geoseg_pipeline.sources.base import SourceOptions, VolumeSource, open_source
from geoseg_pipeline.sources.dicom_series import scan_folder
from geoseg_pipeline.sources.dicom_source import DicomSeriesSource
from geoseg_pipeline.sources.nifti_source import NiftiSource
from geoseg_pipeline.sources.rasterio_source import RasterioSource
from geoseg_pipeline.sources.stac_items import AssetBand, StacItemRef
from geoseg_pipeline.sources.stac_source import StacRasterSource
from geoseg_pipeline.sources.zarr_source import ZarrRasterSource
from geoseg_pipeline.sources.zarr_volume import ZarrVolumeSource

RasterItem, VolumeItem, positional = contract.RasterItem, contract.VolumeItem, contract.positional

RASTER_SHAPE = (37, 53)
UTM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000100.0)
GEOGRAPHIC = Affine(0.25, 0.0, 10.0, 0.0, -0.125, 50.0)
VOLUME_SHAPE = (13, 11, 7)
#: dyadic voxel sizes and origins: exact in a NIfTI header's float32 fields
LAS = np.array([[-0.75, 0, 0, 48.0], [0, 0.5, 0, -30.0], [0, 0, 2.5, 10.0], [0, 0, 0, 1]])
LPS = np.array([[-0.5, 0, 0, 40.0], [0, -0.5, 0, 45.0], [0, 0, 2.0, -8.0], [0, 0, 0, 1]])


# --- rasters --------------------------------------------------------------------------------------


class TestGeoTiffTiled(contract.RasterSourceContract):
    format_name = "geotiff"
    reader = RasterioSource
    def write_item(self, folder: Path) -> RasterItem:
        data = positional((3, *RASTER_SHAPE), np.int16)  # 16x16 tiles
        data[:, :5, :7] = -9999
        path = write_geotiff(folder / "scene.tif", data, -9999.0, "EPSG:32633", UTM)
        return RasterItem(path, data, UTM, "EPSG:32633", -9999.0)

    def test_the_file_is_tiled(self, item: RasterItem) -> None:
        with rasterio.open(item.path) as ds:
            assert ds.profile["tiled"] and ds.block_shapes == [(16, 16)] * 3


class TestGeoTiffStriped(contract.RasterSourceContract):
    format_name = "geotiff"
    reader = RasterioSource
    def write_item(self, folder: Path) -> RasterItem:
        data = positional((4, *RASTER_SHAPE), np.float32)
        data[1, -3:, -2:] = np.nan
        path = folder / "scene.tiff"
        with rasterio.open(
            path, "w", driver="GTiff", width=RASTER_SHAPE[1], height=RASTER_SHAPE[0], count=4, dtype="float32",
            crs="EPSG:4326", transform=GEOGRAPHIC, nodata=float("nan"), tiled=False, blockysize=3,
        ) as ds:
            ds.write(data)
        return RasterItem(path, data, GEOGRAPHIC, "EPSG:4326", float("nan"))

    def test_the_file_is_striped(self, item: RasterItem) -> None:
        with rasterio.open(item.path) as ds:
            assert not ds.profile.get("tiled", False) and ds.block_shapes[0] == (3, RASTER_SHAPE[1])


class TestZarrRaster(contract.RasterSourceContract):
    format_name = "zarr"
    reader = ZarrRasterSource
    def write_item(self, folder: Path) -> RasterItem:
        data = positional((4, *RASTER_SHAPE), np.uint16)  # chunks (2, 16, 20)
        data[3, 10:12, 40:] = 65535
        attrs = {"crs": "EPSG:32633", "transform": list(UTM)[:6], "nodata": 65535}
        path = write_raster_zarr(folder / "scene.zarr", data, attrs)
        return RasterItem(path, data, UTM, "EPSG:32633", 65535.0)


class TestStacItem(contract.RasterSourceContract):
    """A STAC item of three assets: a 10 m band, band 2 of a multi-band asset, and a 20 m band
    that the reader warps onto the 10 m grid (expected: GDAL warping the whole band)."""

    format_name = "stac"
    reader = StacRasterSource
    detected = False
    refs: ClassVar[dict[str, StacItemRef]] = {}

    def write_item(self, folder: Path) -> RasterItem:
        fine = positional((1, *RASTER_SHAPE), np.int16)
        fine[:, :5, :7] = -9999
        visual = positional((3, *RASTER_SHAPE), np.int16) + 7
        coarse_shape = ((RASTER_SHAPE[0] + 1) // 2, (RASTER_SHAPE[1] + 1) // 2)
        coarse = positional((1, *coarse_shape), np.int16) + 3
        coarse_t = Affine(20.0, 0.0, UTM.c, 0.0, -20.0, UTM.f)
        files = {"B04": (fine, UTM), "visual": (visual, UTM), "B11": (coarse, coarse_t)}
        for key, (data, transform) in files.items():
            write_geotiff(folder / f"{key}.tif", data, -9999.0, "EPSG:32633", transform)
        warped = np.zeros(RASTER_SHAPE, np.int16)
        reproject(coarse[0], warped, src_transform=coarse_t, src_crs="EPSG:32633", dst_transform=UTM,
                  dst_crs="EPSG:32633", resampling=Resampling.bilinear, src_nodata=-9999, dst_nodata=-9999)
        bands = (AssetBand("B04", str(folder / "B04.tif")), AssetBand("visual", str(folder / "visual.tif"), 2),
                 AssetBand("B11", str(folder / "B11.tif")))
        ref = StacItemRef("item", str(folder / "item.json"), bands)
        self.refs[ref.href] = ref
        expected = np.stack([fine[0], visual[1], warped])
        return RasterItem(Path(ref.href), expected, UTM, "EPSG:32633", -9999.0)

    def open_item(self, item: Any, staging: Path) -> Any:
        return open_source(lookup("stac", "raster"), str(item.path), SourceOptions(stac=self.refs[str(item.path)]))


# --- volumes --------------------------------------------------------------------------------------


class TestNiftiPlain(contract.VolumeSourceContract):
    format_name = "nifti"
    reader = NiftiSource
    options = SourceOptions(channel_axis=3)

    def write_item(self, folder: Path) -> VolumeItem:
        raw = positional((*VOLUME_SHAPE, 3), np.float32)  # (i, j, k, c) on disk
        path = write_nifti(folder / "scan.nii", raw, LAS)
        return VolumeItem(path, np.ascontiguousarray(np.moveaxis(raw, 3, 0)), LAS)


class TestNiftiGzipStaged(contract.VolumeSourceContract):
    format_name = "nifti"
    reader = NiftiSource
    options = SourceOptions(channel_axis=3)

    def write_item(self, folder: Path) -> VolumeItem:
        raw = np.random.default_rng(3).integers(-2000, 2000, (*VOLUME_SHAPE, 3)).astype(np.int16)
        path = write_nifti(folder / "scan.nii.gz", raw, LPS, slope=2.0, inter=-1024.0)
        expected = np.moveaxis(raw.astype(np.float32) * 2.0 - 1024.0, 3, 0)
        return VolumeItem(path, np.ascontiguousarray(expected, dtype=np.float32), LPS)

    def test_reads_the_inflated_copy_in_the_staging_folder(self, item: VolumeItem, source: VolumeSource,
                                                           tmp_path: Path) -> None:
        assert isinstance(source, NiftiSource)
        staged = Path(source.data_path)
        assert staged.parent == tmp_path / "staging"
        assert staged.name.endswith(".nii") and staged.stat().st_size > item.path.stat().st_size


class TestZarrVolumePlain(contract.VolumeSourceContract):
    format_name = "zarr"
    reader = ZarrVolumeSource

    def write_item(self, folder: Path) -> VolumeItem:
        data = positional((3, *VOLUME_SHAPE), np.float32)  # (c, i, j, k), chunks of 3
        path = write_volume_zarr(folder / "scan.zarr", data, {"spacing": [0.5, 0.75, 2.0], "origin": [1.0, 2.0, 3.0]})
        affine = np.array([[0.5, 0, 0, 1.0], [0, 0.75, 0, 2.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])
        return VolumeItem(path, data, affine)


class TestOmeZarr(contract.VolumeSourceContract):
    format_name = "zarr"
    reader = ZarrVolumeSource

    def write_item(self, folder: Path) -> VolumeItem:
        data = positional((3, *VOLUME_SHAPE), np.int32)  # (c, z, y, x)
        axes = [{"name": "c", "type": "channel"}] + [
            {"name": n, "type": "space", "unit": "millimeter"} for n in ("z", "y", "x")
        ]
        path = write_ome_zarr(folder / "scan.ome.zarr", data, axes, [1.0, 2.0, 0.5, 0.25], [0.0, 10.0, 20.0, 30.0])
        # array axis i runs along world z, j along y, k along x
        affine = np.array([[0, 0, 0.25, 30.0], [0, 0.5, 0, 20.0], [2.0, 0, 0, 10.0], [0, 0, 0, 1]])
        return VolumeItem(path, data.astype(np.float32), affine)


class TestDicomSeries(contract.VolumeSourceContract):
    format_name = "dicom"
    reader = DicomSeriesSource

    def write_item(self, folder: Path) -> VolumeItem:
        stored = np.random.default_rng(4).integers(-1000, 3000, VOLUME_SHAPE).astype(np.int16)
        affine = orthonormal_affine((0.75, 0.5, 2.5), 30.0, 10.0)
        write_series(folder / "series", stored, affine, slope=2.0, intercept=-1024.0)
        [series] = scan_folder(str(folder / "series")).series
        expected = (stored * np.float32(2.0) - np.float32(1024.0))[None]
        return VolumeItem(Path(series.path), expected, affine)

    def test_channel_subsets_in_the_order_asked(self, item: VolumeItem, source: VolumeSource) -> None:
        # one channel (a series is one greyscale volume): the subsets there are
        assert source.channel_count == 1
        window = Window((1, 2, 1), (5, 6, 3))
        for chans in ([0], [0, 0], None):
            got = source.read(window, chans)
            assert got.flags.c_contiguous, chans
            np.testing.assert_array_equal(got, item.data[([0] * len(chans or [0]), *window.slices())])
