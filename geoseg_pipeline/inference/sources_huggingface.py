"""Hugging Face transformers segmentation models (``model.type: huggingface``): a folder saved with
``save_pretrained`` (``config.json``, safetensors weights, ``preprocessor_config.json``), run as
a window-to-logits module like any other model.

Per window, as transformers' own pipeline does it, without its resize (the window is the roi):

1. the image processor's normalization: ``x * rescale_factor`` (``do_rescale``), then
   ``(x - image_mean) / image_std`` (``do_normalize``), per channel;
2. the forward pass;
3. the logits at the window's size, as the processor's ``post_process_semantic_segmentation``
   makes them: per-pixel heads (SegFormer, UperNet, DPT, BEiT, MobileViT: ``outputs.logits``)
   upsampled bilinearly (``align_corners=False``); mask-classification models (Mask2Former,
   MaskFormer: ``class_queries_logits`` and ``masks_queries_logits``) through the processor's own
   method, class probability times mask probability.

The window sizes a model takes (multiples of a ViT's patch size, its image size when it cannot
interpolate its position embeddings) are checked on the roi before any data is read
(:mod:`.hf_windows`). Text-prompted models (CLIPSeg) are in :mod:`.sources_clipseg`.

The blended result is argmaxed like any model's. Weights are read from safetensors only, unless
``trust_pickle: true`` allows a ``pytorch_model.bin``; code shipped with the model
(``auto_map``) runs only with ``trust_code: true``. Nothing is downloaded: every file comes from
the folder (``local_files_only``).
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError, first_line
from ..spec.model import HF_PICKLE_WEIGHTS, HF_SAFE_WEIGHTS
from ..spec.prompts import TextClasses, prompt_mismatch
from .hf_windows import WindowRule, window_rule
from .sources_checkpoint import safetensors_error

INSTALL_HINT = "pip install 'geoseg-pipeline[huggingface]'"

#: Where a folder's image processor settings are: its own file, or within the processor's.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


class ProcessorNormalization(torch.nn.Module):
    """An image processor's normalization of raw window values: ``x * rescale_factor`` (when
    ``do_rescale``), then ``(x - image_mean) / image_std`` per channel (when ``do_normalize``).

    Args:
        processor: the image processor.
        source: the folder, for messages.
    """

    def __init__(self, processor: Any, source: Path) -> None:
        super().__init__()
        self.source = source
        self.rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else None
        normalize = getattr(processor, "do_normalize", False)
        mean = torch.tensor(list(processor.image_mean), dtype=torch.float32) if normalize else None
        std = torch.tensor(list(processor.image_std), dtype=torch.float32) if normalize else None
        self.channels = None if mean is None else len(mean)
        self.mean: torch.Tensor | None
        self.std: torch.Tensor | None
        self.register_buffer("mean", None if mean is None else mean[None, :, None, None], persistent=False)
        self.register_buffer("std", None if std is None else std[None, :, None, None], persistent=False)

    def check_channels(self, channels: int) -> None:
        """Raise :class:`ModelError` when the processor normalizes another number of channels."""
        if self.channels is not None and channels != self.channels:
            raise ModelError(f"{self.source}: the image processor normalizes {self.channels} channel(s) "
                             f"(image_mean, image_std) but the workflow gives {channels} band(s)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The normalized batch."""
        self.check_channels(int(x.shape[1]))
        if self.rescale is not None:
            x = x * self.rescale
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x


