"""nnU-Net v2's preprocessing of one case, reproduced without nnU-Net (its ``DefaultPreprocessor``
``run_case_npy``, default normalization schemes and ``resample_data_or_seg``; Apache-2.0, DKFZ):
transpose, crop to the nonzero region, normalize per channel, resample to the configuration's
spacing. Pure numpy / scipy / scikit-image on whole arrays, run by a worker (never the driver).

Arrays are in nnU-Net's order: a volume's voxel axes reversed (as SimpleITK reads it), then
``transpose_forward``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_fill_holes, map_coordinates

from .case import CaseGeometry
from .folder import ANISO_THRESHOLD, NnunetModel, Resampling


def nonzero_bbox(data: np.ndarray) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """The nonzero mask (holes filled) of ``(C, *spatial)`` data and its bounding box (half
    open; the whole array where nothing is nonzero, as acvl_utils' ``get_bbox_from_mask``)."""
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    mask = binary_fill_holes(mask)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, mask.shape[axis]))
    return mask, tuple(box)


def normalize(data: np.ndarray, inside: np.ndarray, model: NnunetModel) -> np.ndarray:
    """Each channel by its scheme (nnU-Net's ``default_normalization_schemes``), in place on
    float32 ``data``; ``inside`` is the cropped nonzero mask (``seg >= 0``)."""
    eps = 1e-8
    for c, scheme in enumerate(model.normalization):
        image = data[c]
        if scheme == "ZScoreNormalization":
            if model.use_mask_for_norm[c]:
                mean, std = image[inside].mean(), image[inside].std()
                image[inside] = (image[inside] - mean) / max(std, eps)
            else:
                mean, std = image.mean(), image.std()
                image -= mean
                image /= max(std, eps)
        elif scheme == "CTNormalization":
            props = model.intensity[c]
            assert props is not None
            mean_i, std_i, lower, upper = props
            np.clip(image, lower, upper, out=image)
            image -= mean_i
            image /= max(std_i, eps)
        elif scheme == "RescaleTo01Normalization":
            image -= image.min()
            image /= np.clip(image.max(), a_min=eps, a_max=None)
        elif scheme == "RGBTo01Normalization":
            image /= 255.0
        # NoNormalization: as is
    return data


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(spacing / target * shape)`` per axis."""
    return tuple(round(s / t * n) for s, t, n in zip(spacing, target, shape, strict=True))


def separate_z(current: Sequence[float], new: Sequence[float], force: bool | None) -> int | None:
    """The axis resampled apart (nnU-Net's ``determine_do_sep_z_and_axis``), or ``None``."""

    def lowres(spacing: Sequence[float]) -> np.ndarray:
        s = np.asarray(spacing, dtype=float)
        return np.where(max(s) / s == 1)[0]

    axis: np.ndarray | None
    if force is not None:
        axis = lowres(current) if force else None
    elif np.max(current) / np.min(current) > ANISO_THRESHOLD:
        axis = lowres(current)
    elif np.max(new) / np.min(new) > ANISO_THRESHOLD:
        axis = lowres(new)
    else:
        axis = None
    if axis is None or len(axis) != 1:
        return None
    return int(axis[0])


def resample(data: np.ndarray, new_shape: Sequence[int], axis: int | None, rs: Resampling) -> np.ndarray:
    """nnU-Net's ``resample_data_or_seg`` for data (not segmentations): scikit-image ``resize``
    (``mode='edge'``, no anti-aliasing) of each channel, or of each slice across ``axis`` then
    ``map_coordinates`` of order ``order_z`` along it."""
    from skimage.transform import resize

    shape = np.array(data[0].shape)
    target = np.array(new_shape)
    if np.all(shape == target):
        return data
    out = np.zeros((data.shape[0], *target), dtype=data.dtype)
    kwargs = {"mode": "edge", "anti_aliasing": False}
    for c in range(data.shape[0]):
        channel = data[c].astype(float, copy=False)
        if axis is None:
            out[c] = resize(channel, target, rs.order, **kwargs)  # type: ignore[no-untyped-call]
            continue
        plane = target[[a for a in range(3) if a != axis]]
        tmp = target.copy()
        tmp[axis] = shape[axis]
        here = np.zeros(tmp)
        for i in range(shape[axis]):
            idx: list[slice | int] = [slice(None)] * 3
            idx[axis] = i
            here[tuple(idx)] = resize(  # type: ignore[no-untyped-call]
                channel[tuple(idx)], plane, rs.order, **kwargs)
        if shape[axis] == target[axis]:
            out[c] = here
            continue
        scale = [float(o) / n for o, n in zip(here.shape, target, strict=True)]
        grid = np.mgrid[: target[0], : target[1], : target[2]].astype(float)
        coords = np.array([s * (g + 0.5) - 0.5 for s, g in zip(scale, grid, strict=True)])
        out[c] = map_coordinates(here, coords, order=rs.order_z, mode="nearest")
    return out


def preprocess_case(data: np.ndarray, spacing: Sequence[float], model: NnunetModel) -> tuple[np.ndarray, CaseGeometry]:
    """One case as nnU-Net's predictor feeds it to the network.

    Args:
        data: ``(C, *spatial)`` in nnU-Net's reading order (voxel axes reversed).
        spacing: the voxel size in that order.
        model: the plans.

    Returns:
        the preprocessed float32 array (transposed, cropped, normalized, resampled) and where it
        lies in the case.
    """
    tf = model.transpose_forward
    data = data.astype(np.float32)  # a copy
    data = data.transpose([0, *[i + 1 for i in tf]])
    original = tuple(float(spacing[i]) for i in tf)
    before = data.shape[1:]
    mask, box = nonzero_bbox(data)
    crop = tuple(slice(a, b) for a, b in box)
    data = data[(slice(None), *crop)]
    inside = mask[crop]
    target = list(model.spacing)
    if len(target) < 3:  # 2D: the slice spacing stays
        target = [original[0], *target]
    new_shape = compute_new_shape(data.shape[1:], original, target)
    data = normalize(np.ascontiguousarray(data), inside, model)
    axis = separate_z(original, target, model.data_resampling.force_separate_z)
    cropped = data.shape[1:]
    if model.data_resampling.identity:  # nnU-Net's no_resampling_hack ignores the new shape
        new_shape = tuple(cropped)
    else:
        data = resample(data, new_shape, axis, model.data_resampling)
    geometry = CaseGeometry((before[0], before[1], before[2]), box, (cropped[0], cropped[1], cropped[2]),
                            (int(new_shape[0]), int(new_shape[1]), int(new_shape[2])),
                            (original[0], original[1], original[2]))
    return np.ascontiguousarray(data, dtype=np.float32), geometry


__all__ = ["CaseGeometry", "compute_new_shape", "nonzero_bbox", "normalize", "preprocess_case", "resample",
           "separate_z"]
