"""Blend weights: MONAI's importance map, so the blend equals ``sliding_window_inference``."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def importance_map(roi: tuple[int, ...], mode: str, sigma_scale: float = 0.125) -> torch.Tensor:
    """Per-pixel weight of a window's prediction, ``roi``-shaped float32.

    ``constant`` gives ones; ``gaussian`` a separable gaussian with sigma ``sigma_scale * roi``,
    clamped below at its minimum or 1e-3, exactly as MONAI's ``compute_importance_map``;
    ``nnunet`` (``nnunet2d``: a 2D patch one slice deep) nnU-Net's (:func:`nnunet_gaussian`).
    """
    if mode == "constant":
        return torch.ones(roi, dtype=torch.float32)
    if mode in ("nnunet", "nnunet2d"):
        return nnunet_gaussian(roi, sigma_scale, two_d=mode == "nnunet2d")
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


def nnunet_gaussian(roi: tuple[int, ...], sigma_scale: float = 0.125, two_d: bool = False) -> torch.Tensor:
    """nnU-Net v2's ``compute_gaussian``: a unit impulse at ``roi // 2`` smoothed by scipy's
    ``gaussian_filter`` (sigma ``sigma_scale * roi``, constant border), scaled to a maximum of 10,
    held in half precision, zeros raised to the smallest nonzero value; returned as float32.
    With ``two_d`` the first axis (one slice) is left out of the filter."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    tile = roi[1:] if two_d else roi
    tmp = np.zeros(tile)
    tmp[tuple(i // 2 for i in tile)] = 1
    g = gaussian_filter(tmp, [i * sigma_scale for i in tile], 0, mode="constant", cval=0)
    g /= np.max(g) / 10
    half = torch.from_numpy(g).to(torch.float16)
    zero = half == 0
    if zero.any():
        half[zero] = torch.min(half[~zero])
    out = half.to(torch.float32)
    return out[None] if two_d else out
