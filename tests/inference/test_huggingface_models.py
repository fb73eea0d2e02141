"""``model.type: huggingface``: transformers segmentation models saved with ``save_pretrained``
(small random-weight models built from configs, offline), against transformers' own forward pass
and post-processing combined with MONAI's ``sliding_window_inference``; the safetensors and code
rules as an attacker would try them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from hf_folders import assert_job_matches
from monai.inferers import sliding_window_inference

from geoseg_pipeline.api import model_section, run_workflow
from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import load_model, probe_model
from geoseg_pipeline.spec import ModelSpec, parse_workflow

MEAN, STD, RESCALE = [0.12, 0.10, 0.08, 0.25], [0.05, 0.05, 0.06, 0.11], 1e-4
NAMES = ("water", "trees", "grass", "crops", "built")


def _save(folder: Path, model: Any, processor: Any) -> Path:
    torch.manual_seed(0)
    model.eval().save_pretrained(folder)  # safetensors by default
    processor.save_pretrained(folder)
    return folder


def segformer(folder: Path, channels: int = 4, classes: int = 5) -> Path:
    """A tiny random SegFormer (a per-pixel head: logits at 1/4 of the window)."""
    torch.manual_seed(1)
    config = transformers.SegformerConfig(num_channels=channels, num_labels=classes, hidden_sizes=[8, 16, 24, 32],
                                          num_attention_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1],
                                          decoder_hidden_size=16, id2label=dict(enumerate(NAMES[:classes])))
    model = transformers.SegformerForSemanticSegmentation(config)
    processor = transformers.SegformerImageProcessor(image_mean=MEAN[:channels], image_std=STD[:channels],
                                                     rescale_factor=RESCALE)
    return _save(folder, model, processor)


def mask2former(folder: Path, classes: int = 4) -> Path:
    """A tiny random Mask2Former (mask classification: class x mask probabilities)."""
    torch.manual_seed(2)
    backbone = transformers.SwinConfig(num_channels=3, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                       window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(backbone_config=backbone, num_labels=classes, num_queries=6,
                                            hidden_dim=32, mask_feature_size=32, feature_size=32,
                                            encoder_layers=1, decoder_layers=2, encoder_feedforward_dim=32,
                                            dim_feedforward=32, num_attention_heads=2, common_stride=4,
                                            feature_strides=[4, 8, 16, 32])
    model = transformers.Mask2FormerForUniversalSegmentation(config)
    processor = transformers.Mask2FormerImageProcessor(image_mean=MEAN[:3], image_std=STD[:3],
                                                       rescale_factor=RESCALE)
    return _save(folder, model, processor)


def reference(folder: Path, data: np.ndarray, roi: int, overlap: float) -> np.ndarray:
    """transformers' own model, normalization and post-processing per window, blended by MONAI."""
    auto = (transformers.AutoModelForUniversalSegmentation if "mask2former" in (folder / "config.json").read_text()
            else transformers.AutoModelForSemanticSegmentation)
    model = auto.from_pretrained(folder, local_files_only=True).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    mean = torch.tensor(processor.image_mean)[None, :, None, None]
    std = torch.tensor(processor.image_std)[None, :, None, None]

    def window(x: torch.Tensor) -> torch.Tensor:
        outputs = model(pixel_values=(x * processor.rescale_factor - mean) / std)
        scores = processor.post_process_semantic_segmentation(outputs, target_sizes=[(roi, roi)] * len(x),
                                                              return_segmentation_scores=True)
        return torch.stack([s["segmentation_scores"] for s in scores])

    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(data.astype(np.float32))[None], (roi, roi), 4, window,
                                       overlap=overlap, mode="gaussian")
    return np.asarray(out[0].numpy())


def _scene(write_raster: Callable[..., Path], bands: int, rows: int = 150, cols: int = 170) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    data = (rng.integers(200, 3000, (bands, rows, cols))).astype("uint16")
    return write_raster("scene.tif", data), data


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("family", ["segformer", "mask2former"])
def test_a_job_equals_transformers_and_monai(tmp_path: Path, write_raster: Callable[..., Path], family: str) -> None:
    folder = segformer(tmp_path / "model") if family == "segformer" else mask2former(tmp_path / "model")
    bands = 4 if family == "segformer" else 3
    src, data = _scene(write_raster, bands)
    wf = {
        "inputs": {"paths": [str(src)]},
        "model": model_section(str(folder)),
        "tiling": {"roi_size": 64, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "block_size": 128},
        "output": {"directory": str(tmp_path / "out"), "formats": ["cog", "logits"]},
        "resources": {"workers": 1, "backend": "local"},
    }
    assert wf["model"] == {"type": "huggingface", "path": str(folder)}  # recognised as such
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    ref = reference(folder, data, 64, 0.25)
    assert_job_matches(tmp_path / "out" / "scene", ref)
    # the class names are the model's id2label (Mask2Former's config here has transformers' LABEL_k)
    rows = (tmp_path / "out" / "scene" / "stats.csv").read_text(encoding="utf-8").splitlines()[1:]
    names = [r.split(",")[1] for r in rows]
    assert names == (list(NAMES) if family == "segformer" else [f"class_{i}" for i in range(4)])


def _spec(folder: Path, **extra: Any) -> ModelSpec:
    return ModelSpec(type="huggingface", path=folder, **extra)


