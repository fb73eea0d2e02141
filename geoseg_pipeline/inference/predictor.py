"""A :class:`Predictor` holds one model on one device and predicts batches of windows."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from ..errors import ModelError
from ..spec import InferenceSpec, ModelSpec
from ..tasks import ModelInfo
from .loading import first_conv_in_channels, load_model, probe_model
from .onnx_model import OnnxModel

log = logging.getLogger("geoseg")

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Windows per forward pass on a CPU when the workflow sets none (what MONAI scripts use).
CPU_BATCH = 8
#: Windows of the probe batch that measures a GPU model's memory per window.
PROBE_WINDOWS = 2


def batch_from_memory(free_bytes: float, per_window_bytes: float, share: float = 0.6, cap: int = 256) -> int:
    """Windows per batch that use at most ``share`` of ``free_bytes`` at ``per_window_bytes``
    each, between 1 and ``cap`` (a power of two, so that batches stay cuDNN-friendly)."""
    if per_window_bytes <= 0:
        return cap
    fit = int(share * free_bytes // per_window_bytes)
    if fit < 1:
        return 1
    return min(cap, 1 << (fit.bit_length() - 1))


class Predictor:
    """Loads the model once; ``predict`` maps ``(n, C_in, *roi)`` to ``(n, classes, *roi)`` logits.

    Args:
        spec: which model.
        device: ``"cuda"`` / ``"cuda:0"`` / ``"cpu"``; ``None`` picks CUDA when available.
        threads: torch intra-op threads on CPU (match the actor's CPUs).
        options: precision, memory layout, compilation and test-time augmentation.

    Raises:
        ModelError: the model cannot be loaded, or ``options`` ask for what the device lacks.
    """

    def __init__(
        self, spec: ModelSpec, device: str | None = None, threads: int | None = None,
        options: InferenceSpec | None = None,
    ) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(max(int(threads), 1))
        self.spec = spec
        self.options = options or InferenceSpec()
        if self.options.precision == "fp16" and self.device.type == "cpu":
            raise ModelError("inference.precision fp16 needs a GPU actor (resources.gpus_per_worker > 0); "
                             "CPU actors support bf16 or fp32")
        self.model = load_model(spec, self.device, threads=threads)
        self._layout: torch.memory_format | None = None
        self.max_batch: int | None = None  # lowered after a CUDA out-of-memory error
        self._batch_sizes: dict[tuple[int, ...], int] = {}
        if self.options.channels_last and isinstance(self.model, torch.nn.Module):
            self._layout = torch.channels_last  # 4D; switched to channels_last_3d for 5D inputs
        if self.options.compile:
            if isinstance(self.model, torch.jit.ScriptModule):
                # torch.compile refuses TorchScript; it is already a compiled graph
                log.warning("inference.compile is ignored for a TorchScript model")
            elif isinstance(self.model, OnnxModel):
                log.warning("inference.compile is ignored for an ONNX model (onnxruntime optimizes its graph)")
            else:
                self.model = torch.compile(self.model)  # type: ignore[assignment]

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """Probe the model with one window.

        ``in_channels`` defaults to the spec's, then to the first layer's, then to ``fallback``
        (the band count of the job's first item) for models without parameters.
        """
        channels = in_channels or self.spec.in_channels or first_conv_in_channels(self.model) or fallback
        if channels is None:
            raise ModelError("cannot tell the model's input channels: set model.in_channels in the workflow")
        if self._layout is not None:
            self._set_layout(len(roi) + 2)
        return probe_model(self.model, channels, roi, self.device, source=self.spec.source)

    def _set_layout(self, ndim: int) -> None:
        self._layout = torch.channels_last_3d if ndim == 5 else torch.channels_last
        self.model = self.model.to(memory_format=self._layout)  # type: ignore[call-overload]

    def batch_size(self, channels: int, roi: tuple[int, ...]) -> int:
        """Windows per forward pass when the workflow sets none: :data:`CPU_BATCH` on a CPU; on
        a GPU as many as :func:`batch_from_memory` says fit in the free device memory, from what
        a probe batch of two windows needed (measured once per input shape)."""
        key = (channels, *roi)
        found = self._batch_sizes.get(key)
        if found is None:
            found = CPU_BATCH if self.device.type != "cuda" else self._probe_batch(channels, roi)
            self._batch_sizes[key] = found
        return found

    def _probe_batch(self, channels: int, roi: tuple[int, ...]) -> int:
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        probe = torch.zeros((PROBE_WINDOWS, channels, *roi), dtype=torch.float32, device=self.device)
        self._forward(probe)
        torch.cuda.synchronize(self.device)
        per_window = (torch.cuda.max_memory_allocated(self.device) - base) / PROBE_WINDOWS
        del probe
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(self.device)
        size = batch_from_memory(free, per_window)
        log.info("batch size %d from %.0f MiB free and %.1f MiB per window (tiling.batch_size not set)",
                 size, free / 2**20, per_window / 2**20)
        return size

    def predict(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Blended-ready logits (float32, on the model's device) for a batch of windows; the mean
        over the mirror flips when test-time augmentation is on.

        A CUDA out-of-memory error halves the batch and retries (down to one window), and the
        smaller size is kept for later batches.
        """
        x = (torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch).to(self.device, non_blocking=True)
        step = min(self.max_batch or len(x), len(x))
        parts = []
        start = 0
        while start < len(x):
            chunk = x[start : start + step]
            try:
                parts.append(self._forward(chunk))
            except torch.OutOfMemoryError:
                if step == 1:
                    raise ModelError(f"out of GPU memory on a single window of {tuple(chunk.shape)}") from None
                step = max(step // 2, 1)
                self.max_batch = step
                torch.cuda.empty_cache()
                log.warning("CUDA out of memory: batch size lowered to %d", step)
                continue
            start += len(chunk)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        flips = self.options.flips
        total: torch.Tensor | None = None
        for axes in flips:
            dims = [2 + a for a in axes]
            y = self._run(torch.flip(x, dims) if dims else x)
            if dims:
                y = torch.flip(y, dims)
            total = y if total is None else total + y
        assert total is not None
        return total / len(flips) if len(flips) > 1 else total

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self._layout is not None:
            x = x.contiguous(memory_format=self._layout)
        dtype = _AUTOCAST.get(self.options.precision)
        cast = (torch.autocast(device_type=self.device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
        with torch.inference_mode(), cast:
            y = self.model(x)
        if not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:]:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelError(f"the model returned {shape} for a batch of {tuple(x.shape)}")
        return y.float().contiguous()
