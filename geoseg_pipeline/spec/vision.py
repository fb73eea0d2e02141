"""What the workflow can check of the vision model types before any library is imported.

``smp``: a segmentation_models_pytorch architecture by name, its constructor ``args`` and a
state-dict ``checkpoint``. segmentation_models_pytorch fetches an encoder's pretrained weights
from the network when the network is built with ``encoder_weights`` set (and its default is
``"imagenet"``), which workers cannot do and need not do: the checkpoint holds every weight. So
``encoder_weights`` must be null or absent (geoseg then builds the network with ``None``).

``torchgeo``: a TorchGeo task checkpoint (Lightning ``.ckpt``); everything is read from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The types of this family and what each needs (see ``ModelSpec``).
VISION_FIELDS: dict[str, tuple[str, ...]] = {
    "smp": ("architecture", "args", "checkpoint", "trust_pickle"),
    "torchgeo": ("checkpoint", "trust_pickle"),
}
VISION_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "smp": (("architecture", "a segmentation_models_pytorch class, for example Unet or DeepLabV3Plus"),
            ("checkpoint", "the state dict file; an untrained network predicts noise")),
    "torchgeo": (("checkpoint", "the Lightning .ckpt of a TorchGeo SemanticSegmentationTask"),),
}


def smp_problems(architecture: str | None, args: dict[str, Any] | None, in_channels: int | None,
                 num_classes: int | None) -> list[str]:
    """Problems of an ``smp`` model section: a name that is no class name, ``encoder_weights``
    that would be downloaded, ``args`` channels or classes that disagree with ``in_channels`` /
    ``num_classes``."""
    problems: list[str] = []
    if architecture is not None and not architecture.removeprefix("segmentation_models_pytorch.").isidentifier():
        problems.append(f"architecture must be a class name of segmentation_models_pytorch (for example Unet), "
                        f"got {architecture!r}")
    args = args or {}
    weights = args.get("encoder_weights")
    if weights is not None:
        problems.append(f"args.encoder_weights is {weights!r}: segmentation_models_pytorch would download these "
                        "weights from the network when it builds the model; set encoder_weights: null (the "
                        "checkpoint holds every weight, the encoder's too)")
    for key, declared, name in (("in_channels", in_channels, "in_channels"), ("classes", num_classes, "num_classes")):
        if declared is not None and key in args and args[key] != declared:
            problems.append(f"args.{key} is {args[key]!r} but model.{name} is {declared}")
    return problems


def processor_normalization_problem(folder: str | Path) -> str | None:
    """Why ``preprocessing.normalize`` must not be set for the Hugging Face model in ``folder``:
    its image processor (``preprocessor_config.json``, or ``processor_config.json``'s
    ``image_processor``) rescales or normalizes each window already, so the bands would be
    normalized twice. transformers' image processors rescale unless ``do_rescale`` is false, and
    normalize where ``do_normalize`` says so (or, unsaid, where they have an ``image_mean``).
    ``None`` when it does neither, or when no file can be read (the model's own check names
    that when it loads)."""
    processor: Any = None
    for name in ("preprocessor_config.json", "processor_config.json"):
        config = Path(folder) / name
        try:
            processor = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if name == "processor_config.json" and isinstance(processor, dict):
            processor = processor.get("image_processor")
        break
    if not isinstance(processor, dict):
        return None
    steps = []
    if processor.get("do_rescale", True):
        steps.append(f"rescales by {processor.get('rescale_factor', 'its default factor')}")
    if processor.get("do_normalize", "image_mean" in processor):
        steps.append(f"normalizes with mean {processor.get('image_mean', '(its default)')} and std "
                     f"{processor.get('image_std', '(its default)')}")
    if not steps:
        return None
    return (f"{config} already {' and '.join(steps)}: each window would be normalized twice; remove "
            "preprocessing.normalize (or set do_rescale/do_normalize false in the processor if the model "
            "was trained on the workflow's normalization)")
