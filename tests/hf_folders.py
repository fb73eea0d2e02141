"""Small random-weight Hugging Face models saved with ``save_pretrained``, built from configs
offline, for the tests of ``model.type: huggingface`` (CLIPSeg with a tiny CLIP tokenizer, BEiT,
DPT-hybrid), and the comparison of a job's outputs with a reference."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import transformers

MEAN3, STD3, RESCALE = [0.12, 0.10, 0.08], [0.05, 0.05, 0.06], 1e-4


def tiny_clip_tokenizer() -> Any:
    """A CLIP tokenizer over the letters (each a token, and each with CLIP's end-of-word mark),
    no merges: words are spelt letter by letter."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in string.ascii_lowercase:
        vocab[letter] = len(vocab)
    for letter in string.ascii_lowercase:
        vocab[f"{letter}</w>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def clipseg(folder: Path, image_size: int = 64, patch: int = 16) -> Path:
    """A tiny random CLIPSeg saved with its CLIPSegProcessor (tokenizer and image processor)."""
    torch.manual_seed(3)
    tokenizer = tiny_clip_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 24, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
              "image_size": image_size, "patch_size": patch}
    config = transformers.CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=8,
                                        extract_layers=[1, 2], reduce_dim=8, decoder_num_attention_heads=2,
                                        decoder_intermediate_size=16)
    transformers.CLIPSegForImageSegmentation(config).eval().save_pretrained(folder)
    images = transformers.ViTImageProcessorPil(size={"height": image_size, "width": image_size}, image_mean=MEAN3,
                                            image_std=STD3, rescale_factor=RESCALE)
    transformers.CLIPSegProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def beit(folder: Path, image_size: int = 32, patch: int = 8, classes: int = 3) -> Path:
    """A tiny random BEiT semantic-segmentation model (a ViT: patches, position embeddings)."""
    torch.manual_seed(4)
    config = transformers.BeitConfig(image_size=image_size, patch_size=patch, num_channels=3, hidden_size=16,
                                     num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                                     out_indices=[1, 2, 3, 4], use_absolute_position_embeddings=True,
                                     use_relative_position_bias=True, pool_scales=[1, 2], num_labels=classes,
                                     auxiliary_channels=8, channels=8, use_auxiliary_head=False)
    transformers.BeitForSemanticSegmentation(config).eval().save_pretrained(folder)
    transformers.BeitImageProcessorPil(image_mean=MEAN3, image_std=STD3, rescale_factor=RESCALE,
                                    do_reduce_labels=False).save_pretrained(folder)
    return folder


def dpt_hybrid(folder: Path, image_size: int = 32, classes: int = 3) -> Path:
    """A tiny random DPT-hybrid (a BiT backbone, then a ViT whose position embeddings are fixed
    for ``image_size``: transformers cannot interpolate them for this model)."""
    torch.manual_seed(5)
    bit = transformers.BitConfig(embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 1, 1], num_groups=4,
                                 layer_type="bottleneck", out_features=["stage1", "stage2", "stage3"],
                                 global_padding="same")
    config = transformers.DPTConfig(is_hybrid=True, backbone_config=bit, image_size=image_size, patch_size=16,
                                    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                                    backbone_out_indices=[0, 1], neck_hidden_sizes=[8, 16], fusion_hidden_size=8,
                                    readout_type="project", reassemble_factors=[1, 1],
                                    backbone_featmap_shape=[1, 32, 2, 2], head_in_index=-1, num_labels=classes,
                                    use_auxiliary_head=False)
    transformers.DPTForSemanticSegmentation(config).eval().save_pretrained(folder)
    transformers.DPTImageProcessorPil(image_mean=MEAN3, image_std=STD3,
                                      rescale_factor=RESCALE).save_pretrained(folder)
    return folder


def assert_job_matches(item_dir: Path, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Assert that a job's blended logits (``logits.tif``) equal ``ref`` to 1e-4 (relative to
    its largest magnitude above 1) and its labels its argmax on at least 99.99 % of pixels, on a
    map of more than one class; returns the logits and the labels."""
    with rasterio.open(item_dir / "logits.tif") as ds:
        logits = ds.read()
    with rasterio.open(item_dir / "labels.tif") as ds:
        labels = ds.read(1)
    assert logits.shape == ref.shape
    assert np.abs(logits - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert (labels == ref.argmax(axis=0)).mean() >= 0.9999
    assert len(np.unique(labels)) > 1  # not a constant map: the comparison means something
    return logits, labels


def upernet_convnext(folder: Path, classes: int = 3) -> Path:
    """A tiny random UperNet on a ConvNeXt backbone (a stem and downsamplings with kernel =
    stride: a total stride of 4 x 2 x 2 x 2 = 32)."""
    torch.manual_seed(6)
    backbone = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                           out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_channels=8,
                                        pool_scales=[1, 2], num_labels=classes, use_auxiliary_head=False)
    transformers.UperNetForSemanticSegmentation(config).eval().save_pretrained(folder)
    transformers.SegformerImageProcessorPil(image_mean=MEAN3, image_std=STD3,
                                            rescale_factor=RESCALE).save_pretrained(folder)
    return folder