def test_pickle_only_weights_are_refused_unless_trusted(tmp_path: Path) -> None:
    folder = segformer(tmp_path / "model")
    model = transformers.AutoModelForSemanticSegmentation.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # as older transformers wrote weights
    assert (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors").exists()
    with pytest.raises(ModelError, match=r"pickle only \(pytorch_model\.bin\).*trust_pickle"):
        load_model(_spec(folder), torch.device("cpu"))
    loaded = load_model(_spec(folder, trust_pickle=True), torch.device("cpu"))
    assert probe_model(loaded, 4, (32, 32), torch.device("cpu")).num_classes == 5


def test_code_shipped_with_a_model_runs_only_when_trusted(tmp_path: Path) -> None:
    folder = segformer(tmp_path / "model")
    (folder / "evil.py").write_text("raise SystemExit('ran code from the model folder')\n", encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForSemanticSegmentation": "evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelError, match=r"auto_map: AutoModelForSemanticSegmentation.*trust_code"):
        load_model(_spec(folder), torch.device("cpu"))


def test_bad_folders_get_clear_errors_before_any_data_is_read(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ModelError, match="no such folder"):
        load_model(_spec(tmp_path / "absent"), cpu)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_model(_spec(tmp_path / "empty"), cpu)
    folder = segformer(tmp_path / "model")
    no_processor = shutil.copytree(folder, tmp_path / "no_processor")
    (no_processor / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError, match=r"no preprocessor_config\.json"):
        load_model(_spec(no_processor), cpu)
    # an architecture that is not a segmentation model
    classifier = tmp_path / "classifier"
    config = transformers.ViTConfig(num_channels=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=16, image_size=32, patch_size=8, num_labels=3)
    transformers.ViTForImageClassification(config).save_pretrained(classifier)
    shutil.copy(folder / "preprocessor_config.json", classifier)
    with pytest.raises(ModelError, match=r"'vit' \(ViTForImageClassification\) is not a semantic-segmentation"):
        load_model(_spec(classifier), cpu)
    # the processor normalizes 4 channels, the workflow gives 3 bands: named in the probe
    model = load_model(_spec(folder), cpu)
    with pytest.raises(ModelError, match=r"normalizes 4 channel\(s\).*gives 3 band\(s\)"):
        probe_model(model, 3, (32, 32), cpu, source=str(folder))


def test_a_workflow_names_the_model_type_and_validates_its_keys(tmp_path: Path) -> None:
    folder = segformer(tmp_path / "model")
    spec = parse_workflow({"inputs": {"paths": ["x.tif"]}, "model": {"type": "huggingface", "path": "model"},
                           "output": {"directory": "out"}}, tmp_path)
    assert spec.model.path == folder and spec.model.source == f"Hugging Face model {folder}"
    with pytest.raises(ValueError, match="'network' is not used by type 'huggingface'"):
        ModelSpec(type="huggingface", path=folder, network="UNet")
    with pytest.raises(ValueError, match="type 'huggingface' needs 'path'"):
        ModelSpec(type="huggingface")


def test_the_workflows_normalize_is_refused_where_the_processor_normalizes(tmp_path: Path) -> None:
    """The bands would be normalized twice: by preprocessing.normalize, then by the processor."""
    folder = segformer(tmp_path / "model")
    section = {"inputs": {"paths": ["x.tif"]}, "model": {"type": "huggingface", "path": "model"},
               "preprocessing": {"normalize": {"mean": [0, 0, 0, 0], "std": [1, 1, 1, 1]}},
               "output": {"directory": "out"}}
    with pytest.raises(ValueError, match=r"preprocessing.normalize: .*preprocessor_config.json already rescales by "
                                         r"0.0001 and normalizes with mean \[0.12, .*normalized twice") as err:
        parse_workflow(section, tmp_path)
    assert str(folder) in str(err.value)
    config = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    config.update(do_rescale=False, do_normalize=False)
    (folder / "preprocessor_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert parse_workflow(section, tmp_path).preprocessing.normalize is not None  # the only normalization
    for key in ("do_rescale", "do_normalize", "rescale_factor"):  # unsaid: transformers' defaults (True)
        del config[key]
    (folder / "preprocessor_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match=r"already rescales by its default factor and normalizes with mean"):
        parse_workflow(section, tmp_path)


def test_loads_in_threads_leave_torch_and_transformers_logging_as_they_were(tmp_path: Path) -> None:
    """The local backend's workers load the model in threads of one process: from_pretrained
    patches torch's globals while it runs (torch.linspace among them), so loads at the same time
    would leave them patched for good. And transformers is quiet while the weights load (no
    progress bar and advice per actor), with the user's own verbosity and bars back after."""
    from concurrent.futures import ThreadPoolExecutor

    hf_logging = transformers.utils.logging
    folder = segformer(tmp_path / "model")
    before = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    linspace, normal = torch.linspace, torch.nn.init.normal_
    try:
        hf_logging.set_verbosity_info()
        hf_logging.enable_progress_bar()
        seen: list[int] = []
        original = transformers.AutoModelForSemanticSegmentation.from_pretrained

        def spying(*args: Any, **kwargs: Any) -> Any:
            seen.append(hf_logging.get_verbosity())
            return original(*args, **kwargs)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(transformers.AutoModelForSemanticSegmentation, "from_pretrained", spying)
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(lambda _: load_model(_spec(folder), torch.device("cpu")), range(3)))
        assert seen == [hf_logging.ERROR] * 3
        assert torch.linspace is linspace and torch.nn.init.normal_ is normal
        assert hf_logging.get_verbosity() == hf_logging.INFO
        assert hf_logging.is_progress_bar_enabled()
        with pytest.raises(ModelError, match="transformers cannot load it"):
            (folder / "model.safetensors").write_bytes(b"not safetensors")
            load_model(_spec(folder), torch.device("cpu"))
        assert hf_logging.get_verbosity() == hf_logging.INFO  # set back after a failed load too
    finally:
        hf_logging.set_verbosity(before[0])
        (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()
