"""Blend weights: MONAI's importance map, so the blend equals ``sliding_window_inference``."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def importance_map(roi: tuple[int, ...], mode: str, sigma_scale: float = 0.125) -> torch.Tensor:
    """Per-pixel weight of a window's prediction, ``roi``-shaped float32.

    ``constant`` gives ones; ``gaussian`` a separable gaussian with sigma ``sigma_scale * roi``,
    clamped below at its minimum or 1e-3, exactly as MONAI's ``compute_importance_map``.
    """
    if mode == "constant":
        return torch.ones(roi, dtype=torch.float32)
    if mode != "gaussian":
        raise ValueError(f"blend must be 'constant' or 'gaussian', got {mode!r}")
    weights = torch.ones(())
    for i, n in enumerate(roi):
        sigma = n * sigma_scale
        x = torch.arange(start=-(n - 1) / 2.0, end=(n - 1) / 2.0 + 1, dtype=torch.float)
        x = torch.exp(x**2 / (-2 * sigma**2))
        weights = weights.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    floor = max(torch.min(weights).item(), 1e-3)
    return torch.clamp_(weights.to(torch.float), min=floor)
