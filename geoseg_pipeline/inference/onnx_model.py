"""ONNX models through onnxruntime, called like a torch module (optional extra ``[onnx]``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError, first_line

log = logging.getLogger("geoseg")

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _onnxruntime() -> Any:
    try:
        import onnxruntime  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ModelError("type 'onnx' needs onnxruntime: pip install geoseg-pipeline[onnx] "
                         "(or onnxruntime-gpu for GPU actors)") from None
    return onnxruntime


def _static(dim: Any) -> int | None:
    """A fixed dimension, or None for a symbolic one (``"batch"``, ``None``)."""
    return dim if isinstance(dim, int) and dim > 0 else None


def _providers(ort: Any, device: torch.device, path: Path) -> list[Any]:
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        log.warning("%s: this onnxruntime has no CUDA provider (install onnxruntime-gpu); the model runs on the "
                    "CPU of a GPU actor", path)
    return ["CPUExecutionProvider"]


class OnnxModel(torch.nn.Module):
    """An ONNX file run by onnxruntime: ``(n, C, *roi)`` float tensors in, the first output
    (``(n, classes, *roi)``) out as float32 on the input's device.

    The model must have exactly one input of rank 4 (rasters) or 5 (volumes); its fixed
    dimensions are checked against the workflow by :meth:`check_window` before any data is
    read. A fixed batch dimension is honoured by running the windows in chunks of that size.

    Args:
        path: the ``.onnx`` file.
        device: a ``cuda`` device uses onnxruntime's CUDA provider when it has one.
        threads: onnxruntime intra-op threads (the actor's CPUs); ``None``: its default.

    Raises:
        ModelError: onnxruntime missing, the file missing or not ONNX, more than one input,
            an input of another rank or element type.
    """

    def __init__(self, path: Path, device: torch.device, threads: int | None = None) -> None:
        super().__init__()
        ort = _onnxruntime()
        if not path.is_file():
            raise ModelError(f"{path}: ONNX model file not found")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads = max(int(threads), 1)
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=_providers(ort, device, path))
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise ModelError(f"{path}: not a readable ONNX model: {first_line(exc)}") from None
        self.path = path
        self.providers: list[str] = list(session.get_providers())
        self.input_shape, self._input_name, self._dtype = self._check_input(session.get_inputs())
        outputs = session.get_outputs()
        out_shape = outputs[0].shape
        if out_shape is not None and len(out_shape) != len(self.input_shape):
            raise ModelError(f"{path}: the ONNX model's output {outputs[0].name!r} has rank {len(out_shape)} "
                             f"{list(out_shape)}; expected (n, classes, *roi), rank {len(self.input_shape)}")
        if len(outputs) > 1:
            log.info("%s: the ONNX model has %d outputs; using the first, %r", path, len(outputs), outputs[0].name)
        self._output_name = outputs[0].name
        self._session = session

    def _check_input(self, inputs: list[Any]) -> tuple[tuple[int | None, ...], str, Any]:
        described = ", ".join(f"{i.name} {list(i.shape or [])} {i.type}" for i in inputs)
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: the ONNX model has {len(inputs)} inputs ({described}); geoseg feeds "
                             "exactly one, a float tensor (n, channels, *roi)")
        (inp,) = inputs
        shape = tuple(_static(d) for d in (inp.shape or []))
        if len(shape) not in (4, 5):
            raise ModelError(f"{self.path}: the ONNX model's input {described} has rank {len(shape)}; geoseg feeds "
                             "(n, channels, rows, cols) or (n, channels, i, j, k): rank 4 or 5")
        if inp.type not in _DTYPES:
            raise ModelError(f"{self.path}: the ONNX model's input {described} is not a float tensor")
        return shape, str(inp.name), _DTYPES[inp.type]

    @property
    def in_channels(self) -> int | None:
        """The input's channel count when the file fixes it."""
        return self.input_shape[1]

    def check_window(self, in_channels: int, roi: tuple[int, ...]) -> None:
        """Refuse windows of ``in_channels`` x ``roi`` that the input's fixed dimensions forbid.

        Raises:
            ModelError: naming the file and both numbers.
        """
        if len(self.input_shape) != len(roi) + 2:
            raise ModelError(f"{self.path}: the ONNX model takes {len(self.input_shape) - 2}D windows "
                             f"(input rank {len(self.input_shape)}) but tiling.roi_size {list(roi)} is {len(roi)}D")
        if self.in_channels is not None and self.in_channels != in_channels:
            raise ModelError(f"{self.path}: the ONNX model takes {self.in_channels} input channel(s) but the "
                             f"workflow gives {in_channels} (model.in_channels / preprocessing.bands)")
        fixed = self.input_shape[2:]
        if any(f is not None and f != r for f, r in zip(fixed, roi, strict=True)):
            shown = ["any" if f is None else f for f in fixed]
            raise ModelError(f"{self.path}: the ONNX model takes windows of {shown} (fixed in the file) but "
                             f"tiling.roi_size is {list(roi)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy().astype(self._dtype, copy=False)
        n = array.shape[0]
        chunk = self.input_shape[0] or n
        results = []
        for start in range(0, n, chunk):
            part = array[start:start + chunk]
            if len(part) < chunk:  # a fixed batch size: pad the last chunk with zeros
                part = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), part.dtype)])
            try:
                (y,) = self._session.run([self._output_name], {self._input_name: part})
            except Exception as exc:  # onnxruntime's errors derive from Exception only
                raise ModelError(f"{self.path}: onnxruntime failed on a batch of {list(part.shape)}: "
                                 f"{first_line(exc)}") from None
            results.append(np.asarray(y)[: min(chunk, n - start)])
        out = results[0] if len(results) == 1 else np.concatenate(results)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, input={list(self.input_shape)}, providers={self.providers}"
