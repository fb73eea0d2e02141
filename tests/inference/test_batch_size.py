"""Batch size when the workflow sets none: 8 on a CPU; on a GPU what fits in free memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geoseg_pipeline.inference.predictor import CPU_BATCH, Predictor, batch_from_memory
from geoseg_pipeline.spec import ModelSpec


@pytest.mark.parametrize(("free", "per_window", "expected"), [
    (80e9, 50e6, 256),  # capped
    (10e9, 50e6, 64),  # 0.6 * 10e9 / 50e6 = 120 -> the power of two below
    (1e9, 50e6, 8),  # 12 -> 8
    (100e6, 50e6, 1),  # 1.2 -> 1
    (10e6, 50e6, 1),  # not even one fits: one (an out-of-memory error halves nothing further)
    (1e9, 0.0, 256),  # a model that allocates nothing per window
])
def test_batch_from_memory(free: float, per_window: float, expected: int) -> None:
    assert batch_from_memory(free, per_window) == expected


def test_a_cpu_predictor_takes_the_cpu_default(tmp_path: Path) -> None:
    torch.jit.script(torch.nn.Conv2d(2, 3, 1)).save(str(tmp_path / "m.pt"))
    predictor = Predictor(ModelSpec(type="torchscript", path=tmp_path / "m.pt"), device="cpu", threads=1)
    assert predictor.batch_size(2, (32, 32)) == CPU_BATCH == 8
