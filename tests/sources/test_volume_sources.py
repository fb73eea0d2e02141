"""One contract suite for every volume source backend (NIfTI, Zarr, OME-Zarr), plus their errors."""

from __future__ import annotations

import gzip
import io
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import zarr

from geoseg_pipeline.errors import GeosegError, InputDataError, SourceError
from geoseg_pipeline.geometry import Window, full_window
from geoseg_pipeline.sources import VolumeSource, open_volume_source
from geoseg_pipeline.sources.nifti_source import NiftiSource, prepare_volume
from geoseg_pipeline.sources.zarr_volume import ZarrVolumeSource

SHAPE = (7, 9, 5)  # odd sizes catch axis-order mistakes
LAS = np.array([[-0.8, 0, 0, 50.0], [0, 0.8, 0, -30.0], [0, 0, 2.5, 10.0], [0, 0, 0, 1]])
LPS = np.array([[-0.6, 0, 0, 40.0], [0, -0.6, 0, 45.0], [0, 0, 2.0, -8.0], [0, 0, 0, 1]])
# voxel axes along world (z, x, -y): axcodes (S, R, P)
PERMUTED = np.array([[0, 1.2, 0, 3.0], [0, 0, -0.7, 4.0], [2.2, 0, 0, 5.0], [0, 0, 0, 1]])


def write_nifti(
    path: Path, raw: np.ndarray, affine: np.ndarray, *, header: type[Any] = nib.Nifti1Header,
    endian: str = "<", slope: float = 1.0, inter: float = 0.0, sform_code: int = 1, qform_code: int = 1,
) -> Path:
    """Write a single-file NIfTI byte by byte: header, padding, Fortran-order voxels (gzip for .gz)."""
    hdr: Any = header(endianness=endian)
    hdr.set_data_shape(raw.shape)
    hdr.set_data_dtype(raw.dtype)
    hdr.set_qform(affine, qform_code)
    hdr.set_sform(affine, sform_code)
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_slope_inter(slope, inter)
    hdr.set_data_offset(hdr.single_vox_offset)
    buf = io.BytesIO()
    hdr.write_to(buf)
    buf.write(b"\0" * (hdr.single_vox_offset - buf.tell()))
    buf.write(raw.astype(hdr.get_data_dtype()).tobytes(order="F"))
    data = buf.getvalue()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_zarr(path: Path, data: np.ndarray, attrs: dict[str, Any], zarr_format: int = 3) -> Path:
    arr = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(3,) * data.ndim, dtype=data.dtype,
                          zarr_format=zarr_format)  # type: ignore[arg-type]
    arr[...] = data
    arr.attrs.update(attrs)
    return path


