"""Synthetic CT phantoms: NIfTI grid and header, tissue HU levels, true volumes, seeds, orientations."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from geoseg_pipeline.demo.phantoms import (
    CT_CLASS_COLOURS,
    CT_CLASS_NAMES,
    PhantomTruth,
    ct_phantom_affine,
    write_ct_phantom,
)

SHAPE = (128, 120, 48)
SPACING = (0.9, 1.0, 3.0)
"""A small, anisotropic grid (115 x 120 x 144 mm) that keeps the tests fast."""

Phantom = tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8], PhantomTruth]


def _write_and_read(folder: Path, name: str, seed: int, **kwargs: object) -> Phantom:
    """Write a phantom (uncompressed, faster) and its labels under ``folder`` and read both back."""
    image, labels = folder / f"{name}.nii", folder / f"{name}-labels.nii"
    options: dict[str, object] = {"shape": SHAPE, "spacing": SPACING, **kwargs}
    truth = write_ct_phantom(image, seed, labels_path=labels, **options)  # type: ignore[arg-type]
    return np.asarray(_load(image).dataobj), np.asarray(_load(labels).dataobj), truth


def _load(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, PhantomTruth]:
    """Seed 7 on the test grid, as written: ``.nii.gz`` image and labels, and the truth."""
    folder = tmp_path_factory.mktemp("phantom")
    image, labels = folder / "ct.nii.gz", folder / "ct-labels.nii.gz"
    truth = write_ct_phantom(image, 7, shape=SHAPE, spacing=SPACING, labels_path=labels)
    return image, labels, truth


@pytest.fixture(scope="module")
def phantom(phantom_files: tuple[Path, Path, PhantomTruth]) -> Phantom:
    """Seed 7 on the test grid: stored HU, labels and truth."""
    image, labels, truth = phantom_files
    return np.asarray(_load(image).dataobj), np.asarray(_load(labels).dataobj), truth


def test_class_metadata_is_consistent() -> None:
    assert CT_CLASS_NAMES == ("background", "liver", "tumor")
    assert len(CT_CLASS_COLOURS) == len(CT_CLASS_NAMES)
    assert all(len(c) == 7 and c.startswith("#") and int(c[1:], 16) >= 0 for c in CT_CLASS_COLOURS)


def test_nifti_grid_is_lps_anisotropic_int16_hu(phantom_files: tuple[Path, Path, PhantomTruth]) -> None:
    image_path, labels_path, truth = phantom_files
    image, labels = _load(image_path), _load(labels_path)
    affine = np.asarray(image.affine)
    assert image.shape == labels.shape == SHAPE
    assert nib.aff2axcodes(affine) == ("L", "P", "S")  # type: ignore[no-untyped-call]  # DICOM-like, not RAS
    assert affine[0, 0] < 0 and affine[1, 1] < 0
    np.testing.assert_allclose(image.header.get_zooms(), np.asarray(SPACING), rtol=1e-6)  # type: ignore[no-untyped-call]
    np.testing.assert_allclose(affine, np.asarray(truth.affine))
    np.testing.assert_allclose(np.asarray(labels.affine), affine)
    assert image.get_data_dtype() == np.int16  # type: ignore[no-untyped-call]
    assert labels.get_data_dtype() == np.uint8  # type: ignore[no-untyped-call]
    assert (image.dataobj.slope, image.dataobj.inter) == (1.0, 0.0)  # type: ignore[attr-defined]
    assert (image.header["sform_code"], image.header["qform_code"]) == (1, 1)
    assert image.header.get_xyzt_units()[0] == "mm"  # type: ignore[no-untyped-call]


def test_tissues_have_ct_hounsfield_levels(phantom: Phantom) -> None:
    stored, labels, _ = phantom
    hu = stored.astype(np.float64)
    corners = hu[:8, :8, :]
    assert abs(np.median(corners) + 1000) < 5 and 9 < corners.std() < 15  # air with ~12 HU noise
    liver, tumour = np.median(hu[labels == 1]), np.median(hu[labels == 2])
    assert 50 <= liver <= 75
    assert 27 <= liver - tumour <= 43  # hypodense tumours
    assert 10 < hu[labels == 2].std() < 18
    background = hu[labels == 0]
    near_water = background[(background > -50) & (background < 150)]
    soft = np.bincount((near_water + 50).astype(np.int64)).argmax() - 50
    assert 30 <= soft <= 50  # the commonest body tissue: ~40 HU soft tissue
    assert ((background > -160) & (background < -40)).mean() > 0.04  # subcutaneous fat ring
    bone = hu >= 400
    assert hu.max() > 650 and 0.002 < bone.mean() < 0.05
    assert bone[:, SHAPE[1] // 2 :].sum() > 0.95 * bone.sum()  # the spine is posterior
    centre = (slice(SHAPE[0] // 5, -SHAPE[0] // 5), slice(SHAPE[1] // 4, -SHAPE[1] // 4))
    lung = hu[centre] < -700
    assert lung[..., -SHAPE[2] // 4 :].mean() > 0.1  # lungs in the upper slices ...
    assert not lung[..., : SHAPE[2] // 4].any()  # ... and none in the lower abdomen


def test_truth_volumes_are_label_voxel_counts(phantom: Phantom) -> None:
    _, labels, truth = phantom
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    assert truth.voxel_volume_ml == pytest.approx(voxel_ml)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert truth.total_tumour_volume_ml == pytest.approx(int((labels == 2).sum()) * voxel_ml)
    assert truth.liver_volume_ml == pytest.approx(int((labels == 1).sum()) * voxel_ml)
    components, count = ndimage.label(labels == 2, structure=np.ones((3, 3, 3)))  # 26-connected lesions
    assert count == truth.tumour_count >= 1
    sizes = np.bincount(components.ravel())[1:] * voxel_ml
    np.testing.assert_allclose(sorted(sizes), sorted(truth.tumour_volumes_ml))
    np.testing.assert_allclose(truth.tumour_volumes_ml, truth.analytic_volumes_ml, rtol=0.04)


def test_tumour_sizes_and_placement_over_seeds(tmp_path: Path) -> None:
    counts: list[int] = []
    in_liver: list[bool] = []
    for seed in (1, 2, 3):
        truth = write_ct_phantom(tmp_path / f"ct{seed}.nii", seed, shape=SHAPE, spacing=SPACING)
        counts.append(truth.tumour_count)
        in_liver.extend(truth.tumour_in_liver)
        diameters = [2 * (3 * v * 1000 / (4 * np.pi)) ** (1 / 3) for v in truth.analytic_volumes_ml]
        assert all(10 <= d <= 40.5 for d in diameters), diameters
        assert max(diameters) >= 25
    assert all(1 <= c <= 5 for c in counts) and max(counts) >= 3
    assert any(in_liver) and not all(in_liver)  # mostly intrahepatic, some exophytic


def test_equal_seeds_give_equal_phantoms(tmp_path: Path, phantom: Phantom) -> None:
    again = _write_and_read(tmp_path, "again", 7)
    other = _write_and_read(tmp_path, "other", 8)
    np.testing.assert_array_equal(again[0], phantom[0])
    np.testing.assert_array_equal(again[1], phantom[1])
    assert again[2] == phantom[2]
    assert not np.array_equal(other[1], phantom[1]) and other[2] != phantom[2]


@pytest.mark.parametrize("orientation", ["PLS", "RAS", "SLP"])
def test_orientation_reorders_the_same_anatomy(tmp_path: Path, phantom: Phantom, orientation: str) -> None:
    lps_image, lps_labels, lps_truth = phantom
    # The stored axes of the reoriented phantom, expressed as the LPS array's axes, and flips.
    order = ["LPS".index(_axis_letter(code)) for code in orientation]
    flips = [code not in "LPS" for code in orientation]
    shape = tuple(SHAPE[axis] for axis in order)
    spacing = tuple(SPACING[axis] for axis in order)
    image, labels, truth = _write_and_read(
        tmp_path, orientation, 7, shape=shape, spacing=spacing, orientation=orientation
    )

    expected = np.flip(np.transpose(lps_image, order), tuple(axis for axis, flip in enumerate(flips) if flip))
    np.testing.assert_array_equal(image, expected)
    assert nib.aff2axcodes(np.asarray(truth.affine)) == tuple(orientation)  # type: ignore[no-untyped-call]
    assert truth.tumour_volumes_ml == lps_truth.tumour_volumes_ml
    assert labels.shape == image.shape == shape
    # The tumours sit at the same world (RAS mm) position in both files.
    np.testing.assert_allclose(_world_centroid(labels, truth), _world_centroid(lps_labels, lps_truth), atol=1e-6)


def test_affine_maps_the_volume_centre_to_the_same_world_point() -> None:
    centres = [
        ct_phantom_affine(shape, spacing, code) @ np.append((np.asarray(shape) - 1) / 2, 1.0)
        for shape, spacing, code in [
            ((160, 160, 64), (0.8, 0.8, 2.5), "LPS"),
            ((64, 100, 120), (2.5, 1.0, 0.9), "IAR"),
        ]
    ]
    np.testing.assert_allclose(centres[0], centres[1])
    with pytest.raises(ValueError, match="orientation must be"):
        ct_phantom_affine((160, 160, 64), (0.8, 0.8, 2.5), "LPR")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed must be >= 0"),
        ({"orientation": "LPP"}, "orientation must be"),
        ({"orientation": "XYZ"}, "orientation must be"),
        ({"shape": (64, 64, 64)}, "field of view"),
        ({"spacing": (0.8, 0.0, 2.5)}, "spacing must be"),
    ],
)
def test_invalid_arguments_name_the_file(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    path = tmp_path / "bad.nii.gz"
    options: dict[str, object] = {"seed": 0, **kwargs}
    seed = options.pop("seed")
    with pytest.raises(ValueError, match=message) as error:
        write_ct_phantom(path, seed, **options)  # type: ignore[arg-type]
    assert str(path) in str(error.value)
    assert not path.exists()


def _axis_letter(code: str) -> str:
    return {"L": "L", "R": "L", "P": "P", "A": "P", "S": "S", "I": "S"}[code]


def _world_centroid(labels: npt.NDArray[np.uint8], truth: PhantomTruth) -> npt.NDArray[np.float64]:
    """RAS mm centroid of the tumour voxels."""
    index = np.argwhere(labels == 2).mean(axis=0)
    world: npt.NDArray[np.float64] = (np.asarray(truth.affine) @ np.append(index, 1.0))[:3]
    return world
