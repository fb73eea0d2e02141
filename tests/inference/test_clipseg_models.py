"""Text-prompted classes (CLIPSeg): a small random-weight CLIPSeg with a tiny CLIP tokenizer,
built offline, against transformers' own processor and forward pass per window and prompt,
blended by MONAI's ``sliding_window_inference``; the background threshold; prompts and models that
do not fit each other."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
import yaml
from hf_folders import assert_job_matches, clipseg
from monai.inferers import sliding_window_inference
from test_huggingface_models import segformer

from geoseg_pipeline.api import model_section, run_workflow
from geoseg_pipeline.cli import main
from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.loading import load_model, probe_model
from geoseg_pipeline.spec import ModelSpec, parse_workflow
from geoseg_pipeline.spec.prompts import TextClasses

PROMPTS = ("water", "forest", "bare soil")
CPU = torch.device("cpu")


def reference(folder: Path, data: np.ndarray, roi: int, overlap: float,
              background: tuple[int, float] | None = None) -> np.ndarray:
    """transformers' CLIPSeg per window and prompt (its processor tokenizes and normalizes, its
    forward pass), the window resized to the model's image size and the logits back, blended by
    MONAI; ``background``: (label, threshold) of a constant class."""
    model = transformers.CLIPSegForImageSegmentation.from_pretrained(folder, local_files_only=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    size = model.config.vision_config.image_size

    def window(x: torch.Tensor) -> torch.Tensor:
        if roi != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                                antialias=True)
        out = []
        for image in x:
            inputs = processor(text=list(PROMPTS), images=[image.numpy()] * len(PROMPTS), do_resize=False,
                               padding=True, return_tensors="pt", input_data_format="channels_first")
            logits = model(**inputs).logits[None]  # (1, prompts, size, size)
            out.append(torch.nn.functional.interpolate(logits, size=(roi, roi), mode="bilinear",
                                                       align_corners=False)[0])
        logits = torch.stack(out)
        if background is not None:
            label, t = background
            constant = torch.full_like(logits[:, :1], math.log(t / (1 - t)))
            logits = torch.cat([logits[:, :label], constant, logits[:, label:]], dim=1)
        return logits

    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(data.astype(np.float32))[None], (roi, roi), 4, window,
                                       overlap=overlap, mode="gaussian")
    return np.asarray(out[0].numpy())


def _workflow(tmp_path: Path, src: Path, folder: Path, roi: int, classes: list[dict[str, Any]],
              backend: str = "local") -> dict[str, Any]:
    return {
        "inputs": {"paths": [str(src)]},
        "model": model_section(str(folder)),
        "tiling": {"roi_size": roi, "overlap": 0.25, "blend": "gaussian", "batch_size": 4, "block_size": 128},
        "output": {"directory": str(tmp_path / "out"), "formats": ["cog", "logits"]},
        "resources": {"workers": 1, "backend": backend},
        "classes": classes,
    }


# a roi resized to the model's 64 and back, or the model's own size; on a Ray actor too
@pytest.mark.parametrize(("roi", "backend"), [(48, "local"), (64, "local"), (48, "ray")])
def test_a_job_of_prompts_equals_transformers_and_monai(tmp_path: Path, write_raster: Callable[..., Path],
                                                        request: pytest.FixtureRequest, roi: int,
                                                        backend: str) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_local")
    folder = clipseg(tmp_path / "clipseg", image_size=64)
    data = np.random.default_rng(11).integers(200, 3000, (3, 120, 140)).astype("uint16")
    src = write_raster("scene.tif", data)
    prompted = reference(folder, data, roi, 0.25)
    # a threshold that leaves some pixels to the background and some to the prompts
    threshold = float(1 / (1 + np.exp(-np.quantile(prompted.max(axis=0), 0.3))))
    classes = [{"name": "background", "threshold": threshold}] + [{"name": p.replace(" ", "_"), "prompt": p}
                                                                  for p in PROMPTS]
    wf = _workflow(tmp_path, src, folder, roi, classes, backend)
    assert wf["model"] == {"type": "huggingface", "path": str(folder)}
    result = run_workflow(parse_workflow(wf, tmp_path), progress=False)
    assert result.ok, result.outcomes
    ref = reference(folder, data, roi, 0.25, background=(0, threshold))
    logits, labels = assert_job_matches(tmp_path / "out" / "scene", ref)
    assert logits.shape == (4, 120, 140)
    assert 0.1 < (labels == 0).mean() < 0.9 and len(np.unique(labels)) > 2  # background and prompts both win
    # in one window the background is where every prompt's probability is below the threshold
    assert np.array_equal(labels == 0, (1 / (1 + np.exp(-logits[1:].astype(np.float64)))).max(axis=0) < threshold)
    rows = (tmp_path / "out" / "scene" / "stats.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["background", "water", "forest", "bare_soil"]


def test_the_prompts_are_embedded_once_when_the_model_loads(tmp_path: Path) -> None:
    folder = clipseg(tmp_path / "clipseg")
    text = TextClasses(prompts=("water", None, "forest"), threshold=0.25)
    model = load_model(ModelSpec(type="huggingface", path=folder, text_classes=text), CPU)
    assert tuple(model.embeddings.shape) == (2, 8)  # one embedding per prompt, none for the background
    clip = transformers.CLIPSegForImageSegmentation.from_pretrained(folder, local_files_only=True).eval()
    tokens = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)(
        text=["water", "forest"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = clip.get_conditional_embeddings(batch_size=2, input_ids=tokens["input_ids"],
                                                   attention_mask=tokens["attention_mask"])
    assert torch.allclose(model.embeddings, expected, atol=1e-6)
    info = probe_model(model, 3, (40, 56), CPU)  # any 2D window: resized to the model's image size
    assert info.num_classes == 3
    with torch.no_grad():
        y = model(torch.full((1, 3, 40, 56), 1000.0))
    assert torch.all(y[:, 1] == math.log(0.25 / 0.75))  # the background: the threshold's logit


def test_prompts_and_models_that_do_not_fit_are_refused_before_any_data_is_read(tmp_path: Path) -> None:
    folder = clipseg(tmp_path / "clipseg")
    with pytest.raises(ModelError, match=r"'clipseg' is a text-prompted model: list the classes with a prompt"):
        load_model(ModelSpec(type="huggingface", path=folder), CPU)
    per_pixel = segformer(tmp_path / "segformer")
    with pytest.raises(ModelError, match=r"'segformer' is not a text-prompted model.*remove the classes' prompts"):
        load_model(ModelSpec(type="huggingface", path=per_pixel, text_classes=TextClasses(prompts=("water",))), CPU)
    long = "a" * 30  # 30 letters, one token each: more than the text encoder's 24 positions
    with pytest.raises(ModelError, match=r"the prompt 'a{30}' is longer than the text encoder takes \(24 tokens"):
        load_model(ModelSpec(type="huggingface", path=folder, text_classes=TextClasses(prompts=(long,))), CPU)
    with pytest.raises(ModelError, match=r"normalizes 3 channel\(s\).*gives 4 band\(s\)"):
        probe_model(load_model(ModelSpec(type="huggingface", path=folder,
                                         text_classes=TextClasses(prompts=("water",))), CPU), 4, (64, 64), CPU)


def test_geoseg_predict_takes_the_prompts_as_classes(tmp_path: Path, write_raster: Callable[..., Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = clipseg(tmp_path / "clipseg")
    scene = write_raster("scene.tif", np.random.default_rng(2).integers(200, 3000, (3, 70, 80)).astype("uint16"))
    out = tmp_path / "out"
    argv = ["--no-progress", "predict", str(scene), "--model", str(folder), "--out", str(out), "--roi-size", "64",
            "--workers", "1"]
    assert main([*argv, "--classes", "water=a river or a lake,forest", "--background-threshold", "0.5"]) == 0
    rows = (out / "scene" / "stats.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["background", "water", "forest"]
    assert "1 item(s) done, 0 failed" in capsys.readouterr().out
    assert main(argv) == 2  # no prompts: refused before anything runs
    assert "a text-prompted model (CLIPSeg) needs its classes as prompts" in capsys.readouterr().err


def test_geoseg_validate_checks_the_prompts_against_the_folder(tmp_path: Path, write_raster: Callable[..., Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    scene = write_raster("scene.tif", np.ones((3, 16, 16), dtype="uint16"))
    prompted = [{"name": "water", "prompt": "water"}]
    for folder, classes, problem in [
        (clipseg(tmp_path / "clipseg"), None, "'clipseg' is a text-prompted model: list the classes with a prompt"),
        (segformer(tmp_path / "segformer"), prompted, "'segformer' is not a text-prompted model"),
        (tmp_path / "clipseg", prompted, None),
    ]:
        wf = {"inputs": {"paths": [str(scene)]}, "model": {"type": "huggingface", "path": str(folder)},
              "output": {"directory": str(tmp_path / "out")}, **({"classes": classes} if classes else {})}
        (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf), encoding="utf-8")
        assert main(["validate", str(tmp_path / "wf.yaml")]) == (0 if problem is None else 2)
        captured = capsys.readouterr()
        assert problem is None or f"  classes: {folder}: {problem}" in captured.err
