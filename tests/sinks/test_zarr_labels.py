"""Zarr label sink: OME-Zarr metadata, block writes in any order, atomic publish, read back by our source."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from geoseg_pipeline.errors import SinkError
from geoseg_pipeline.geometry import Window
from geoseg_pipeline.sinks import ClassLegend, ZarrLabelSink
from geoseg_pipeline.sinks.zarr_labels import ngff_axes
from geoseg_pipeline.sources.zarr_volume import ZarrVolumeSource
from geoseg_pipeline.volumes import VolumeGrid

LEGEND = ClassLegend(("background", "tumour core", 'oedema "peritumoral"'), ("#000000", "#ff0000", "#00c040"))
SHAPE = (13, 10, 7)
#: axis-aligned, positive voxel sizes: exactly expressible in NGFF
ALIGNED = np.array([[0.7, 0, 0, -90.0], [0, 0.8, 0, 100.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
#: LPS-like flips with a small shear: NGFF keeps the voxel sizes only
OBLIQUE = np.array([[-0.7, 0.05, 0, 90.0], [0, -0.7, 0, 100.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
#: axis i along world z, j along y, k along x (a (z, y, x) array), positive sizes: exact
PERMUTED = np.array([[0, 0, 0.5, 1.0], [0, 0.6, 0, 2.0], [3.0, 0, 0, 3.0], [0, 0, 0, 1]])


def _labels(shape: tuple[int, int, int] = SHAPE, classes: int = 3) -> np.ndarray:
    i, j, k = np.indices(shape)
    labels: np.ndarray = ((i // 3 + j // 4 + k) % classes).astype(np.uint8)
    return labels


def _blocks(shape: tuple[int, int, int], block: tuple[int, int, int]) -> list[Window]:
    return [
        Window((a, b, c), (min(block[0], shape[0] - a), min(block[1], shape[1] - b), min(block[2], shape[2] - c)))
        for a in range(0, shape[0], block[0])
        for b in range(0, shape[1], block[1])
        for c in range(0, shape[2], block[2])
    ]


def _write_shuffled(sink: ZarrLabelSink, labels: np.ndarray, block: tuple[int, int, int] = (5, 4, 3),
                    seed: int = 5) -> None:
    windows = _blocks(labels.shape, block)
    random.Random(seed).shuffle(windows)
    for w in windows:
        sink.write(w, labels[w.slices()])


def _attrs(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((path / ".zattrs").read_text(encoding="utf-8"))
    return doc


@pytest.mark.parametrize("affine", [ALIGNED, PERMUTED], ids=["aligned", "permuted"])
def test_round_trip_through_our_zarr_source(tmp_path: Path, affine: np.ndarray) -> None:
    labels = _labels()
    sink = ZarrLabelSink(tmp_path / "out", VolumeGrid(SHAPE, affine), LEGEND, None)
    _write_shuffled(sink, labels)
    path = sink.commit()
    assert path == tmp_path / "out" / "labels.zarr"
    for store in (path, path / "0"):  # the OME-Zarr group and the plain array with its affine
        src = ZarrVolumeSource(str(store))
        assert src.grid.shape == SHAPE
        np.testing.assert_allclose(src.grid.affine, affine, rtol=0, atol=1e-12)
        assert src.grid.zooms == pytest.approx(VolumeGrid(SHAPE, affine).zooms)
        assert src.stored_dtype == np.uint8
        np.testing.assert_array_equal(src.read(Window((0, 0, 0), SHAPE), [0])[0], labels)
    assert _attrs(path)["geoseg"]["ngff_exact"] is True


def test_oblique_affine_kept_in_full_and_voxel_sizes_in_ngff(tmp_path: Path) -> None:
    grid = VolumeGrid(SHAPE, OBLIQUE, sform_code=1, qform_code=1)
    sink = ZarrLabelSink(tmp_path, grid, LEGEND, None)
    _write_shuffled(sink, _labels())
    path = sink.commit()
    exact = ZarrVolumeSource(str(path / "0")).grid
    np.testing.assert_array_equal(exact.affine, OBLIQUE)
    ngff = ZarrVolumeSource(str(path)).grid
    assert ngff.shape == SHAPE
    assert ngff.zooms == pytest.approx(grid.zooms)
    assert ngff.voxel_volume_mm3 == pytest.approx(grid.voxel_volume_mm3, rel=1e-2)  # the shear is lost
    attrs = _attrs(path)
    assert attrs["affine"] == OBLIQUE.tolist()
    assert attrs["geoseg"]["ngff_exact"] is False
    assert (attrs["geoseg"]["sform_code"], attrs["geoseg"]["qform_code"]) == (1, 1)
    assert attrs["geoseg"]["axcodes"] == "".join(grid.axcodes)
    transforms = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert transforms[1] == {"type": "translation", "translation": [90.0, 100.0, -30.0]}


def test_ngff_metadata(tmp_path: Path) -> None:
    sink = ZarrLabelSink(tmp_path, VolumeGrid(SHAPE, PERMUTED), LEGEND, 255, chunks=(4, 4, 4))
    path = sink.commit()
    attrs = _attrs(path)
    assert json.loads((path / ".zgroup").read_text())["zarr_format"] == 2
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4"
    assert ms["axes"] == [{"name": n, "type": "space", "unit": "millimeter"} for n in ("z", "y", "x")]
    assert ms["datasets"] == [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [3.0, 0.6, 0.5]}, {"type": "translation", "translation": [3.0, 2.0, 1.0]}]}]
    assert attrs["image-label"] == {
        "version": "0.4",
        "colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}, {"label-value": 1, "rgba": [255, 0, 0, 255]},
                   {"label-value": 2, "rgba": [0, 192, 64, 255]}, {"label-value": 255, "rgba": [0, 0, 0, 0]}],
        "properties": [{"label-value": 0, "class": "background"}, {"label-value": 1, "class": "tumour core"},
                       {"label-value": 2, "class": 'oedema "peritumoral"'}, {"label-value": 255, "class": "no data"}],
    }
    assert attrs["geoseg"]["classes"] == [
        {"label": 0, "name": "background", "colour": "#000000"},
        {"label": 1, "name": "tumour core", "colour": "#ff0000"},
        {"label": 2, "name": 'oedema "peritumoral"', "colour": "#00c040"}]
    assert attrs["geoseg"]["nodata_label"] == 255
    zarray = json.loads((path / "0" / ".zarray").read_text())
    assert zarray["chunks"] == [4, 4, 4] and zarray["dimension_separator"] == "/"
    assert zarray["compressor"]["id"] == "blosc" and zarray["compressor"]["cname"] == "zstd"
    assert zarray["fill_value"] == 255 and zarray["dtype"] == "|u1"
    assert _attrs(path / "0")["affine"] == PERMUTED.tolist()


@pytest.mark.parametrize("block", [(4, 4, 4), (5, 3, 7), (13, 10, 7), (1, 10, 2)])
def test_blocks_in_any_order_and_unwritten_voxels_read_as_nodata(tmp_path: Path, block: tuple[int, int, int]) -> None:
    labels = _labels()
    sink = ZarrLabelSink(tmp_path, VolumeGrid(SHAPE, ALIGNED), LEGEND, 9, chunks=(4, 4, 4))
    windows = _blocks(SHAPE, block)
    random.Random(sum(block)).shuffle(windows)
    skipped = windows.pop()
    for w in windows:
        sink.write(w, labels[w.slices()])
    expected = labels.copy()
    expected[skipped.slices()] = 9
    path = sink.commit()
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(path / "0"), mode="r")[...]), expected)


def test_nothing_published_before_commit_and_no_staging_after(tmp_path: Path) -> None:
    sink = ZarrLabelSink(tmp_path, VolumeGrid(SHAPE, ALIGNED), LEGEND, None)
    _write_shuffled(sink, _labels())
    assert [p.name for p in tmp_path.iterdir()] == [sink.staging.name]
    assert sink.staging.name.startswith(".staging-")
    sink.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_commit_replaces_an_earlier_output(tmp_path: Path) -> None:
    grid = VolumeGrid(SHAPE, ALIGNED)
    first = ZarrLabelSink(tmp_path, grid, LEGEND, None)
    first.write(Window((0, 0, 0), SHAPE), np.ones(SHAPE, np.uint8))
    first.commit()
    second = ZarrLabelSink(tmp_path, grid, LEGEND, None)
    second.write(Window((0, 0, 0), SHAPE), np.full(SHAPE, 2, np.uint8))
    path = second.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]
    assert (np.asarray(zarr.open_array(str(path / "0"), mode="r")[...]) == 2).all()


def test_abort_removes_the_staging(tmp_path: Path) -> None:
    sink = ZarrLabelSink(tmp_path, VolumeGrid(SHAPE, ALIGNED), LEGEND, None)
    _write_shuffled(sink, _labels())
    sink.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkError, match="after commit"):
        sink.write(Window((0, 0, 0), (1, 1, 1)), np.zeros((1, 1, 1), np.uint8))
    with pytest.raises(SinkError, match="after commit"):
        sink.commit()
    sink.abort()  # twice is harmless


@pytest.mark.parametrize(("classes", "nodata", "dtype"), [
    (3, None, np.uint8), (3, 255, np.uint8), (256, None, np.uint8), (257, None, np.uint16), (3, 256, np.uint16),
    (300, 65535, np.uint16),
])
def test_dtype_selection(tmp_path: Path, classes: int, nodata: int | None, dtype: type) -> None:
    legend = ClassLegend(tuple(f"c{i}" for i in range(classes)), ("#102030",) * classes)
    sink = ZarrLabelSink(tmp_path, VolumeGrid((3, 4, 5), ALIGNED), legend, nodata)
    assert sink.dtype == np.dtype(dtype)
    top = np.full((3, 4, 5), sink.max_label, dtype=sink.dtype)
    sink.write(Window((0, 0, 0), (3, 4, 5)), top)
    path = sink.commit()
    arr = zarr.open_array(str(path / "0"), mode="r")
    assert arr.dtype == np.dtype(dtype)
    assert int(np.asarray(arr[...]).max()) == sink.max_label


def test_labels_beyond_uint16_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="do not fit in uint16"):
        ZarrLabelSink(tmp_path, VolumeGrid(SHAPE, ALIGNED), LEGEND, 70000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("window", "labels", "message"), [
    (Window((10, 0, 0), (5, 4, 3)), np.zeros((5, 4, 3), np.uint8), "does not lie inside"),
    (Window((-1, 0, 0), (2, 2, 2)), np.zeros((2, 2, 2), np.uint8), "does not lie inside"),
    (Window((0, 0), (2, 2)), np.zeros((2, 2), np.uint8), "does not lie inside"),
    (Window((0, 0, 0), (2, 2, 2)), np.zeros((2, 2, 3), np.uint8), "got labels of shape"),
    (Window((0, 0, 0), (2, 2, 2)), np.full((2, 2, 2), 3, np.uint8), r"outside 0\.\.2"),
    (Window((0, 0, 0), (2, 2, 2)), np.full((2, 2, 2), -1, np.int16), r"outside 0\.\.2"),
])
def test_bad_blocks(tmp_path: Path, window: Window, labels: np.ndarray, message: str) -> None:
    sink = ZarrLabelSink(tmp_path, VolumeGrid(SHAPE, ALIGNED), LEGEND, None)
    with pytest.raises(SinkError, match=message):
        sink.write(window, labels)
    sink.abort()


@pytest.mark.parametrize("chunks", [(0, 4, 4), (4, 4), (4, 4, 4, 4)])
def test_bad_chunks(tmp_path: Path, chunks: tuple[int, ...]) -> None:
    with pytest.raises(SinkError, match="chunks must be three sizes"):
        ZarrLabelSink(tmp_path, VolumeGrid(SHAPE, ALIGNED), LEGEND, None, chunks=chunks)


def test_chunks_clipped_to_the_grid(tmp_path: Path) -> None:
    sink = ZarrLabelSink(tmp_path, VolumeGrid(SHAPE, ALIGNED), LEGEND, None)
    assert sink.chunks == SHAPE  # the default 64³ is larger than the grid
    sink.abort()


def test_staging_failure_is_a_sink_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SinkError):
        ZarrLabelSink(blocker / "out", VolumeGrid(SHAPE, ALIGNED), LEGEND, None)


def test_ngff_axes_of_a_flipped_affine() -> None:
    flipped = np.diag([-1.0, 2.0, 3.0, 1.0])
    flipped[:3, 3] = (10.0, 20.0, 30.0)
    axes = ngff_axes(flipped)
    assert [a["name"] for a in axes["axes"]] == ["x", "y", "z"]
    assert axes["transforms"] == [{"type": "scale", "scale": [1.0, 2.0, 3.0]},
                                  {"type": "translation", "translation": [10.0, 20.0, 30.0]}]
    assert axes["exact"] is False
