"""A tiny liver and liver-tumour segmentation net for the synthetic CT phantoms.

The network is trained by ``scripts/train_ct_demo.py`` on phantoms from
:func:`geoseg_pipeline.demo.phantoms.write_ct_phantom` and ships as a plain ``state_dict`` in
``ct_demo.pt`` next to this module. It takes the stored voxel values in Hounsfield units (the
int16 NIfTI data as float32, one channel, axes in the phantom's ``(L, P, S)`` voxel order with
thin in-plane and thick axial voxels, about 0.7 to 1.4 mm and 2 to 5 mm) and returns one logit
per class of :data:`geoseg_pipeline.demo.phantoms.CT_CLASS_NAMES` (background, liver, tumour).

The CT window is part of the model: inputs are clipped to ``[-150, 250]`` HU (a soft-tissue
window) and scaled to ``[0, 1]`` inside :meth:`CtDemoNet.forward`, so callers pass raw HU and
must not normalise.
"""

from pathlib import Path
from typing import Final

import torch
from torch import nn
from torch.nn import functional

__all__ = ["HU_WINDOW", "IN_CHANNELS", "NUM_CLASSES", "WEIGHTS_PATH", "CtDemoNet", "load_ct_demo"]

IN_CHANNELS: Final = 1
"""Input channels: CT attenuation in HU."""

NUM_CLASSES: Final = 3
"""Output classes: background, liver, tumour."""

WEIGHTS_PATH: Final = Path(__file__).with_name("ct_demo.pt")
"""The bundled trained ``state_dict``."""

HU_WINDOW: Final = (-150.0, 250.0)
"""The soft-tissue window ``(low, high)`` in HU applied inside the model."""


class CtDemoNet(nn.Module):
    """A small two-level 3D U-Net with additive skips for ``(B, 1, X, Y, Z)`` HU volumes.

    :meth:`forward` first applies the CT window :data:`HU_WINDOW` (clip, then scale to
    ``[0, 1]``), so callers pass raw HU. The encoder max-pools the two in-plane axes, then all
    three, so the coarsest level sees roughly isotropic voxels of CT with thick slices. Blocks
    (3x3x3 convolution, batch norm, ReLU): one in and one out at full resolution, two in and one
    out at the middle level, four at the coarsest (dilations 1, 2, 4, 1); coarser features are
    upsampled (nearest), projected (1x1x1) and added to the finer level's. About 117 000
    parameters (under 0.5 MB). Inputs of any size work: they are padded (replicate) up to
    multiples of ``(4, 4, 2)`` and the logits cropped back, so the output has the input's
    spatial size.

    Args:
        width: Channels of the finest level (doubled per level).
    """

    hu_low: float
    hu_high: float

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.hu_low, self.hu_high = HU_WINDOW
        wide, widest = 2 * width, 4 * width
        self.encode0 = _block(IN_CHANNELS, width)
        self.encode1 = nn.Sequential(_block(width, wide), _block(wide, wide))
        self.bottom = nn.Sequential(
            _block(wide, widest),
            _block(widest, widest, dilation=2),
            _block(widest, widest, dilation=4),
            _block(widest, widest),
        )
        self.project1 = nn.Conv3d(widest, wide, kernel_size=1)
        self.decode1 = _block(wide, wide)
        self.project0 = nn.Conv3d(wide, width, kernel_size=1)
        self.decode0 = _block(width, width)
        self.head = nn.Conv3d(width, NUM_CLASSES, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, NUM_CLASSES, X, Y, Z)`` for HU values ``(B, IN_CHANNELS, X, Y, Z)``."""
        size_x, size_y, size_z = x.shape[2], x.shape[3], x.shape[4]
        scaled = (x.clamp(self.hu_low, self.hu_high) - self.hu_low) / (self.hu_high - self.hu_low)
        pad = [0, (-size_z) % 2, 0, (-size_y) % 4, 0, (-size_x) % 4]
        padded = functional.pad(scaled, pad, mode="replicate")
        fine = self.encode0(padded)
        middle = self.encode1(functional.max_pool3d(fine, kernel_size=(2, 2, 1)))
        coarse = self.bottom(functional.max_pool3d(middle, kernel_size=2))
        middle = self.decode1(middle + self.project1(functional.interpolate(coarse, scale_factor=2.0, mode="nearest")))
        up = functional.interpolate(middle, scale_factor=(2.0, 2.0, 1.0), mode="nearest")
        fine = self.decode0(fine + self.project0(up))
        logits: torch.Tensor = self.head(fine)
        return logits[:, :, :size_x, :size_y, :size_z]


def _block(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """3x3x3 convolution (same size), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


def load_ct_demo() -> CtDemoNet:
    """Build :class:`CtDemoNet`, load the bundled weights on the CPU and set eval mode.

    Raises:
        FileNotFoundError: If the bundled weights file is missing (a broken install); the
            message names the file and how to regenerate it.
    """
    if not WEIGHTS_PATH.is_file():
        raise FileNotFoundError(
            f"CT demo weights not found at {WEIGHTS_PATH}; reinstall the package or run scripts/train_ct_demo.py"
        )
    net = CtDemoNet()
    state = torch.load(WEIGHTS_PATH, weights_only=True, map_location="cpu")
    net.load_state_dict(state)
    return net.eval()
