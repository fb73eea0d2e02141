"""NIfTI label sink: header copied from the input, block writes, atomic publish, viewer sidecars."""

from __future__ import annotations

import gzip
import io
import random
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from geoseg_pipeline.errors import SinkError
from geoseg_pipeline.geometry import Window
from geoseg_pipeline.sinks import ClassLegend
from geoseg_pipeline.sinks.nifti import NiftiLabelSink
from geoseg_pipeline.volumes import VolumeGrid

LEGEND = ClassLegend(("background", "tumour core", 'oedema "peritumoral"'), ("#000000", "#ff0000", "#00c040"))
SHAPE = (13, 10, 7)
# sform: LPS with a small shear; qform: its rigid part with another origin (codes 2 and 1)
SFORM = np.array([[-0.7, 0.05, 0, 90.0], [0, -0.7, 0, 100.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
QFORM = np.array([[-0.7, 0, 0, 91.0], [0, -0.7, 0, 101.0], [0, 0, 2.5, -31.0], [0, 0, 0, 1]])


def write_input(path: Path, shape: tuple[int, ...] = SHAPE, *, header: type[Any] = nib.Nifti1Header,
                endian: str = "<") -> Path:
    """An MR-like input with distinct sform/qform, units, dim_info, an extension and scaling."""
    hdr: Any = header(endianness=endian)
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(QFORM, 1)
    hdr.set_sform(SFORM, 2)
    hdr.set_xyzt_units("mm", "msec")
    hdr.set_dim_info(freq=1, phase=0, slice=2)
    hdr.set_slope_inter(2.0, -1024.0)
    hdr.extensions.append(nib.nifti1.Nifti1Extension("comment", b"scanner notes"))
    img: Any = nib.Nifti1Image if header is nib.Nifti1Header else nib.Nifti2Image
    data = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    out: Any = img(data, None, hdr)
    out.header.set_slope_inter(2.0, -1024.0)
    out.to_filename(path)
    return path


def _grid(path: Path) -> VolumeGrid:
    img: Any = nib.load(path)
    return VolumeGrid(SHAPE, img.affine, int(img.header["sform_code"]), int(img.header["qform_code"]))


def _labels(shape: tuple[int, int, int] = SHAPE, classes: int = 3) -> np.ndarray:
    i, j, k = np.indices(shape)
    labels: np.ndarray = ((i // 3 + j // 4 + k) % classes).astype(np.uint8)
    return labels


def _write_shuffled(sink: NiftiLabelSink, labels: np.ndarray, block: tuple[int, int, int] = (5, 4, 3)) -> None:
    windows = [
        Window((a, b, c), (min(block[0], labels.shape[0] - a), min(block[1], labels.shape[1] - b),
                           min(block[2], labels.shape[2] - c)))
        for a in range(0, labels.shape[0], block[0])
        for b in range(0, labels.shape[1], block[1])
        for c in range(0, labels.shape[2], block[2])
    ]
    random.Random(5).shuffle(windows)
    for w in windows:
        sink.write(w, labels[w.slices()])


def _raw_header(path: Path) -> Any:
    """The header exactly as stored (nib.load's image header moves scaling and offset elsewhere)."""
    with gzip.open(path) if path.name.endswith(".gz") else open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        cls: Any = nib.Nifti2Header if magic in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") else nib.Nifti1Header
        return cls.from_fileobj(f)


def _headers_ok(path: Path) -> None:
    hdr = _raw_header(path)
    assert type(hdr).diagnose_binaryblock(hdr.binaryblock) == ""  # nibabel's checks find nothing to fix
    before = hdr.binaryblock
    hdr.check_fix()
    assert hdr.binaryblock == before


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    d = tmp_path_factory.mktemp("sink")
    src = write_input(d / "t1.nii.gz")
    labels = _labels()
    sink = NiftiLabelSink(d / "out", _grid(src), str(src), LEGEND, nodata_label=255)
    _write_shuffled(sink, labels)
    assert sink.commit() == d / "out" / "labels.nii.gz"
    return src, d / "out", labels


def test_round_trip_voxels_and_dtype(committed: tuple[Path, Path, np.ndarray]) -> None:
    _, out, labels = committed
    img: Any = nib.load(out / "labels.nii.gz")
    assert img.shape == SHAPE
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)


def test_header_copied_from_the_input(committed: tuple[Path, Path, np.ndarray]) -> None:
    src, out, _ = committed
    a: Any = nib.load(src)
    b: Any = nib.load(out / "labels.nii.gz")
    ha, hb = _raw_header(src), _raw_header(out / "labels.nii.gz")
    assert type(hb) is type(ha)
    np.testing.assert_array_equal(b.affine, a.affine)
    for code in ("sform_code", "qform_code", "xyzt_units", "dim_info", "quatern_b", "quatern_c", "quatern_d",
                 "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(hb[code], ha[code], err_msg=code)
    np.testing.assert_array_equal(hb["pixdim"][:4], ha["pixdim"][:4])
    assert (int(hb["sform_code"]), int(hb["qform_code"])) == (2, 1)
    np.testing.assert_array_equal(hb.get_sform(), SFORM.astype(np.float32))
    np.testing.assert_allclose(hb.get_qform(), QFORM, atol=1e-5)
    assert (float(hb["scl_slope"]), float(hb["scl_inter"])) == (1.0, 0.0)
    assert hb.get_intent()[0] == "label"
    assert (float(hb["cal_min"]), float(hb["cal_max"])) == (0.0, 255.0)
    assert len(ha.extensions) == 1 and len(hb.extensions) == 0
    assert hb.get_data_offset() == 352
    assert hb.endianness == "<" and hb["magic"] == b"n+1"
    _headers_ok(out / "labels.nii.gz")


def test_output_is_a_plain_reproducible_gzip(committed: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    src, out, labels = committed
    raw = gzip.decompress((out / "labels.nii.gz").read_bytes())
    assert raw[344:348] == b"n+1\0" and len(raw) == 352 + labels.size
    again = NiftiLabelSink(tmp_path / "again", _grid(src), str(src), LEGEND, nodata_label=255)
    _write_shuffled(again, labels, block=(13, 10, 7))
    again.commit()
    assert (tmp_path / "again" / "labels.nii.gz").read_bytes() == (out / "labels.nii.gz").read_bytes()


def test_only_the_outputs_remain(committed: tuple[Path, Path, np.ndarray]) -> None:
    _, out, _ = committed
    assert sorted(p.name for p in out.iterdir()) == ["labels.nii.gz", "labels.txt", "labels_ColorTable.ctbl"]


def parse_slicer_ctbl(text: str) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    """Slicer's reader: '#' lines are comments, others are ``index name R G B A`` (0-255)."""
    assert text.startswith("# Color table file")
    table = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        idx, name, r, g, b, a = line.split()
        rgba = (int(r), int(g), int(b), int(a))
        assert all(0 <= v <= 255 for v in rgba)
        table[int(idx)] = (name, rgba)
    return table


ITKSNAP_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9.]+)\s+([01])\s+([01])\s+"([^"]*)"\s*$')


def parse_itksnap(text: str) -> dict[int, tuple[str, tuple[int, int, int], float, int, int]]:
    """ITK-SNAP's reader: '#' lines are comments, others are ``IDX R G B A VIS MSH "LABEL"``."""
    table = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = ITKSNAP_LINE.match(line)
        assert m, line
        idx, r, g, b, a, vis, msh, name = m.groups()
        assert 0.0 <= float(a) <= 1.0
        table[int(idx)] = (name, (int(r), int(g), int(b)), float(a), int(vis), int(msh))
    return table


def test_slicer_color_table(committed: tuple[Path, Path, np.ndarray]) -> None:
    _, out, _ = committed
    table = parse_slicer_ctbl((out / "labels_ColorTable.ctbl").read_text(encoding="utf-8"))
    assert table == {
        0: ("background", (0, 0, 0, 0)),
        1: ("tumour_core", (255, 0, 0, 255)),
        2: ('oedema_"peritumoral"', (0, 192, 64, 255)),
        255: ("no_data", (0, 0, 0, 0)),
    }


def test_itksnap_label_description(committed: tuple[Path, Path, np.ndarray]) -> None:
    _, out, _ = committed
    text = (out / "labels.txt").read_text(encoding="utf-8")
    assert "ITK-SnAP Label Description File" in text
    assert parse_itksnap(text) == {
        0: ("Clear Label", (0, 0, 0), 0.0, 0, 0),
        1: ("tumour core", (255, 0, 0), 1.0, 1, 1),
        2: ("oedema 'peritumoral'", (0, 192, 64), 1.0, 1, 1),
        255: ("no data", (0, 0, 0), 0.0, 0, 0),
    }


def test_unwritten_voxels_hold_nodata(tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.nii")
    sink = NiftiLabelSink(tmp_path / "out", _grid(src), str(src), LEGEND, nodata_label=255)
    sink.write(Window((0, 0, 0), (2, 2, 2)), np.ones((2, 2, 2), np.uint8))
    data = np.asarray(nib.load(sink.commit()).dataobj)  # type: ignore[attr-defined]
    assert (data[:2, :2, :2] == 1).all()
    assert (data == 255).sum() == data.size - 8


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.nii")
    out = tmp_path / "out"
    sink = NiftiLabelSink(out, _grid(src), str(src), LEGEND, nodata_label=None)
    sink.write(Window((0, 0, 0), SHAPE), _labels())
    sink.abort()
    assert list(out.iterdir()) == []
    with pytest.raises(SinkError, match="after commit"):
        sink.write(Window((0, 0, 0), (1, 1, 1)), np.zeros((1, 1, 1), np.uint8))


def test_without_input_header_uses_the_grid(tmp_path: Path) -> None:
    affine = np.array([[0, 0, 0.5, 3.0], [0, 0.4, 0, 2.0], [2.0, 0, 0, 1.0], [0, 0, 0, 1]])  # an OME-Zarr grid
    grid = VolumeGrid(SHAPE, affine)
    sink = NiftiLabelSink(tmp_path / "out", grid, None, LEGEND, nodata_label=None)
    labels = _labels()
    _write_shuffled(sink, labels)
    img: Any = nib.load(sink.commit())
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert (int(img.header["sform_code"]), int(img.header["qform_code"])) == (2, 0)
    assert nib.aff2axcodes(img.affine) == grid.axcodes  # type: ignore[no-untyped-call]
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    _headers_ok(tmp_path / "out" / "labels.nii.gz")


@pytest.mark.parametrize(("header", "endian"), [(nib.Nifti2Header, "<"), (nib.Nifti1Header, ">")], ids=["nifti2", "be"])
def test_nifti2_and_big_endian_inputs(tmp_path: Path, header: type[Any], endian: str) -> None:
    src = write_input(tmp_path / "in.nii", header=header, endian=endian)
    sink = NiftiLabelSink(tmp_path / "out", _grid(src), str(src), LEGEND, nodata_label=None)
    labels = _labels()
    _write_shuffled(sink, labels)
    img: Any = nib.load(sink.commit())
    assert type(img.header) is header
    raw = _raw_header(tmp_path / "out" / "labels.nii.gz")
    assert type(raw) is header and raw.endianness == "<" and _raw_header(src).endianness == endian
    np.testing.assert_array_equal(img.affine, nib.load(src).affine)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    _headers_ok(tmp_path / "out" / "labels.nii.gz")


def test_4d_input_gives_a_3d_label_volume(tmp_path: Path) -> None:
    src = write_input(tmp_path / "multi.nii", (*SHAPE, 2))
    sink = NiftiLabelSink(tmp_path / "out", _grid(src), str(src), LEGEND, nodata_label=None)
    _write_shuffled(sink, _labels())
    img: Any = nib.load(sink.commit())
    assert img.shape == SHAPE and int(img.header["dim"][0]) == 3
    _headers_ok(tmp_path / "out" / "labels.nii.gz")


def test_many_classes_use_uint16(tmp_path: Path) -> None:
    names = tuple(f"c{i}" for i in range(300))
    legend = ClassLegend(names, tuple("#102030" for _ in names))
    sink = NiftiLabelSink(tmp_path / "out", VolumeGrid(SHAPE, np.eye(4)), None, legend, nodata_label=None)
    labels = _labels(classes=300).astype(np.uint16) * 23
    sink.write(Window((0, 0, 0), SHAPE), labels)
    img: Any = nib.load(sink.commit())
    assert img.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    assert len(parse_itksnap((tmp_path / "out" / "labels.txt").read_text(encoding="utf-8"))) == 300


def test_bad_blocks(tmp_path: Path) -> None:
    sink = NiftiLabelSink(tmp_path / "out", VolumeGrid(SHAPE, np.eye(4)), None, LEGEND, nodata_label=255)
    with pytest.raises(SinkError, match="does not lie inside"):
        sink.write(Window((10, 0, 0), (4, 1, 1)), np.zeros((4, 1, 1), np.uint8))
    with pytest.raises(SinkError, match="labels of shape"):
        sink.write(Window((0, 0, 0), (2, 2, 2)), np.zeros((2, 2), np.uint8))
    with pytest.raises(SinkError, match=r"outside 0\.\.255"):
        sink.write(Window((0, 0, 0), (1, 1, 1)), np.full((1, 1, 1), 256, np.int64))
    sink.abort()


def test_header_source_of_another_item(tmp_path: Path) -> None:
    src = write_input(tmp_path / "other.nii", (5, 5, 5))
    with pytest.raises(SinkError, match="does not match the grid") as info:
        NiftiLabelSink(tmp_path / "out", VolumeGrid(SHAPE, np.eye(4)), str(src), LEGEND, nodata_label=None)
    assert str(src) in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []  # staging removed


def test_unreadable_header_source(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"x" * 400)
    with pytest.raises(SinkError, match="cannot read the header to copy") as info:
        NiftiLabelSink(tmp_path / "out", VolumeGrid(SHAPE, np.eye(4)), str(bad), LEGEND, nodata_label=None)
    assert str(bad) in str(info.value)


def test_staged_file_is_written_in_place(tmp_path: Path) -> None:
    """The staging file has its full size from the start and blocks land at their Fortran offsets."""
    sink = NiftiLabelSink(tmp_path / "out", VolumeGrid(SHAPE, np.eye(4)), None, LEGEND, nodata_label=None)
    staged = sink.staging / "labels.nii"
    assert staged.stat().st_size == 352 + int(np.prod(SHAPE))
    sink.write(Window((1, 2, 3), (1, 1, 1)), np.full((1, 1, 1), 2, np.uint8))
    raw = io.BytesIO(staged.read_bytes())
    raw.seek(352 + 1 + 2 * SHAPE[0] + 3 * SHAPE[0] * SHAPE[1])
    assert raw.read(1) == b"\x02"
    sink.abort()
