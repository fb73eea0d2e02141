"""Predictor options: test-time mirroring, bf16 autocast, channels_last, compile, OOM batch halving."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg_pipeline.errors import ModelError
from geoseg_pipeline.inference.predictor import Predictor
from geoseg_pipeline.spec import InferenceSpec, ModelSpec


def _net(dims: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(2, 6, 3, padding=1), torch.nn.ReLU(), conv(6, 3, 3, padding=1)).eval()


def _predictor(tmp_path: Path, dims: int, options: InferenceSpec | None = None) -> tuple[Predictor, torch.nn.Module]:
    net = _net(dims)
    path = tmp_path / f"net{dims}.pt"
    torch.jit.script(net).save(str(path))
    return Predictor(ModelSpec(type="torchscript", path=path), device="cpu", threads=1, options=options), net


@pytest.mark.parametrize(("dims", "axes"), [(2, (0, 1)), (3, (0, 1, 2)), (3, (2,))])
def test_mirroring_averages_every_flip_combination(tmp_path: Path, dims: int, axes: tuple[int, ...]) -> None:
    options = InferenceSpec(mirror_axes=axes)
    assert len(options.flips) == 2 ** len(axes) and options.flips[0] == ()
    predictor, net = _predictor(tmp_path, dims, options)
    x = np.random.default_rng(0).normal(0, 1, (3, 2, *([12] * dims))).astype(np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        expected = torch.stack([
            torch.flip(net(torch.flip(xt, [2 + a for a in combo])), [2 + a for a in combo])
            for n in range(len(axes) + 1) for combo in itertools.combinations(axes, n)
        ]).mean(0)
        plain = net(xt)
    got = predictor.predict(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the flips did something


def test_bf16_autocast_on_cpu_is_close_and_float32(tmp_path: Path) -> None:
    exact, _ = _predictor(tmp_path, 2)
    fast, _ = _predictor(tmp_path, 2, InferenceSpec(precision="bf16"))
    x = np.random.default_rng(1).normal(0, 1, (2, 2, 16, 16)).astype(np.float32)
    a, b = exact.predict(x), fast.predict(x)
    assert b.dtype == torch.float32
    assert not torch.equal(a, b)  # really ran in bf16
    torch.testing.assert_close(b, a, atol=0.1, rtol=0.05)


def test_fp16_needs_a_gpu(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="fp16 needs a GPU"):
        _predictor(tmp_path, 2, InferenceSpec(precision="fp16"))


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_equals_contiguous(tmp_path: Path, dims: int) -> None:
    plain, _ = _predictor(tmp_path, dims)
    nhwc, _ = _predictor(tmp_path, dims, InferenceSpec(channels_last=True))
    nhwc.describe(2, (8,) * dims)
    x = np.random.default_rng(2).normal(0, 1, (2, 2, *([8] * dims))).astype(np.float32)
    torch.testing.assert_close(nhwc.predict(x), plain.predict(x), atol=1e-5, rtol=1e-5)


class _SmallMemory(torch.nn.Module):
    """Raises CUDA's out-of-memory error for batches above ``limit`` windows."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit = net, limit
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_out_of_memory_halves_the_batch_and_remembers(tmp_path: Path) -> None:
    predictor, net = _predictor(tmp_path, 2)
    predictor.model = _SmallMemory(net, limit=2)
    x = np.random.default_rng(3).normal(0, 1, (8, 2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x))
    torch.testing.assert_close(predictor.predict(x), expected)
    assert predictor.max_batch == 2
    assert predictor.model.calls == [8, 4, 2, 2, 2, 2]  # 8 fails, 4 fails, then pieces of 2
    predictor.model.calls.clear()
    predictor.predict(x)
    assert predictor.model.calls == [2, 2, 2, 2]  # the lowered size is kept
    predictor.model = _SmallMemory(net, limit=0)
    with pytest.raises(ModelError, match="out of GPU memory on a single window"):
        predictor.predict(x[:1])


@pytest.mark.slow
def test_compiled_model_equals_eager() -> None:
    spec = ModelSpec(type="builtin", name="landcover-demo")
    eager = Predictor(spec, device="cpu", threads=1)
    compiled = Predictor(spec, device="cpu", threads=1, options=InferenceSpec(compile=True))
    assert compiled.model is not eager.model
    channels = eager.describe(None, (32, 32)).in_channels
    x = np.random.default_rng(4).normal(0, 1, (2, channels, 32, 32)).astype(np.float32)
    torch.testing.assert_close(compiled.predict(x), eager.predict(x), atol=1e-4, rtol=1e-4)


def test_compile_is_skipped_for_torchscript(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    predictor, _ = _predictor(tmp_path, 2, InferenceSpec(compile=True))
    assert isinstance(predictor.model, torch.jit.ScriptModule)
    assert "ignored for a TorchScript model" in caplog.text


def test_mirror_axes_are_checked_against_the_roi(tmp_path: Path) -> None:
    from geoseg_pipeline.errors import SpecError
    from geoseg_pipeline.spec import parse_workflow

    wf = {"inputs": {"paths": ["a.tif"]}, "model": {"type": "builtin", "name": "landcover-demo"},
          "output": {"directory": "o"}, "inference": {"mirror_axes": [0, 2]}}
    with pytest.raises(SpecError) as info:
        parse_workflow(wf, tmp_path)
    assert ("inference.mirror_axes", "[0, 2] names an axis beyond the roi's 2 dims") in info.value.problems
    with pytest.raises(SpecError, match="must not repeat"):
        parse_workflow({**wf, "inference": {"mirror_axes": [1, 1]}}, tmp_path)
