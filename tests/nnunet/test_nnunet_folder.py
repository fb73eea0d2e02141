"""A trained model folder is read and checked before any data is read; the fold ensemble runs
each window as nnU-Net's predictor does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from nnunet_folders import write_model_folder

from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.nnunet.folder import is_nnunet_folder, read_model_folder
from geoseg_pipeline.nnunet.network import load_ensemble, read_checkpoint


def test_folds_default_to_every_fold_present(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path, folds=(0, 1, 3))
    model = read_model_folder(folder)
    assert model.folds == ("0", "1", "3") and model.configuration == "3d_fullres" and model.trainer == "nnUNetTrainer"
    assert read_model_folder(folder, folds=("1",)).folds == ("1",)
    assert is_nnunet_folder(folder) and not is_nnunet_folder(tmp_path)
    assert model.roi_size == (16, 32, 32) and model.label_names == ("background", "organ", "lesion")


def test_the_ensemble_is_nnunets_mirrored_mean_of_the_folds(tmp_path: Path) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    folder = write_model_folder(tmp_path, folds=(0, 1))
    p = nnUNetPredictor(perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                        allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(folder), use_folds=None)
    x = torch.randn(2, 1, 16, 32, 32)
    expected = torch.zeros(2, 3, 16, 32, 32)
    for params in p.list_of_parameters:
        p.network.load_state_dict(params)
        expected += p._internal_maybe_mirror_and_predict(x)
    expected /= 2
    ensemble = load_ensemble(read_model_folder(folder), torch.device("cpu"))
    assert ensemble.mirror_axes == (0, 1, 2)
    with torch.inference_mode():
        got = ensemble(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    plain = load_ensemble(read_model_folder(folder, mirroring=False), torch.device("cpu"))
    assert plain.mirror_axes == ()


def test_a_2d_configuration_runs_slices(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path, configuration_name="2d", patch=(32, 32), spacing=(0.8, 0.8),
                                mirror_axes=(0, 1))
    model = read_model_folder(folder)
    assert model.is_2d and model.roi_size == (1, 32, 32)
    ensemble = load_ensemble(model, torch.device("cpu"))
    with torch.inference_mode():
        y = ensemble(torch.randn(3, 1, 1, 32, 32))
    assert tuple(y.shape) == (3, 3, 1, 32, 32)


def test_old_plans_without_architecture_are_rebuilt(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    del config["architecture"]
    config.update({"UNet_class_name": "PlainConvUNet", "UNet_base_num_features": 4, "unet_max_num_features": 16,
                   "n_conv_per_stage_encoder": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1],
                   "conv_kernel_sizes": [[3, 3, 3]] * 3, "pool_op_kernel_sizes": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                   "num_pool_per_axis": [2, 2, 2]})
    (folder / "plans.json").write_text(json.dumps(plans))
    ensemble = load_ensemble(read_model_folder(folder), torch.device("cpu"))  # the same weights load
    assert len(ensemble.folds) == 1


def test_checkpoints_load_as_data_only(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path)
    ckpt = read_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    assert ckpt["trainer_name"] == "nnUNetTrainer"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("code ran",))

    torch.save({"network_weights": {}, "x": Evil()}, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ModelError, match="not readable as a checkpoint of tensors"):
        read_checkpoint(folder / "fold_0" / "checkpoint_final.pth")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the checkpoint file is empty"),
    (b"\x00garbage" * 40, r"not a PyTorch checkpoint \(not a torch.save archive"),
    ("truncated", r"not a PyTorch checkpoint \(not a torch.save archive: damaged or truncated"),
])
def test_a_damaged_fold_checkpoint_is_named_without_torch_s_advice(tmp_path: Path, content: bytes | str,
                                                                     message: str) -> None:
    """torch's own message for these advises weights_only=False: unsafe, and no help for a file
    that is not a checkpoint at all."""
    folder = write_model_folder(tmp_path)
    path = folder / "fold_0" / "checkpoint_final.pth"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content == "truncated" else content)
    with pytest.raises(ModelError, match=message) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and "weights_only" not in str(info.value)


def _folder_problem(tmp_path: Path, change: str) -> Path:
    folder = write_model_folder(tmp_path, folds=(0, 1))
    if change == "no plans":
        (folder / "plans.json").unlink()
    elif change == "no dataset":
        (folder / "dataset.json").unlink()
    elif change == "no checkpoint":
        (folder / "fold_1" / "checkpoint_final.pth").unlink()
    elif change == "cascade":
        plans = json.loads((folder / "plans.json").read_text())
        plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
        (folder / "plans.json").write_text(json.dumps(plans))
        folder = folder.rename(folder.with_name("nnUNetTrainer__nnUNetPlans__3d_cascade_fullres"))
    elif change == "unknown configuration":
        folder = folder.rename(folder.with_name("nnUNetTrainer__nnUNetPlans__3d_lowres"))
    elif change == "no configurations":
        plans = json.loads((folder / "plans.json").read_text())
        del plans["configurations"]
        (folder / "plans.json").write_text(json.dumps(plans))
    elif change == "channels":
        dataset = json.loads((folder / "dataset.json").read_text())
        dataset["channel_names"] = {"0": "CT", "1": "T1"}
        (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


@pytest.mark.parametrize(("change", "message"), [
    ("no plans", "plans.json is missing"),
    ("no dataset", "dataset.json is missing"),
    ("no checkpoint", "fold 1 has no checkpoint_final.pth"),
    ("cascade", "is a cascade stage"),
    ("unknown configuration", "configuration '3d_lowres' does not exist"),
    ("no configurations", r"does not exist in plans.json \(it has no configurations: is it an nnU-Net v2"),
    ("channels", "normalization scheme"),
])
def test_a_folder_nnunet_could_not_run_is_refused_with_the_reason(tmp_path: Path, change: str, message: str) -> None:
    folder = _folder_problem(tmp_path, change)
    with pytest.raises(ModelError, match=message):
        read_model_folder(folder, folds=("0", "1") if change == "no checkpoint" else None)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "a")
    other = write_model_folder(tmp_path / "b", )
    plans = json.loads((other / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32]
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match=r"do not fit .*PlainConvUNet"):
        load_ensemble(read_model_folder(folder), torch.device("cpu"))
    shutil.rmtree(other)


def test_classes_outside_trusted_modules_need_trust_code(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="trust_code"):
        load_ensemble(read_model_folder(folder), torch.device("cpu"))


def test_a_checkpoint_saved_by_nnunets_own_trainer_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnUNetTrainer.save_checkpoint after a real optimizer step (optimizer state, training log
    with numpy scalars, init_args with the plans and a torch.device): read as data only."""
    import numpy as np

    folder = write_model_folder(tmp_path / "m", seed=5)
    plans = json.loads((folder / "plans.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text())
    pre = tmp_path / "pre" / "Dataset999_Test" / "nnUNetPlans_x"
    pre.mkdir(parents=True)
    (pre / "case.b2nd").touch()  # the trainer infers its dataset class from the preprocessed folder
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    trainer = trainer_module.nnUNetTrainer({**plans, "continue_training": False}, "3d_fullres", 0, dataset,
                                           device=torch.device("cpu"))
    trainer.initialize()
    out = trainer.network(torch.randn(2, 1, 16, 32, 32))
    (out[0] if isinstance(out, (list, tuple)) else out).mean().backward()
    trainer.optimizer.step()
    trainer._best_ema = np.float64(0.25)
    trainer.inference_allowed_mirroring_axes = (0, 1, 2)
    trainer.save_checkpoint(str(folder / "fold_0" / "checkpoint_final.pth"))
    ckpt = read_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    assert ckpt["init_args"]["configuration"] == "3d_fullres" and ckpt["optimizer_state"]["state"]
    ensemble = load_ensemble(read_model_folder(folder), torch.device("cpu"))
    assert ensemble.mirror_axes == (0, 1, 2)
    trainer.network.eval()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.inference_mode():
        theirs = trainer.network(x)
        theirs = theirs[0] if isinstance(theirs, (list, tuple)) else theirs
        mine = ensemble.folds[0](x)
    torch.testing.assert_close(mine, theirs)


def test_without_the_nnunet_extra_the_model_is_refused_with_the_install_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    folder = write_model_folder(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(ModelError, match=r"need skimage: pip install 'geoseg-pipeline\[nnunet\]'"):
        load_ensemble(read_model_folder(folder), torch.device("cpu"))
