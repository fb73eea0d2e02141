"""Generated inputs of volume_bench.py: NIfTI phantom volumes, the 3D UNet, MONAI's window counts.

The volumes are written slab by slab (never whole in memory), so a 512³ one costs one pass of
disk writes. Pure numpy + nibabel (for the header); torch and monai only for the model.
"""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROI = 96
#: the default volume shapes of a full run
FULL_SIZES = ("256x256x128", "512x512x512")
CLASSES = 3
#: voxel sizes (mm) along i, j, k and the orientation of the generated volumes: LPS-like axes
#: (i to the left, j posterior, k superior), anisotropic, shifted origin; a non-identity affine.
SPACING = (0.8, 0.8, 1.5)
AFFINE = np.array(
    [
        [-SPACING[0], 0.0, 0.0, 102.4],
        [0.0, -SPACING[1], 0.0, 110.0],
        [0.0, 0.0, SPACING[2], -95.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
#: (lattice spacing in voxels, amplitude) of the smooth noise octaves
OCTAVES = ((48, 1.0), (16, 0.5), (6, 0.25))
GZIP_LEVEL = 1  # nibabel's own default for .nii.gz
SLAB_BYTES = 32 * 1024 * 1024


# ------------------------------------------------------------------------------------------
# MONAI's sliding-window grid (window counts without importing monai)
# ------------------------------------------------------------------------------------------


def axis_window_count(n: int, roi: int, overlap: float) -> int:
    """Windows along one axis, as ``monai.data.utils.dense_patch_slices`` with MONAI's interval."""
    n = max(n, roi)  # smaller images are padded to the roi
    interval = roi if n == roi else max(int(roi * (1 - overlap)), 1)
    num = math.ceil(n / interval)
    return next((d + 1 for d in range(num) if d * interval + roi >= n), 1)


def window_count(shape: Sequence[int], roi: int = ROI, overlap: float = 0.25) -> int:
    """Windows MONAI's ``sliding_window_inference`` runs over a volume of ``shape``."""
    return math.prod(axis_window_count(n, roi, overlap) for n in shape)


def parse_size(text: str) -> tuple[int, int, int]:
    """``"256x256x128"`` or ``"512"`` (a cube) -> ``(i, j, k)``."""
    parts = [p for p in text.lower().replace(",", "x").split("x") if p]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"a size is IxJxK or N, got {text!r}") from None
    if len(dims) == 1:
        dims *= 3
    if len(dims) != 3 or min(dims) < 8:
        raise ValueError(f"a size is three numbers >= 8 (IxJxK) or one (a cube), got {text!r}")
    return (dims[0], dims[1], dims[2])


def size_label(shape: Sequence[int]) -> str:
    """``(256, 256, 128)`` -> ``"256x256x128"``."""
    return "x".join(str(n) for n in shape)


# ------------------------------------------------------------------------------------------
# The phantom: a body ellipsoid with smooth texture, float32 "z-scored MR-like" intensities
# ------------------------------------------------------------------------------------------


def _tent_weights(n: int, spacing: int) -> np.ndarray:
    """``(n, L)`` interpolation weights from lattice nodes to voxels (smoothstep, 2 nodes each)."""
    pos = (np.arange(n, dtype=np.float64) + 0.5) / spacing
    lo = np.floor(pos).astype(np.int64)
    f = pos - lo
    f = f * f * (3.0 - 2.0 * f)
    w = np.zeros((n, n // spacing + 2), dtype=np.float32)
    w[np.arange(n), lo] = 1.0 - f
    w[np.arange(n), lo + 1] = f
    return w


class Phantom:
    """A seamless smooth random volume, generated slab by slab along ``k`` (the slowest axis on
    disk): separable interpolation of coarse random lattices plus an ellipsoidal body."""

    def __init__(self, shape: tuple[int, int, int], seed: int) -> None:
        self.shape = shape
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.octaves = []
        for spacing, amp in OCTAVES:
            lattice = rng.standard_normal(tuple(n // spacing + 2 for n in shape)).astype(np.float32)
            weights = [_tent_weights(n, spacing) for n in shape]
            self.octaves.append((amp, lattice, weights))

    def slab(self, k0: int, k1: int) -> np.ndarray:
        """float32 values of ``[:, :, k0:k1]``."""
        ni, nj, _ = self.shape
        out = np.zeros((ni, nj, k1 - k0), dtype=np.float32)
        for amp, lattice, (wi, wj, wk) in self.octaves:
            t = np.einsum("abc,kc->abk", lattice, wk[k0:k1], optimize=True)  # (Li, Lj, nk)
            t = np.einsum("abk,jb->ajk", t, wj, optimize=True)  # (Li, nj, nk)
            out += amp * np.einsum("ajk,ia->ijk", t, wi, optimize=True)
        # body: an ellipsoid touching ~90 % of each axis (40 % of the volume); air outside
        ci, cj, ck = ((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1 for n in self.shape)
        r2 = (ci[:, None, None] / 0.95) ** 2 + (cj[None, :, None] / 0.85) ** 2 + (ck[None, None, k0:k1] / 0.95) ** 2
        out += np.where(r2 <= 1.0, 1.0, -2.0).astype(np.float32)
        for k in range(k0, k1):  # seeded per plane: the volume does not depend on the slab size
            rng = np.random.default_rng([self.seed, k])
            out[:, :, k - k0] += rng.standard_normal((ni, nj), dtype=np.float32) * 0.05
        return out


def write_volume(path: Path, shape: tuple[int, int, int], seed: int) -> float:
    """Write a float32 NIfTI-1 volume (``.nii``, or ``.nii.gz`` at gzip level 1) of ``shape``
    with :data:`AFFINE` (sform and qform code 1), slab by slab; returns the seconds it took."""
    import nibabel as nib

    t0 = time.perf_counter()
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(AFFINE, 1)
    hdr.set_sform(AFFINE, 1)
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_data_offset(352)  # no extensions
    hdr["descrip"] = b"geoseg volume_bench phantom"
    phantom = Phantom(shape, seed)
    step = max(1, SLAB_BYTES // (shape[0] * shape[1] * 4))
    tmp = path.with_name(path.name + ".part")
    raw = open(tmp, "wb")  # noqa: SIM115 (closed below, after the optional gzip layer)
    try:
        dst = gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) \
            if path.name.endswith(".gz") else raw
        hdr.write_to(dst)  # the 348-byte header and the 4-byte extension flag
        dst.write(b"\0" * (352 - dst.tell()))
        for k0 in range(0, shape[2], step):
            slab = phantom.slab(k0, min(k0 + step, shape[2]))
            dst.write(np.asfortranarray(slab).astype("<f4", copy=False).tobytes(order="F"))
        if dst is not raw:
            dst.close()
    finally:
        raw.close()
    tmp.replace(path)
    img = nib.load(path)  # a cheap check of what we wrote (header only)
    if tuple(img.shape) != shape or not np.allclose(img.affine, AFFINE):
        raise RuntimeError(f"{path}: wrote shape {img.shape} / affine {img.affine.tolist()}, expected {shape}")
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------


def make_model(path: Path, seed: int = 0) -> Path:
    """A small MONAI 3D UNet (1 channel in, 3 classes), fixed seed, eval mode, TorchScript."""
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=CLASSES, channels=(8, 16, 32), strides=(2, 2),
               num_res_units=1).eval()
    torch.jit.script(net).save(str(path))
    return path


MODEL_DESCRIPTION = ("MONAI UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(8, 16, 32), "
                     "strides=(2, 2), num_res_units=1), seed 0, eval, torch.jit.script")