def write_ome_zarr(path: Path, data: np.ndarray, axes: list[dict[str, str]], scale: list[float],
                   translation: list[float] | None = None) -> Path:
    """NGFF 0.4 (Zarr format 2) multiscale image with one level, ``0``."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = group.create_array("0", shape=data.shape, chunks=(1, 1, 3, 3, 3)[-data.ndim:], dtype=data.dtype)
    arr[...] = data
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    if translation is not None:
        transforms.append({"type": "translation", "translation": translation})
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": "image", "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }]
    return path


def _voxels(dtype: str, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    rng = np.random.default_rng(11)
    return rng.integers(-500, 3000, shape).astype(dtype)


@dataclass
class Case:
    path: Path
    expected: np.ndarray  # (c, i, j, k) float32
    affine: np.ndarray
    axcodes: tuple[str, str, str]
    kind: type
    staging: bool = False
    channel_axis: int | None = None


def _nifti_expected(path: Path) -> np.ndarray:
    data = nib.load(path).get_fdata(dtype=np.float32)  # type: ignore[attr-defined]
    return np.moveaxis(data, 3, 0) if data.ndim == 4 else data[None]


def _nifti_case(path: Path, affine: np.ndarray, axcodes: tuple[str, str, str], **kw: Any) -> Case:
    return Case(path, _nifti_expected(path), affine, axcodes, NiftiSource, **kw)


OME_AXES = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
            {"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
OME_AFFINE = np.array([[0, 0, 0.0005, 0.03], [0, 0.0004, 0, 0.02], [0.002, 0, 0, 0.01], [0, 0, 0, 1]])


def _make_case(name: str, d: Path) -> Case:
    if name == "nii-las-float32":
        return _nifti_case(write_nifti(d / "a.nii", _voxels("float32"), LAS), LAS, ("L", "A", "S"))
    if name == "nii.gz-staged-lps-int16":
        return _nifti_case(write_nifti(d / "a.nii.gz", _voxels("int16"), LPS), LPS, ("L", "P", "S"), staging=True)
    if name == "nii.gz-direct-uint8":
        path = write_nifti(d / "a.nii.gz", _voxels("int16").clip(0, 255).astype("uint8"), LAS)
        return _nifti_case(path, LAS, ("L", "A", "S"))
    if name == "nifti2-permuted-float64":
        path = write_nifti(d / "a.nii", _voxels("float64"), PERMUTED, header=nib.Nifti2Header)
        return _nifti_case(path, PERMUTED, ("S", "R", "P"))
    if name == "nii-bigendian-int16-scaled":
        path = write_nifti(d / "a.nii", _voxels(">i2"), LPS, endian=">", slope=2.0, inter=-1024.0)
        case = _nifti_case(path, LPS, ("L", "P", "S"))
        np.testing.assert_array_equal(case.expected[0], _voxels("int16") * 2.0 - 1024.0)  # nibabel agrees
        return case
    if name == "nii.gz-staged-4d-channels":
        path = write_nifti(d / "a.nii.gz", _voxels("float32", (*SHAPE, 3)), PERMUTED, sform_code=2, qform_code=0)
        return _nifti_case(path, PERMUTED, ("S", "R", "P"), staging=True, channel_axis=3)
    if name == "zarr-spacing":
        data = _voxels("int16")
        path = write_zarr(d / "a.zarr", data, {"spacing": [0.5, 0.75, 2.0], "origin": [1.0, 2.0, 3.0]})
        affine = np.array([[0.5, 0, 0, 1.0], [0, 0.75, 0, 2.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])
        return Case(path, data[None].astype(np.float32), affine, ("R", "A", "S"), ZarrVolumeSource)
    if name == "zarr-affine-channels-v2":
        data = _voxels("float32", (2, *SHAPE))
        path = write_zarr(d / "a.zarr", data, {"affine": LPS.tolist()}, zarr_format=2)
        return Case(path, data, LPS, ("L", "P", "S"), ZarrVolumeSource)
    if name == "ome-zarr-0.4":
        data = _voxels("uint16", (1, 2, *SHAPE)).clip(0, None).astype("uint16")
        path = write_ome_zarr(d / "a.ome.zarr", data, OME_AXES, [1, 1, 2.0, 0.4, 0.5], [0, 0, 10.0, 20.0, 30.0])
        return Case(path, data[0].astype(np.float32), OME_AFFINE, ("S", "A", "R"), ZarrVolumeSource)
    raise AssertionError(name)


CASES = [
    "nii-las-float32", "nii.gz-staged-lps-int16", "nii.gz-direct-uint8", "nifti2-permuted-float64",
    "nii-bigendian-int16-scaled", "nii.gz-staged-4d-channels", "zarr-spacing", "zarr-affine-channels-v2",
    "ome-zarr-0.4",
]


@pytest.fixture(params=CASES, scope="module")
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return _make_case(request.param, tmp_path_factory.mktemp("vol"))


@pytest.fixture
def source(case: Case, tmp_path: Path) -> Iterator[VolumeSource]:
    staging = tmp_path / "staging" if case.staging else None
    src = open_volume_source(str(case.path), staging, channel_axis=case.channel_axis)
    yield src
    src.close()


# --- the contract ---------------------------------------------------------------------------------


def test_backend_and_protocol(case: Case, source: VolumeSource) -> None:
    assert type(source) is case.kind
    assert isinstance(source, VolumeSource)
    assert source.path == str(case.path)  # messages name the user's file, not a staged copy


def test_grid(case: Case, source: VolumeSource) -> None:
    grid = source.grid
    assert grid.shape == SHAPE
    np.testing.assert_allclose(grid.affine, case.affine, rtol=1e-6, atol=1e-6)
    assert grid.axcodes == case.axcodes
    np.testing.assert_allclose(grid.zooms, np.linalg.norm(case.affine[:3, :3], axis=0), rtol=1e-6)
    assert grid.voxel_volume_mm3 == pytest.approx(abs(np.linalg.det(case.affine[:3, :3])), rel=1e-6)
    assert source.ndim_effective == 3


def test_channels_and_dtype(case: Case, source: VolumeSource) -> None:
    assert source.channel_count == case.expected.shape[0]
    assert source.dtype == np.float32


WINDOWS = [
    full_window(SHAPE),
    Window((0, 0, 0), (1, 1, 1)),
    Window((6, 8, 4), (1, 1, 1)),
    Window((1, 2, 1), (5, 6, 3)),  # crosses Zarr chunk borders
    Window((0, 3, 0), (7, 3, 5)),
    Window((2, 0, 4), (3, 9, 1)),  # one k slice
]


def test_read_equals_the_array_slice(case: Case, source: VolumeSource) -> None:
    for window in WINDOWS:
        got = source.read(window)
        expected = case.expected[(slice(None), *window.slices())]
        assert got.dtype == np.float32
        assert got.flags.c_contiguous
        assert got.shape == (case.expected.shape[0], *window.size)
        np.testing.assert_array_equal(got, expected, err_msg=str(window))


def test_read_channel_subsets(case: Case, source: VolumeSource) -> None:
    count = case.expected.shape[0]
    window = Window((1, 1, 1), (4, 5, 3))
    for chans in ([0], [count - 1], list(range(count))[::-1], [0, 0]):
        got = source.read(window, chans)
        np.testing.assert_array_equal(got, case.expected[(chans, *window.slices())], err_msg=str(chans))
    with pytest.raises(InputDataError, match="out of range") as info:
        source.read(window, [count])
    assert str(case.path) in str(info.value)


@pytest.mark.parametrize(
    "window", [Window((0, 0, 0), (8, 1, 1)), Window((-1, 0, 0), (2, 2, 2)), Window((0, 0), (2, 2))], ids=str
)
def test_window_outside_the_grid(source: VolumeSource, window: Window) -> None:
    with pytest.raises(ValueError, match="does not lie inside"):
        source.read(window)


# --- NIfTI specifics ------------------------------------------------------------------------------


def test_nifti_reads_slabs_never_the_whole_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_nifti(tmp_path / "a.nii", _voxels("int16"), LAS)
    expected = _nifti_expected(path)

    def whole(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole volume was read")

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", whole)
    monkeypatch.setattr(nib.Nifti1Image, "get_fdata", whole)
    src = NiftiSource(str(path))
    window = Window((2, 3, 1), (2, 2, 2))
    np.testing.assert_array_equal(src.read(window), expected[(slice(None), *window.slices())])


def test_prepare_volume(tmp_path: Path) -> None:
    plain = write_nifti(tmp_path / "a.nii", _voxels("int16"), LAS)
    assert prepare_volume(str(plain), tmp_path / "staging") == str(plain)
    packed = tmp_path / "b.nii.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    staged = Path(prepare_volume(str(packed), tmp_path / "staging"))
    assert staged.parent == tmp_path / "staging" and staged.name.endswith("b.nii")
    assert staged.read_bytes() == plain.read_bytes()
    assert sorted(p.name for p in staged.parent.iterdir()) == [staged.name]  # no temporary left


def test_truncated_gzip(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "cut.nii.gz", _voxels("float32"), LAS)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    staging = tmp_path / "staging"
    with pytest.raises(SourceError, match="truncated or corrupt gzip") as info:
        open_volume_source(str(path), staging)
    assert str(path) in str(info.value)
    assert list(staging.iterdir()) == []  # the partial copy is removed


def test_not_gzip_named_nii_gz(tmp_path: Path) -> None:
    path = tmp_path / "fake.nii.gz"
    path.write_bytes(b"plain text, not gzip" * 20)
    with pytest.raises(SourceError, match="truncated or corrupt gzip") as info:
        prepare_volume(str(path), tmp_path / "staging")
    assert str(path) in str(info.value)


def test_header_longer_than_the_file(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "short.nii", _voxels("int16"), LAS)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 10)
    with pytest.raises(SourceError, match="truncated, or the header's dimensions are wrong") as info:
        open_volume_source(str(path))
    assert str(path) in str(info.value) and "(7, 9, 5)" in str(info.value)


def test_a_short_nii_gz_is_measured_by_its_uncompressed_data(tmp_path: Path) -> None:
    """Checked through its inflated copy: the message's size is that copy's, and says so."""
    plain = write_nifti(tmp_path / "short.nii", _voxels("int16"), LAS)
    with open(plain, "r+b") as f:
        f.truncate(plain.stat().st_size - 10)
    packed = tmp_path / "short.nii.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    staged = prepare_volume(str(packed), tmp_path / "staging")
    with pytest.raises(SourceError, match=r"short\.nii\.gz: header says .* but its uncompressed data has \d+ bytes: "
                                          "truncated"):
        NiftiSource(str(packed), data_path=staged)


def test_4d_needs_a_channel_axis(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "series.nii", _voxels("float32", (*SHAPE, 4)), LAS)
    with pytest.raises(InputDataError, match=r"4D NIfTI \(shape \(7, 9, 5, 4\)\): set a channel axis") as info:
        open_volume_source(str(path))
    assert str(path) in str(info.value)
    src = open_volume_source(str(path), channel_axis=3)
    assert src.channel_count == 4
    assert src.read(Window((0, 0, 0), (2, 2, 2))).shape == (4, 2, 2, 2)


def test_4d_of_one_volume_is_3d(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "one.nii", _voxels("float32", (*SHAPE, 1)), LAS)
    src = open_volume_source(str(path))
    assert src.channel_count == 1 and src.grid.shape == SHAPE
    np.testing.assert_array_equal(src.read(full_window(SHAPE)), _nifti_expected(path)[:1])


def test_5d_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "five.nii", _voxels("float32", (*SHAPE, 2, 3)), LAS)
    with pytest.raises(InputDataError, match="5D NIfTI") as info:
        open_volume_source(str(path), channel_axis=3)
    assert str(path) in str(info.value)


def test_channel_axis_must_not_be_spatial(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "a.nii", _voxels("float32"), LAS)
    with pytest.raises(InputDataError, match="channel_axis must be >= 3"):
        open_volume_source(str(path), channel_axis=2)


def test_singular_affine(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "flat.nii", _voxels("int16"), LAS)
    img: Any = nib.load(path)
    hdr = img.header
    flat = LAS.copy()
    flat[:, 2] = [0, 0, 0, 0]  # the k axis collapses
    hdr.set_sform(flat, 1)
    with open(path, "r+b") as f:
        hdr.write_to(f)
    with pytest.raises(SourceError, match="unusable voxel-to-world affine") as info:
        open_volume_source(str(path))
    assert str(path) in str(info.value) and "not invertible" in str(info.value)


def test_no_sform_no_qform_falls_back_to_pixdim(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "bare.nii", _voxels("int16"), LPS, sform_code=0, qform_code=0)
    src = open_volume_source(str(path))
    assert (src.grid.sform_code, src.grid.qform_code) == (0, 0)
    assert src.grid.zooms == pytest.approx((0.6, 0.6, 2.0))
    assert src.grid.axcodes == ("L", "A", "S")  # nibabel's fallback orientation


@pytest.mark.parametrize("shape", [(7, 9), (7, 9, 1)], ids=["2d", "one-slice"])
def test_2d_images_expose_ndim_effective(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = write_nifti(tmp_path / "slice.nii", _voxels("int16", shape), LAS)
    src = open_volume_source(str(path))
    assert src.grid.shape == (7, 9, 1)
    assert src.ndim_effective == 2
    got = src.read(Window((1, 2, 0), (3, 4, 1)))
    np.testing.assert_array_equal(got[0, :, :, 0], _voxels("int16", (7, 9))[1:4, 2:6])


def test_nan_voxels_are_returned(tmp_path: Path) -> None:
    data = _voxels("float32")
    data[1, 2, 3] = np.nan
    src = open_volume_source(str(write_nifti(tmp_path / "nan.nii", data, LAS)))
    assert np.isnan(src.read(full_window(SHAPE))[0, 1, 2, 3])


def test_complex_voxels_are_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "c.nii", (_voxels("float32") * 1j).astype(np.complex64), LAS)
    with pytest.raises(SourceError, match="unsupported voxel type complex64") as info:
        open_volume_source(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("junk.nii", b"not a nifti at all" * 40, "cannot open as NIfTI"),
        ("scan.mha", b"ObjectType = Image\n", "not a volume format"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, pattern: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=pattern) as info:
        open_volume_source(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError) and isinstance(info.value, GeosegError)


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.nii.gz"
    with pytest.raises(SourceError, match="no such file") as info:
        open_volume_source(str(path), tmp_path)
    assert str(path) in str(info.value)


def test_read_after_close(tmp_path: Path) -> None:
    src = open_volume_source(str(write_nifti(tmp_path / "a.nii", _voxels("int16"), LAS)))
    src.close()
    with pytest.raises(SourceError, match="after close"):
        src.read(Window((0, 0, 0), (1, 1, 1)))


# --- Zarr specifics -------------------------------------------------------------------------------


ZarrWriter = Callable[[Path], Path]


def _plain_group(path: Path) -> Path:
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", shape=SHAPE, dtype="int16")
    return path


BAD_ZARR: dict[str, tuple[ZarrWriter, type[Exception], str]] = {
    "no-geometry": (lambda d: write_zarr(d / "a.zarr", _voxels("int16"), {}), SourceError, "voxel size is unknown"),
    "both": (lambda d: write_zarr(d / "a.zarr", _voxels("int16"), {"spacing": [1, 1, 1], "affine": LAS.tolist()}),
             SourceError, "both set"),
    "bad-spacing": (lambda d: write_zarr(d / "a.zarr", _voxels("int16"), {"spacing": [1, 0, 1]}),
                    SourceError, "spacing must be 3 positive finite numbers"),
    "singular": (lambda d: write_zarr(d / "a.zarr", _voxels("int16"), {"affine": np.diag([1, 1, 0, 1]).tolist()}),
                 SourceError, "not invertible"),
    "2d": (lambda d: write_zarr(d / "a.zarr", _voxels("int16", (7, 9)), {"spacing": [1, 1, 1]}),
           InputDataError, r"expected an \(i, j, k\) or \(c, i, j, k\) array"),
    "time-series": (lambda d: write_ome_zarr(d / "a.zarr", _voxels("uint16", (3, 1, *SHAPE)), OME_AXES, [1] * 5),
                    InputDataError, "axis 't' \\(time\\) has 3 entries"),
    "bad-unit": (lambda d: write_ome_zarr(d / "a.zarr", _voxels("uint16", SHAPE), [
        {"name": "z", "type": "space", "unit": "second"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}], [1, 1, 1]), SourceError, "unit 'second'"),
    "plain-group": (lambda d: _plain_group(d / "a.zarr"), SourceError, "without OME-Zarr 'multiscales'"),
    "level-0-gone": (lambda d: _without_level_0(write_ome_zarr(d / "a.zarr", _voxels("uint16", SHAPE), [
        {"name": n, "type": "space"} for n in "zyx"], [1, 1, 1])), SourceError,
        "the full-resolution array '0' that the multiscales metadata names is missing"),
}


def _without_level_0(path: Path) -> Path:
    shutil.rmtree(path / "0")  # an incomplete copy
    return path


@pytest.mark.parametrize("name", list(BAD_ZARR))
def test_bad_zarr(tmp_path: Path, name: str) -> None:
    writer, error, pattern = BAD_ZARR[name]
    path = writer(tmp_path)
    with pytest.raises(error, match=pattern) as info:
        open_volume_source(str(path))
    assert str(path) in str(info.value)


def test_ome_zarr_without_units_or_xyz_names(tmp_path: Path) -> None:
    data = _voxels("float32")
    axes = [{"name": n, "type": "space"} for n in ("a", "b", "c2")]
    path = write_ome_zarr(tmp_path / "a.zarr", data, axes, [2.0, 3.0, 4.0])
    src = open_volume_source(str(path))
    np.testing.assert_allclose(src.grid.affine, np.diag([2.0, 3.0, 4.0, 1.0]))
    np.testing.assert_array_equal(src.read(full_window(SHAPE))[0], data)


def test_zarr_channel_axis_option(tmp_path: Path) -> None:
    path = write_zarr(tmp_path / "a.zarr", _voxels("int16"), {"spacing": [1, 1, 1]})
    with pytest.raises(InputDataError, match="channels on axis 0"):
        open_volume_source(str(path), channel_axis=3)


def test_nibabels_header_notes_name_the_file_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """nibabel says "pixdim[1,2,3] should be non-zero" without the file, each time it reads the header."""
    img = nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4))
    img.header["pixdim"][1:4] = 0
    nib.save(img, tmp_path / "flat.nii.gz")
    with caplog.at_level("WARNING", logger="nibabel.global"):
        NiftiSource(str(tmp_path / "flat.nii.gz"))
        NiftiSource(str(tmp_path / "flat.nii.gz"))
    notes = [r.getMessage() for r in caplog.records if r.name == "nibabel.global"]
    assert notes == [f"{tmp_path / 'flat.nii.gz'}: pixdim[1,2,3] should be non-zero; setting 0 dims to 1"]
    # nibabel's own handler printed each note a second time, beside the application's
    assert logging.getLogger("nibabel.global").handlers == []
