"""Preprocessing and export reproduce nnU-Net's own functions exactly (nnunetv2 is the reference)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nnunet_folders import BREAST, write_ct_volume, write_model_folder

from geoseg_pipeline.nnunet.export import export_slabs
from geoseg_pipeline.nnunet.folder import read_model_folder
from geoseg_pipeline.nnunet.preprocess import preprocess_case


def _nnunet(folder: Path):  # type: ignore[no-untyped-def]
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    p = nnUNetPredictor(perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                        allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(folder), use_folds=None)
    return p


def _mine(path: Path, folder: Path):  # type: ignore[no-untyped-def]
    model = read_model_folder(folder)
    img = nib.load(path)
    data = np.asarray(img.dataobj, np.float32)[None].transpose(0, 3, 2, 1)
    return model, *preprocess_case(data, img.header.get_zooms()[:3][::-1], model)


def _export_equals_nnunets(p, props, model, geometry, seed: int, slab_bytes: int = 300_000) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Random half-precision logits exported by geoseg (in small slabs) and by nnU-Net's
    ``convert_predicted_logits_to_segmentation_with_correct_shape``: equal; returns geoseg's."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(0, 2, (model.heads, *geometry.preprocessed_shape)).astype(np.float16))
    seg = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, p.plans_manager, p.configuration_manager, p.label_manager, props)
    out = np.concatenate([labels for _, labels in export_slabs(logits.numpy(), geometry, model, slab_bytes)])
    np.testing.assert_array_equal(out.transpose(model.transpose_backward), np.asarray(seg))
    return out


CASES = {
    # CT normalization with the dataset's percentiles, isotropic-ish target, crop of the air
    "ct": dict(schemes=("CTNormalization",), spacing=(2.0, 1.0, 1.0)),
    # MR z-score inside the nonzero mask, transposed axes, an anisotropic target (separate z)
    "mr_mask_transposed": dict(schemes=("ZScoreNormalization",), mask_for_norm=(True,), spacing=(3.0, 0.6, 0.6),
                               transpose_forward=(2, 0, 1)),
    # z-score over the whole crop, no resampling along z
    "mr_plain": dict(schemes=("ZScoreNormalization",), spacing=(2.1, 0.9, 0.9)),
    "rescale": dict(schemes=("RescaleTo01Normalization",), spacing=(1.0, 1.0, 1.0)),
    "nonorm_2d": dict(schemes=("NoNormalization",), configuration_name="2d", patch=(32, 32), spacing=(0.8, 0.8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("volume", ["breast", "ct"])
def test_preprocessing_and_export_equal_nnunet(case: str, volume: str, tmp_path: Path) -> None:
    path = BREAST if volume == "breast" else write_ct_volume(tmp_path / "ct_0000.nii.gz")
    folder = write_model_folder(tmp_path / "m", **CASES[case])  # type: ignore[arg-type]
    p = _nnunet(folder)
    pp = p.configuration_manager.preprocessor_class(verbose=False)
    ref, _, props = pp.run_case([str(path)], None, p.plans_manager, p.configuration_manager, p.dataset_json)
    model, mine, geometry = _mine(path, folder)
    assert mine.shape == ref.shape
    np.testing.assert_array_equal(mine, ref)
    assert [list(b) for b in geometry.bbox] == [list(b) for b in props["bbox_used_for_cropping"]]
    # the export of the same half-precision logits, streamed in small slabs, equals nnU-Net's
    _export_equals_nnunets(p, props, model, geometry, seed=1)


def test_a_region_model_exports_regions_in_class_order(tmp_path: Path) -> None:
    labels = {"background": 0, "whole": [1, 2], "core": 2}
    folder = write_model_folder(tmp_path / "m", labels=labels, regions_class_order=[1, 2])
    p = _nnunet(folder)
    model, _, geometry = _mine(BREAST, folder)
    assert model.heads == 2 and model.num_classes == 3 and model.label_names == ("background", "whole", "core")
    pp = p.configuration_manager.preprocessor_class(verbose=False)
    _, _, props = pp.run_case([str(BREAST)], None, p.plans_manager, p.configuration_manager, p.dataset_json)
    out = _export_equals_nnunets(p, props, model, geometry, seed=2)
    assert set(np.unique(out)) == {0, 1, 2}


def test_a_no_resampling_plan_keeps_the_spacing(tmp_path: Path) -> None:
    import json

    folder = write_model_folder(tmp_path / "m", schemes=("ZScoreNormalization",), spacing=(1.0, 1.0, 1.0))
    plans = json.loads((folder / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    for which in ("data", "seg", "probabilities"):
        config[f"resampling_fn_{which}"] = "no_resampling_hack"
        config[f"resampling_fn_{which}_kwargs"] = {}
    (folder / "plans.json").write_text(json.dumps(plans))
    p = _nnunet(folder)
    pp = p.configuration_manager.preprocessor_class(verbose=False)
    ref, _, props = pp.run_case([str(BREAST)], None, p.plans_manager, p.configuration_manager, p.dataset_json)
    model, mine, geometry = _mine(BREAST, folder)
    np.testing.assert_array_equal(mine, ref)
    assert geometry.preprocessed_shape == geometry.shape_after_cropping
    _export_equals_nnunets(p, props, model, geometry, seed=3)
