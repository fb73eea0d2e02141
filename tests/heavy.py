"""A TorchScript model slow enough on a CPU that a fault can be done to a job mid-run."""

from __future__ import annotations

from pathlib import Path


def heavy_model(path: Path) -> Path:
    """A deterministic 3 -> 4 class conv net with 48 hidden channels, saved at ``path``."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(48, 48, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(48, 4, 3, padding=1)).eval()
    torch.jit.script(net).save(str(path))
    return path
