"""Text-prompted classes: the classes of a model that takes them as text (CLIPSeg).

The workflow's classes carry the prompts, in label order::

    classes:
      - {name: background, threshold: 0.4}
      - {name: water, prompt: "a river or a lake"}
      - {name: trees, prompt: "forest"}

Each prompted class's logits are the model's output for its prompt. The background class, when
one class has a ``threshold`` instead of a prompt, has the constant logit
``log(threshold / (1 - threshold))``: in a window, a pixel is background exactly where every
prompt's probability (the sigmoid of its logit) is below ``threshold``; across overlapping
windows the blended logits are compared with that constant.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from .base import Frozen
from .classes import ClassSpec

#: ``config.json`` model types whose classes are text prompts.
TEXT_PROMPTED_TYPES = ("clipseg",)


class TextClasses(Frozen):
    """The classes of a text-prompted model in label order: each a prompt, or ``None`` for the
    background class (at most one), whose logit is the constant :attr:`background_logit`."""

    prompts: Annotated[tuple[str | None, ...], Field(min_length=1)]
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None

    @model_validator(mode="after")
    def _one_background(self) -> TextClasses:
        texts = [p for p in self.prompts if p is not None]
        if not texts:
            raise ValueError("a text-prompted model needs at least one prompt (classes[].prompt); the list is empty")
        if len(self.prompts) - len(texts) > 1:
            raise ValueError("at most one class may be the background (threshold)")
        if (len(texts) < len(self.prompts)) != (self.threshold is not None):
            raise ValueError("the background class (prompt null) and threshold go together")
        return self

    @property
    def texts(self) -> tuple[str, ...]:
        """The prompts without the background, in label order."""
        return tuple(p for p in self.prompts if p is not None)

    @property
    def background(self) -> int | None:
        """The background's label value, if there is one."""
        return next((i for i, p in enumerate(self.prompts) if p is None), None)

    @property
    def background_logit(self) -> float | None:
        """``log(t / (1 - t))``: the logit whose sigmoid is the threshold."""
        t = self.threshold
        return None if t is None else math.log(t / (1.0 - t))


def is_prompted(classes: tuple[ClassSpec, ...] | None) -> bool:
    """Whether any class carries a prompt or a background threshold."""
    return any(c.prompt is not None or c.threshold is not None for c in classes or ())


def text_classes(classes: tuple[ClassSpec, ...] | None) -> TextClasses | None:
    """The prompts of ``classes``, or ``None`` when no class carries one (see :func:`prompt_problems`)."""
    if classes is None or not is_prompted(classes):
        return None
    threshold = next((c.threshold for c in classes if c.threshold is not None), None)
    return TextClasses(prompts=tuple(c.prompt for c in classes), threshold=threshold)


def prompt_problems(classes: tuple[ClassSpec, ...] | None, model_type: str | None) -> list[tuple[str, str]]:
    """Problems of a class list that carries prompts, as ``(field path, message)``."""
    if classes is None or not is_prompted(classes):
        return []
    problems = [(f"classes[{i}]", f"{c.name!r} has no prompt: with text-prompted classes, each class has a "
                                  "prompt, or one is the background (threshold)")
                for i, c in enumerate(classes) if c.prompt is None and c.threshold is None]
    backgrounds = [i for i, c in enumerate(classes) if c.threshold is not None]
    if len(backgrounds) > 1:
        problems.append(("classes", f"classes {backgrounds} each have a threshold: at most one is the background"))
    if len(backgrounds) == len(classes):
        problems.append(("classes", "a text-prompted model needs at least one prompt (classes[].prompt); "
                                    "only a background threshold is given"))
    if model_type is not None and model_type != "huggingface":
        problems.append(("classes", f"prompts need a text-prompted model (type huggingface: a CLIPSeg folder); "
                                    f"model type {model_type!r} takes none"))
    return problems


def prompt_mismatch(model_type: str | None, prompted: bool) -> str | None:
    """Why a model of ``config.json``'s ``model_type`` cannot run with (``prompted``) or without
    prompts, or ``None`` when it can."""
    if model_type in TEXT_PROMPTED_TYPES and not prompted:
        return (f"{model_type!r} is a text-prompted model: list the classes with a prompt each "
                "(classes: [{name: water, prompt: water}, ...]; geoseg predict --classes)")
    if prompted and model_type not in TEXT_PROMPTED_TYPES:
        return (f"{model_type!r} is not a text-prompted model (its classes are its own): remove the classes' "
                f"prompts and threshold; text-prompted models: {', '.join(TEXT_PROMPTED_TYPES)}")
    return None


def pretrained_model_type(folder: Path) -> str | None:
    """``config.json``'s ``model_type`` in a ``save_pretrained`` folder, if it can be read."""
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


__all__ = ["TEXT_PROMPTED_TYPES", "TextClasses", "is_prompted", "pretrained_model_type", "prompt_mismatch",
           "prompt_problems", "text_classes"]
