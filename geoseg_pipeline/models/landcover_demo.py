"""A tiny land-cover segmentation net for the synthetic demo scenes.

The network is trained by ``scripts/train_landcover_demo.py`` on scenes from
:func:`geoseg_pipeline.demo.scenes.write_landcover_scene` and ships as a plain ``state_dict``
in ``landcover_demo.pt`` next to this module. It takes the stored band values (uint16
reflectance x 10000, cast to float32) in the band order of
:data:`geoseg_pipeline.demo.scenes.LANDCOVER_BANDS` and returns one logit per class of
:data:`geoseg_pipeline.demo.scenes.LANDCOVER_CLASS_NAMES`. Nodata pixels get meaningless logits;
mask them downstream.
"""

from pathlib import Path
from typing import Final

import torch
from torch import nn

__all__ = ["IN_CHANNELS", "NUM_CLASSES", "WEIGHTS_PATH", "LandcoverDemoNet", "load_landcover_demo"]

IN_CHANNELS: Final = 4
"""Input bands: blue, green, red, NIR."""

NUM_CLASSES: Final = 4
"""Output classes: water, vegetation, bare soil, built-up."""

WEIGHTS_PATH: Final = Path(__file__).with_name("landcover_demo.pt")
"""The bundled trained ``state_dict``."""

REFLECTANCE_SCALE: Final = 10000.0
"""Stored value of a surface reflectance of 1."""

# Per-band statistics of valid reflectance over the training scenes (blue, green, red, NIR).
_BAND_MEAN: Final = (0.084, 0.103, 0.107, 0.189)
_BAND_STD: Final = (0.033, 0.033, 0.059, 0.107)


class LandcoverDemoNet(nn.Module):
    """Fully convolutional net: four 3x3 convolutions (4 -> hidden -> hidden -> hidden -> 4).

    The receptive field is 9 x 9 pixels and the output has the input's height and width for
    any size (edges use replicate padding). Inputs are normalised inside the network, so
    callers pass the raw stored values.

    Args:
        hidden: Channels of the hidden layers.
    """

    band_mean: torch.Tensor
    band_std: torch.Tensor

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.reflectance_scale = REFLECTANCE_SCALE
        self.register_buffer("band_mean", torch.tensor(_BAND_MEAN).view(1, IN_CHANNELS, 1, 1))
        self.register_buffer("band_std", torch.tensor(_BAND_STD).view(1, IN_CHANNELS, 1, 1))
        self.body = nn.Sequential(
            _conv(IN_CHANNELS, hidden),
            nn.ReLU(),
            _conv(hidden, hidden),
            nn.ReLU(),
            _conv(hidden, hidden),
            nn.ReLU(),
            _conv(hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, NUM_CLASSES, H, W)`` for stored values ``(B, IN_CHANNELS, H, W)``."""
        scaled = (x / self.reflectance_scale - self.band_mean) / self.band_std
        logits: torch.Tensor = self.body(scaled)
        return logits


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="replicate")


def load_landcover_demo() -> LandcoverDemoNet:
    """Build :class:`LandcoverDemoNet`, load the bundled weights on the CPU and set eval mode.

    Raises:
        FileNotFoundError: If the bundled weights file is missing (a broken install); the
            message names the file and how to regenerate it.
    """
    if not WEIGHTS_PATH.is_file():
        raise FileNotFoundError(
            f"landcover demo weights not found at {WEIGHTS_PATH}; "
            "reinstall the package or run scripts/train_landcover_demo.py"
        )
    net = LandcoverDemoNet()
    state = torch.load(WEIGHTS_PATH, weights_only=True, map_location="cpu")
    net.load_state_dict(state)
    return net.eval()
