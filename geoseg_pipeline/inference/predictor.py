"""A :class:`Predictor` holds one model on one device and predicts batches of windows."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ModelError
from ..spec import ModelSpec
from ..tasks import ModelInfo
from .loading import first_conv_in_channels, load_model, probe_model


class Predictor:
    """Loads the model once; ``predict`` maps ``(n, C_in, *roi)`` to ``(n, classes, *roi)`` logits.

    Args:
        spec: which model.
        device: ``"cuda"`` / ``"cuda:0"`` / ``"cpu"``; ``None`` picks CUDA when available.
        threads: torch intra-op threads on CPU (match the actor's CPUs).
    """

    def __init__(self, spec: ModelSpec, device: str | None = None, threads: int | None = None) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(max(int(threads), 1))
        self.spec = spec
        self.model = load_model(spec, self.device)

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """Probe the model with one window.

        ``in_channels`` defaults to the spec's, then to the first layer's, then to ``fallback``
        (the band count of the job's first item) for models without parameters.
        """
        channels = in_channels or self.spec.in_channels or first_conv_in_channels(self.model) or fallback
        if channels is None:
            raise ModelError("cannot tell the model's input channels: set model.in_channels in the workflow")
        return probe_model(self.model, channels, roi, self.device)

    def predict(self, batch: np.ndarray) -> torch.Tensor:
        """Logits (float32, on CPU... or the model's device) for a batch of windows."""
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        with torch.inference_mode():
            y = self.model(x)
        if not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:]:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelError(f"the model returned {shape} for a batch of {tuple(x.shape)}")
        return y.float()
