"""Text-prompted segmentation models (CLIPSeg, ``CLIPSegForImageSegmentation``): the classes are
text prompts (the workflow's ``classes[].prompt``, see :mod:`geoseg_pipeline.spec.prompts`).

A folder saved with ``save_pretrained`` together with its ``CLIPSegProcessor`` (the tokenizer
and the image processor). The prompts are tokenized and embedded by CLIPSeg's text encoder once,
when the model is loaded. Per window, as transformers' usage of CLIPSeg does it:

1. the window resized to the model's image size (``vision_config.image_size``, 352 for the
   published CLIPSeg; what its processor resizes to): bilinear, antialiased when shrinking, as
   PIL's and torchvision's resize; nothing is resampled when the roi is that size;
2. the image processor's normalization (rescale, mean, std);
3. CLIPSeg's vision encoder once per window, then its decoder once per prompt (conditioned on
   that prompt's embedding), each giving one map of logits at the image size: what CLIPSeg's
   forward pass gives for the window and the prompt, without running the encoder again for each
   prompt;
4. the logits resized bilinearly (``align_corners=False``) back to the window, stacked in the
   classes' order, the background class (if any) the constant ``log(t / (1 - t))`` of its
   ``threshold`` ``t``.

The result is blended and argmaxed like any model's logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from ..spec.prompts import TextClasses
from .sources_huggingface import ProcessorNormalization, cannot_load, load_errors


class TextPromptSegmenter(torch.nn.Module):
    """CLIPSeg as ``(batch, channels, h, w)`` raw window values → ``(batch, classes, h, w)``
    logits, one class per prompt (see the module doc).

    Args:
        model: the ``CLIPSegForImageSegmentation``, in eval mode.
        processor: its ``CLIPSegProcessor`` (tokenizer and image processor).
        text: the prompts, in label order, and the background's threshold.
        source: the folder, for messages.

    Raises:
        ModelError: a prompt longer than the text encoder's positions.
    """

    def __init__(self, model: Any, processor: Any, text: TextClasses, source: Path) -> None:
        super().__init__()
        self.model = model
        self.source = source
        self.text = text
        self.normalize = ProcessorNormalization(processor.image_processor, source)
        self.size = int(model.config.vision_config.image_size)
        self.embeddings: torch.Tensor
        self.register_buffer("embeddings", self._embed(model, processor.tokenizer, text.texts), persistent=False)

    def _embed(self, model: Any, tokenizer: Any, prompts: tuple[str, ...]) -> torch.Tensor:
        tokens = tokenizer(list(prompts), padding=True, return_tensors="pt")
        limit = int(model.config.text_config.max_position_embeddings)
        if tokens["input_ids"].shape[1] > limit:
            longest = max(prompts, key=lambda p: len(tokenizer(p)["input_ids"]))
            raise ModelError(f"{self.source}: the prompt {longest!r} is longer than the text encoder takes "
                             f"({limit} tokens with its start and end)")
        with torch.no_grad():
            embeddings: torch.Tensor = model.get_conditional_embeddings(
                batch_size=len(prompts), input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return embeddings.detach().clone().float()

    def check_window(self, in_channels: int, roi: tuple[int, ...]) -> None:
        """Raise :class:`ModelError` when the image processor normalizes another number of
        channels than ``in_channels``, or ``roi`` is not 2D (any 2D size is resized)."""
        self.normalize.check_channels(in_channels)
        if len(roi) != 2:
            raise ModelError(f"{self.source}: CLIPSeg is a 2D model but tiling.roi_size {list(roi)} is {len(roi)}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of windows at their own size, one channel per class."""
        self.normalize.check_channels(int(x.shape[1]))
        window = (int(x.shape[2]), int(x.shape[3]))
        if window != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                                antialias=True)
        logits = self._prompt_logits(self.normalize(x))
        if window != (self.size, self.size):
            logits = torch.nn.functional.interpolate(logits, size=window, mode="bilinear", align_corners=False)
        background = self.text.background
        if background is None:
            return logits
        constant = torch.full_like(logits[:, :1], float(self.text.background_logit or 0.0))
        return torch.cat([logits[:, :background], constant, logits[:, background:]], dim=1)

    def _prompt_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, prompts, size, size)`` logits of normalized windows at the image size: the
        steps of ``CLIPSegForImageSegmentation.forward``, its vision encoder run once per window."""
        model = self.model
        count, prompts = int(x.shape[0]), int(self.embeddings.shape[0])
        vision = model.clip.get_image_features(pixel_values=x, interpolate_pos_encoding=True,
                                               output_hidden_states=True)
        # hidden_states[0] is the embeddings: layer i's output is i + 1
        activations = [vision.hidden_states[i + 1].repeat_interleave(prompts, dim=0) for i in model.extract_layers]
        decoded = model.decoder(activations, self.embeddings.repeat(count, 1))
        logits: torch.Tensor = decoded.logits.reshape(count, prompts, self.size, self.size)
        return logits


def load_clipseg(transformers: Any, folder: Path, text: TextClasses, **options: Any) -> TextPromptSegmenter:
    """The CLIPSeg model and processor saved in ``folder``, with ``text``'s prompts embedded;
    ``options`` go to ``from_pretrained`` (``local_files_only``, ``use_safetensors``, ...).

    Raises:
        ModelError: transformers cannot load the model, its processor or its tokenizer; a prompt
            too long for the text encoder.
    """
    processor_options = {k: v for k, v in options.items() if k != "use_safetensors"}
    try:
        model = transformers.CLIPSegForImageSegmentation.from_pretrained(folder, **options)
        processor = transformers.AutoProcessor.from_pretrained(folder, **processor_options)
    except load_errors() as exc:
        raise cannot_load(folder, exc) from exc
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise ModelError(f"{folder}: no CLIPSegProcessor (a tokenizer and an image processor) saved beside the "
                         "model: save one with processor.save_pretrained(folder)")
    return TextPromptSegmenter(model.eval(), processor, text, folder)


__all__ = ["TextPromptSegmenter", "load_clipseg"]
