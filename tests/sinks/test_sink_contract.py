"""Every label sink runs the shared sink contract (``sink_contract.py``)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import rasterio
import sink_contract as contract
import zarr
from affine import Affine
from dicom_files import read_seg, write_series
from pyproj import CRS

from geoseg_pipeline.geometry import Grid
from geoseg_pipeline.sinks import ClassLegend, CogLabelSink, LogitsSink, NiftiLabelSink, StagedSink, ZarrLabelSink
from geoseg_pipeline.sinks.dicom_seg import DicomSegSink
from geoseg_pipeline.sinks.vector import GeoParquetSink, GpkgSink
from geoseg_pipeline.sources.dicom_series import scan_folder
from geoseg_pipeline.volumes import VolumeGrid

LEGEND = ClassLegend(("background", "water", "built up"), ("#000000", "#0000ff", "#ff8000"))
GRID = Grid((37, 53), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0), CRS.from_epsg(32632).to_wkt())
VOLUME = VolumeGrid((13, 10, 7), np.array([[-0.75, 0, 0, 90.0], [0, -0.75, 0, 100.0], [0, 0, 2.5, -30.0],
                                           [0, 0, 0, 1]]))


def raster_labels() -> np.ndarray:
    rows, cols = np.indices(GRID.shape)
    labels = ((rows // 5 + cols // 7) % 3).astype(np.uint8)
    labels[:6, :9] = 255  # no data in a corner, across a block border
    return labels


def volume_labels(nodata: int | None) -> np.ndarray:
    i, j, k = np.indices(VOLUME.shape)
    labels = ((i // 3 + j // 4 + k) % 3).astype(np.uint8)
    if nodata is not None:
        labels[-4:, -3:, :2] = nodata
    return labels


class TestCogSink(contract.LabelSinkContract):
    block = (16, 16)
    main_name = "labels.tif"
    output_names = frozenset({"labels.tif", "labels.tif.aux.xml"})

    def make_sink(self, out_dir: Path) -> StagedSink:
        return CogLabelSink(out_dir, GRID, LEGEND, 255)

    def label_map(self) -> np.ndarray:
        return raster_labels()

    def read_labels(self, main: Path) -> np.ndarray:
        with rasterio.open(main) as ds:
            assert (ds.transform, ds.nodata) == (GRID.transform, 255)
            assert ds.crs is not None and CRS.from_user_input(ds.crs.to_wkt()) == CRS.from_user_input(GRID.crs)
            out: np.ndarray = ds.read(1)
        return out


class TestLogitsSink(contract.LabelSinkContract):
    """``logits.tif``: its "label map" is the argmax of the logits it keeps."""

    block = (16, 16)
    main_name = "logits.tif"
    output_names = frozenset({"logits.tif"})
    logits_classes = 3

    def make_sink(self, out_dir: Path) -> StagedSink:
        return LogitsSink(out_dir, GRID, 3)

    def logits(self) -> np.ndarray:
        return np.random.default_rng(17).standard_normal((3, *GRID.shape)).astype(np.float32)

    def label_map(self) -> np.ndarray:
        return np.argmax(self.logits(), axis=0).astype(np.uint8)

    def read_labels(self, main: Path) -> np.ndarray:
        return np.argmax(self.read_logits(main.parent), axis=0).astype(np.uint8)

    def read_logits(self, out_dir: Path) -> np.ndarray:
        with rasterio.open(out_dir / "logits.tif") as ds:
            assert ds.transform == GRID.transform and ds.dtypes == ("float32",) * 3
            out: np.ndarray = ds.read()
        return out


class TestNiftiSink(contract.LabelSinkContract):
    block = (5, 4, 3)
    main_name = "labels.nii.gz"
    output_names = frozenset({"labels.nii.gz", "labels_ColorTable.ctbl", "labels.txt"})

    def make_sink(self, out_dir: Path) -> StagedSink:
        return NiftiLabelSink(out_dir, VOLUME, None, LEGEND, 9)

    def label_map(self) -> np.ndarray:
        return volume_labels(9)

    def read_labels(self, main: Path) -> np.ndarray:
        img: Any = nib.load(main)
        np.testing.assert_allclose(img.affine, VOLUME.affine, atol=1e-6)
        return np.asarray(img.dataobj)


class TestZarrSink(contract.LabelSinkContract):
    block = (5, 4, 3)
    main_name = "labels.zarr"
    output_names = frozenset({"labels.zarr"})

    def make_sink(self, out_dir: Path) -> StagedSink:
        return ZarrLabelSink(out_dir, VOLUME, LEGEND, None, chunks=(5, 4, 3))

    def label_map(self) -> np.ndarray:
        return volume_labels(None)

    def read_labels(self, main: Path) -> np.ndarray:
        arr: Any = zarr.open_array(str(main / "0"), mode="r")
        np.testing.assert_allclose(np.asarray(arr.attrs["affine"]), VOLUME.affine)
        return np.asarray(arr[...])


@functools.cache
def _series() -> tuple[str, tuple[Path, ...]]:
    """A DICOM series on the VOLUME grid (written once per test session): its item path and files."""
    folder = Path(tempfile.mkdtemp(prefix="geoseg-seg-contract-")) / "ct"
    files = write_series(folder, np.zeros(VOLUME.shape, np.int16), VOLUME.affine)
    [series] = scan_folder(str(folder)).series
    return series.path, tuple(files)


class TestDicomSegSink(contract.LabelSinkContract):
    block = (5, 4, 3)
    main_name = "labels.dcm"
    output_names = frozenset({"labels.dcm"})

    def make_sink(self, out_dir: Path) -> StagedSink:
        return DicomSegSink(out_dir, VOLUME, _series()[0], LEGEND, None, {"model": "m.pt", "model_version": "1"})

    def label_map(self) -> np.ndarray:
        return volume_labels(None)

    def read_labels(self, main: Path) -> np.ndarray:
        labels, _ = read_seg(main, list(_series()[1]))
        return labels


def rasterized(frame: Any) -> np.ndarray:
    """Polygons read back (a GeoDataFrame) burned onto ``GRID`` by class: the label map again."""
    from rasterio import features

    assert CRS.from_user_input(frame.crs) == CRS.from_user_input(GRID.crs)
    return features.rasterize(zip(frame.geometry, frame.class_index, strict=True), out_shape=GRID.shape,
                              transform=GRID.transform, fill=255, dtype="uint8")


class TestGeoParquetSink(contract.LabelSinkContract):
    """``labels.parquet``: its label map is its polygons, rasterized."""

    block = (16, 16)
    main_name = "labels.parquet"
    output_names = frozenset({"labels.parquet"})

    def make_sink(self, out_dir: Path) -> StagedSink:
        return GeoParquetSink(out_dir, GRID, LEGEND, 255)

    def label_map(self) -> np.ndarray:
        return raster_labels()

    def read_labels(self, main: Path) -> np.ndarray:
        import geopandas

        return rasterized(geopandas.read_parquet(main))


class TestGpkgSink(TestGeoParquetSink):
    main_name = "labels.gpkg"
    output_names = frozenset({"labels.gpkg"})

    def make_sink(self, out_dir: Path) -> StagedSink:
        return GpkgSink(out_dir, GRID, LEGEND, 255)

    def read_labels(self, main: Path) -> np.ndarray:
        import geopandas

        return rasterized(geopandas.read_file(main, layer="labels"))