class HuggingFaceSegmenter(torch.nn.Module):
    """A transformers segmentation model as ``(batch, channels, h, w)`` raw window values →
    ``(batch, classes, h, w)`` logits (see the module doc).

    Args:
        model: the transformers model, in eval mode.
        processor: its image processor (normalization and, for mask-classification models,
            post-processing).
        source: the folder, for messages.
        mask_head: a mask-classification model (built by ``AutoModelForUniversalSegmentation``).
    """

    def __init__(self, model: Any, processor: Any, source: Path, mask_head: bool = False) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.source = source
        self.normalize = ProcessorNormalization(processor, source)
        #: class x mask probabilities (Mask2Former, MaskFormer), else per-pixel logits
        self.mask_head = mask_head
        self.rule: WindowRule = window_rule(model)

    def check_window(self, in_channels: int, roi: tuple[int, ...]) -> None:
        """Raise :class:`ModelError` when the model cannot take windows of ``in_channels`` and
        ``roi`` (the processor's channels; patch size and image size, see :mod:`.hf_windows`)."""
        self.normalize.check_channels(in_channels)
        self.rule.check(roi, self.source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of windows at their own size."""
        x = self.normalize(x)
        size = tuple(int(n) for n in x.shape[2:])
        try:
            outputs = self.model(pixel_values=x, **self.rule.forward_options(size))
        except ValueError as exc:  # transformers' own checks of the input (its image size, ...)
            raise ModelError(f"{self.source}: {self.rule.name} refuses a window of {list(size)}: {exc}") from exc
        if not self.mask_head:
            logits: torch.Tensor = torch.nn.functional.interpolate(outputs.logits, size=size, mode="bilinear",
                                                                   align_corners=False)
            return logits
        try:
            scores = self.processor.post_process_semantic_segmentation(outputs, target_sizes=[size] * x.shape[0],
                                                                       return_segmentation_scores=True)
        except TypeError as exc:  # before transformers 5.20 the scores were not returned
            raise ModelError(f"{self.source}: the class scores of {type(self.model).__name__} need transformers "
                             f"5.20 or later ({exc}): {INSTALL_HINT}") from exc
        return torch.stack([s["segmentation_scores"] for s in scores])


def load_huggingface(folder: Path, *, trust_code: bool = False, trust_pickle: bool = False,
                     text: TextClasses | None = None) -> torch.nn.Module:
    """The model saved in ``folder`` as a :class:`HuggingFaceSegmenter`, or, for a text-prompted
    model (CLIPSeg), a :class:`~.sources_clipseg.TextPromptSegmenter` of the prompts ``text``.

    Raises:
        ModelError: not such a folder; weights that are pickle only without ``trust_pickle``;
            code in the folder without ``trust_code``; an architecture that is no semantic
            segmentation model; a text-prompted model without prompts, or prompts for one that
            is not; transformers missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such folder (model type huggingface takes a folder saved with "
                         "save_pretrained: config.json, model.safetensors, preprocessor_config.json)")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no config.json: not a folder saved with save_pretrained")
    safe = any((folder / name).is_file() for name in HF_SAFE_WEIGHTS)
    pickled = [name for name in HF_PICKLE_WEIGHTS if (folder / name).is_file()]
    if not safe and not pickled:
        raise ModelError(f"{folder}: no weights (model.safetensors) beside config.json")
    if not safe and not trust_pickle:
        raise ModelError(f"{folder}: its weights are pickle only ({', '.join(pickled)}); loading a pickle can run "
                         "code: convert them to safetensors (model.save_pretrained(folder)), or set "
                         "trust_pickle: true if you trust where they come from")
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise ModelError(f"{folder}: no preprocessor_config.json: the image processor's mean, std and rescale "
                         "factor are needed to feed the model as it was trained")
    config = _read_json(folder / "config.json")
    mismatch = prompt_mismatch(config.get("model_type"), text is not None)
    if mismatch is not None:
        raise ModelError(f"{folder}: {mismatch}")
    if config.get("auto_map") and not trust_code:
        raise ModelError(f"{folder}: config.json names code shipped with the model (auto_map: "
                         f"{', '.join(sorted(config['auto_map']))}); set trust_code: true if you trust it")
    try:
        transformers: Any = importlib.import_module("transformers")
    except ImportError as exc:
        raise ModelError(f"model type huggingface needs transformers: {INSTALL_HINT} ({exc})") from exc
    common: dict[str, Any] = {"local_files_only": True, "trust_remote_code": trust_code}
    with _one_load_at_a_time(transformers):
        if text is not None:
            from .sources_clipseg import load_clipseg

            return load_clipseg(transformers, folder, text, use_safetensors=safe, **common)
        auto = _auto_class(transformers, config, folder)
        try:
            model = auto.from_pretrained(folder, use_safetensors=safe, **common)
            processor = transformers.AutoImageProcessor.from_pretrained(folder, **common)
        except load_errors() as exc:
            raise cannot_load(folder, exc) from exc
    return HuggingFaceSegmenter(model.eval(), processor, folder,
                                mask_head=auto is transformers.AutoModelForUniversalSegmentation)


def load_errors() -> tuple[type[Exception], ...]:
    """What ``from_pretrained`` raises for a folder it cannot load (a damaged safetensors file:
    safetensors' own error)."""
    return (OSError, ValueError, KeyError, RuntimeError, safetensors_error())


def cannot_load(folder: Path, exc: Exception) -> ModelError:
    """The error for a folder ``from_pretrained`` failed on (the first line of its reason)."""
    return ModelError(f"{folder}: transformers cannot load it: {first_line(exc)}")


#: transformers' ``from_pretrained`` patches torch's globals while it builds a model
#: (``torch.linspace``, ``torch.nn.init``'s functions: ``meta_device_safe_creation_ops``,
#: ``no_init_weights``) and puts back what it found: two loads at once in one process (the local
#: backend's worker threads) leave them patched for good. Loads take turns.
_LOAD_LOCK = threading.Lock()


@contextmanager
def _one_load_at_a_time(transformers: Any) -> Iterator[None]:
    """Hold the process's one transformers load, quiet (no progress bar and advice about
    training per actor), with the process's own verbosity and progress bars set back after."""
    hf_logging = transformers.utils.logging
    with _LOAD_LOCK:
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()


def _auto_class(transformers: Any, config: dict[str, Any], folder: Path) -> Any:
    """The auto class that builds the folder's architecture as a semantic-segmentation model:
    ``AutoModelForSemanticSegmentation`` for per-pixel heads, ``AutoModelForUniversalSegmentation``
    for Mask2Former and MaskFormer (their semantic output)."""
    from transformers.models.auto import modeling_auto

    model_type = config.get("model_type")
    if model_type in modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES:
        return transformers.AutoModelForSemanticSegmentation
    if model_type in ("mask2former", "maskformer"):
        return transformers.AutoModelForUniversalSegmentation
    if config.get("auto_map", {}).get("AutoModelForSemanticSegmentation"):
        return transformers.AutoModelForSemanticSegmentation
    architectures = ", ".join(config.get("architectures") or []) or "no architectures listed"
    raise ModelError(f"{folder}: {model_type!r} ({architectures}) is not a semantic-segmentation model: "
                     "model type huggingface takes the models of AutoModelForSemanticSegmentation "
                     "(SegFormer, UperNet, DPT, BEiT, MobileViT, ...) and Mask2Former / MaskFormer")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot be read as JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ModelError(f"{path}: not a JSON object")
    return doc


__all__ = ["HuggingFaceSegmenter", "cannot_load", "load_errors", "load_huggingface"]
