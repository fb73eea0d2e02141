"""What window sizes a Hugging Face transformers model takes (``model.type: huggingface``).

Two limits of vision transformers, checked on the roi before any data is read:

- **patches**: a ViT cuts the window into ``patch_size`` x ``patch_size`` patches with a strided
  convolution, which drops the pixels of a last, partial patch; its logits, upsampled to the
  window, would then be shifted. BEiT, Data2Vec-vision and DPT (and DINOv2 / ViT backbones of
  UperNet or DPT) therefore need every roi size to be a multiple of ``patch_size``; a ConvNeXt
  backbone (UperNet), whose stem and downsamplings are strided convolutions too, a multiple of its
  total stride (``patch_size`` x 2 per later stage: 32). Another roi is an error naming that
  number (not padded: the windows are the roi, and the blend expects logits of exactly the
  window). SegFormer (overlapping, padded patch embeddings), MobileViT (which resizes to its
  patches), Swin backbones and Mask2Former / MaskFormer on Swin pad internally and take any roi
  (their logits are upsampled).
- **position embeddings**: they are learnt for ``image_size``. BEiT and Data2Vec-vision
  interpolate them for another window when asked (``interpolate_pos_encoding=True``, which geoseg
  passes when the roi differs from ``image_size``); DPT resizes them always; DPT-hybrid cannot:
  its roi must be ``image_size``, and another one is an error naming it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError

#: Model types (theirs or their backbone's) whose patch embedding is a strided convolution.
PATCH_TYPES = ("beit", "data2vec-vision", "dpt", "dinov2", "dinov2_with_registers", "vit")
#: Backbone types whose stem and downsamplings are strided convolutions (kernel = stride).
STRIDE_TYPES = ("convnext", "convnextv2")


@dataclass(frozen=True)
class WindowRule:
    """The window sizes a model takes.

    Attributes:
        name: the model type, for messages.
        patch: every roi size must be a multiple of it (``None``: any size).
        reason: why, for messages (default: ViT patches of ``patch``).
        image_size: the size its position embeddings were learnt for (``None``: none).
        fixed: the roi must be ``image_size`` (its position embeddings cannot be interpolated).
        interpolate: pass ``interpolate_pos_encoding=True`` for a roi other than ``image_size``.
    """

    name: str
    patch: int | None = None
    reason: str | None = None
    image_size: tuple[int, int] | None = None
    fixed: bool = False
    interpolate: bool = False

    def check(self, roi: tuple[int, ...], source: Path) -> None:
        """Raise :class:`ModelError` naming the model's requirement when it cannot take ``roi``."""
        if len(roi) != 2:
            raise ModelError(f"{source}: {self.name} is a 2D model but tiling.roi_size {list(roi)} is "
                             f"{len(roi)}D")
        if self.fixed and self.image_size is not None and tuple(roi) != self.image_size:
            raise ModelError(f"{source}: {self.name} takes windows of its image size {list(self.image_size)} only "
                             "(image_size in config.json; transformers cannot interpolate its position embeddings "
                             f"for another size): set tiling.roi_size to {list(self.image_size)}, got {list(roi)}")
        if self.patch is not None and any(n % self.patch for n in roi):
            lower = [max(self.patch, n // self.patch * self.patch) for n in roi]
            upper = [-(-n // self.patch) * self.patch for n in roi]
            reason = self.reason or f"cuts windows into {self.patch}x{self.patch} patches (patch_size in config.json)"
            raise ModelError(f"{source}: {self.name} {reason}: every tiling.roi_size must be a multiple of "
                             f"{self.patch}, got {list(roi)}; for example {lower} or {upper}")

    def forward_options(self, size: tuple[int, ...]) -> dict[str, Any]:
        """The extra keyword arguments of the forward pass for a window of ``size``."""
        if self.interpolate and self.image_size is not None and tuple(size) != self.image_size:
            return {"interpolate_pos_encoding": True}
        return {}


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    return None


def window_rule(model: Any) -> WindowRule:
    """The :class:`WindowRule` of a loaded transformers model, from its config and its forward's
    signature."""
    config = model.config
    name = str(getattr(config, "model_type", type(model).__name__))
    backbone: Any = getattr(config, "backbone_config", None)
    if getattr(backbone, "model_type", None) in STRIDE_TYPES:
        stem, stages = int(backbone.patch_size), int(backbone.num_stages)
        return WindowRule(name, patch=stem * 2 ** (stages - 1),
                          reason=f"on {backbone.model_type} has a total stride of {stem * 2 ** (stages - 1)} "
                                 f"(patch_size {stem}, then {stages - 1} downsamplings by 2)")
    patched = config if name in PATCH_TYPES else backbone if getattr(backbone, "model_type", None) in PATCH_TYPES \
        else None
    if patched is None:
        return WindowRule(name)
    patch = _pair(getattr(patched, "patch_size", None))
    image_size = _pair(getattr(patched, "image_size", None))
    if getattr(config, "is_hybrid", False):  # DPT-hybrid: a fixed grid of position embeddings
        return WindowRule(name, patch=None, image_size=_pair(config.image_size), fixed=True)
    accepts = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
    return WindowRule(name, patch=None if patch is None else patch[0] if patch[0] == patch[1] else max(patch),
                      image_size=image_size, interpolate=accepts)


__all__ = ["PATCH_TYPES", "STRIDE_TYPES", "WindowRule", "window_rule"]
