"""3D volumes stored as Zarr: a plain array with an affine, or an OME-Zarr multiscale image.

Convention for a **plain array** (Zarr format 2 or 3):

* shape ``(i, j, k)``, or ``(c, i, j, k)`` with channels first;
* attributes give the voxel-to-world geometry, in mm, one of:

  - ``affine``: a 4x4 nested list, voxel index ``(i, j, k, 1)`` -> world ``(x, y, z, 1)``;
  - ``spacing``: ``[si, sj, sk]`` voxel sizes, identity orientation (axis ``i`` along world
    ``x``, ...), with an optional ``origin`` ``[x0, y0, z0]`` (default ``0, 0, 0``).

  A store with neither is refused: volumes and lesion sizes would silently be in voxels.

Convention for **OME-Zarr** (NGFF 0.4, attributes at the group's top level; 0.5, under ``ome``):

* the image is level 0, ``multiscales[0].datasets[0].path``;
* axes come from ``multiscales[0].axes``: ``t`` (type ``time``) and ``c`` (type ``channel``)
  axes of size 1 are dropped, a ``t`` axis longer than 1 is refused, a ``c`` axis longer than 1
  becomes the channels; exactly three ``space`` axes must remain, in array order ``i, j, k``;
* voxel size and origin come from level 0's ``coordinateTransformations`` (``scale``, then an
  optional ``translation``), followed by the multiscale-wide ones if any, converted to mm from
  each axis' ``unit`` (mm when absent);
* NGFF defines no anatomical orientation. Space axes named ``x``, ``y``, ``z`` map to world
  ``x``, ``y``, ``z`` (RAS+ in nibabel's terms, so a ``(z, y, x)`` array has axcodes
  ``('S', 'A', 'R')``); other names map in order, as for ``spacing``.

Grids from Zarr carry ``sform_code`` 2 (aligned) and ``qform_code`` 0, as nibabel gives a new
image built from an affine. Values are returned as float32 (NGFF has no value scaling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import zarr

from ..errors import InputDataError, SourceError
from ..geometry import Window
from ..storage import S3Config, zarr_open_kwargs
from ..storage.transient import read_error
from ..volumes import VolumeGrid
from .base import SourceOptions, check_volume_channel_axis, check_window, checked_indices

Role = Literal["space", "channel", "drop"]

#: UDUNITS-2 length units NGFF allows, in mm.
_UNIT_MM = {
    "angstrom": 1e-7, "picometer": 1e-9, "nanometer": 1e-6, "micrometer": 1e-3, "millimeter": 1.0,
    "centimeter": 10.0, "decimeter": 100.0, "meter": 1000.0,
}


class ZarrVolumeSource:
    """A Zarr volume read by slicing, one window at a time (see the module docstring)."""

    def __init__(self, path: str, s3: S3Config | None = None) -> None:
        self.path = path
        try:
            node = zarr.open(path, mode="r", **zarr_open_kwargs(path, s3))
        except SourceError:
            raise
        except Exception as exc:  # zarr raises several unrelated types for a bad store
            raise SourceError(f"{path}: cannot open as Zarr: {exc}") from exc
        if isinstance(node, zarr.Group):
            self._arr, self._roles, affine = _ome_level0(path, node)
        else:
            self._arr, self._roles, affine = _plain(path, node)
        self._stored_dtype = np.dtype(self._arr.dtype)
        if self._stored_dtype.kind not in "uif":
            raise SourceError(f"{path}: unsupported voxel type {self._stored_dtype} (need real numbers)")
        shape = [int(n) for n, r in zip(self._arr.shape, self._roles, strict=True) if r == "space"]
        channel = [int(n) for n, r in zip(self._arr.shape, self._roles, strict=True) if r == "channel"]
        self._channels = channel[0] if channel else 1
        try:
            self._grid = VolumeGrid((shape[0], shape[1], shape[2]), affine)
        except ValueError as exc:
            raise SourceError(f"{path}: unusable voxel geometry: {exc}") from exc

    @classmethod
    def open(cls, path: str, options: SourceOptions) -> ZarrVolumeSource:
        """The registry's way in (:mod:`geoseg_pipeline.formats`); channels are on axis 0."""
        check_volume_channel_axis(path, options.channel_axis, (None, 0))
        return cls(path, options.s3)

    @property
    def grid(self) -> VolumeGrid:
        """Shape ``(i, j, k)`` and affine from the attributes."""
        return self._grid

    @property
    def channel_count(self) -> int:
        """Channels (1 without a channel axis)."""
        return self._channels

    @property
    def dtype(self) -> np.dtype:
        """Type of what :meth:`read` returns: always float32."""
        return np.dtype(np.float32)

    @property
    def stored_dtype(self) -> np.dtype:
        """Stored element type."""
        stored: np.dtype = self._stored_dtype
        return stored

    @property
    def ndim_effective(self) -> int:
        """Spatial axes longer than one voxel."""
        return sum(1 for n in self._grid.shape if n > 1)

    def read(self, window: Window, channels: Sequence[int] | None = None) -> np.ndarray:
        """Read ``channels`` (0-based; all when ``None``) in ``window``, which must lie inside the grid.

        Returns:
            float32 ``(len(channels), i, j, k)``, C-contiguous.
        """
        check_window(self.path, window, self._grid.shape)
        chans = checked_indices(self.path, channels, self._channels, first=0, what="channels")
        spatial = iter(window.slices())
        contiguous = chans == list(range(chans[0], chans[-1] + 1))
        index: list[slice | int | list[int]] = []
        for role in self._roles:
            if role == "space":
                index.append(next(spatial))
            elif role == "channel":
                index.append(slice(chans[0], chans[-1] + 1) if contiguous else chans)
            else:
                index.append(0)
        try:
            data = self._arr.oindex[tuple(index)] if not contiguous else self._arr[tuple(index)]
        except Exception as exc:
            raise read_error(f"{self.path}: cannot read window {window}: {exc}", exc, self.path) from exc
        out = np.asarray(data, dtype=np.float32)
        kept = [r for r in self._roles if r != "drop"]
        if "channel" in kept:
            out = np.moveaxis(out, kept.index("channel"), 0)
        else:  # one channel, asked for len(chans) times
            out = np.broadcast_to(out, (len(chans), *out.shape))
        return np.ascontiguousarray(out)

    def close(self) -> None:
        """Zarr arrays hold no open handles; may be called again."""


def _plain(path: str, arr: Any) -> tuple[Any, list[Role], np.ndarray]:
    """A plain ``(i, j, k)`` / ``(c, i, j, k)`` array and its affine from ``affine`` or ``spacing``."""
    if arr.ndim not in (3, 4):
        raise InputDataError(f"{path}: expected an (i, j, k) or (c, i, j, k) array, got shape {arr.shape}")
    roles: list[Role] = ["space"] * 3 if arr.ndim == 3 else ["channel", "space", "space", "space"]
    if arr.ndim == 4 and arr.shape[0] == 1:
        roles[0] = "drop"
    attrs: dict[str, Any] = dict(arr.attrs)
    has_affine, has_spacing = "affine" in attrs, "spacing" in attrs
    if has_affine and has_spacing:
        raise SourceError(f"{path}: attributes 'affine' and 'spacing' are both set; keep one")
    if has_affine:
        return arr, roles, _matrix(path, attrs["affine"])
    if has_spacing:
        spacing = _numbers(path, "spacing", attrs["spacing"], 3, positive=True)
        origin = _numbers(path, "origin", attrs.get("origin", [0.0, 0.0, 0.0]), 3)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = origin
        return arr, roles, affine
    raise SourceError(
        f"{path}: no 'affine' or 'spacing' attribute, so the voxel size is unknown; set "
        "attrs['spacing'] = [si, sj, sk] in mm (or a 4x4 'affine')"
    )


def _ome_level0(path: str, group: Any) -> tuple[Any, list[Role], np.ndarray]:
    """Level 0 of an OME-Zarr multiscale image, its axis roles and its affine."""
    attrs: dict[str, Any] = dict(group.attrs)
    meta = attrs.get("ome", attrs)
    multiscales = meta.get("multiscales") if isinstance(meta, dict) else None
    if not isinstance(multiscales, list) or not multiscales:
        raise SourceError(
            f"{path}: a Zarr group without OME-Zarr 'multiscales' metadata; name the array inside it "
            f"(for example {path}/0) and give it 'spacing' or 'affine' attributes"
        )
    ms = multiscales[0]
    try:
        ds0 = ms["datasets"][0]
        level = ds0["path"]
        axes = [_axis(a) for a in ms["axes"]]
    except (KeyError, IndexError, TypeError) as exc:
        raise SourceError(f"{path}: malformed OME-Zarr multiscales metadata ({exc!r})") from exc
    try:
        arr = group[level]
    except KeyError:
        raise SourceError(f"{path}: the full-resolution array {level!r} that the multiscales metadata names is "
                          "missing from the store (an incomplete copy?)") from None
    if len(axes) != arr.ndim:
        raise SourceError(f"{path}: multiscales axes {[n for n, _, _ in axes]} do not match level-0 shape {arr.shape}")
    roles: list[Role] = []
    for (name, kind, _), size in zip(axes, arr.shape, strict=True):
        if kind == "space":
            roles.append("space")
        elif kind == "channel" and size > 1:
            roles.append("channel")
        elif size == 1:
            roles.append("drop")
        else:
            raise InputDataError(f"{path}: OME-Zarr axis {name!r} ({kind}) has {size} entries; only one can be read")
    space = [i for i, r in enumerate(roles) if r == "space"]
    if len(space) != 3:
        raise InputDataError(f"{path}: need exactly 3 space axes, got {[axes[i][0] for i in space]}")
    if "affine" in attrs:
        # the full affine, where a writer (ours) kept it next to the NGFF transforms, which
        # cannot hold flips or rotations
        return arr, roles, _matrix(path, attrs["affine"])
    scale, trans = _compose(path, arr.ndim, [*ds0.get("coordinateTransformations", []),
                                             *ms.get("coordinateTransformations", [])])
    names = [axes[i][0] for i in space]
    rows = [("x", "y", "z").index(n) for n in names] if sorted(names) == ["x", "y", "z"] else [0, 1, 2]
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for col, (axis, row) in enumerate(zip(space, rows, strict=True)):
        unit = axes[axis][2]
        if unit is not None and unit not in _UNIT_MM:
            raise SourceError(
                f"{path}: axis {axes[axis][0]!r} has unit {unit!r}; need a length ({', '.join(_UNIT_MM)})"
            )
        factor = 1.0 if unit is None else _UNIT_MM[unit]
        affine[row, col] = scale[axis] * factor
        affine[row, 3] = trans[axis] * factor
    return arr, roles, affine


def _axis(value: Any) -> tuple[str, str, str | None]:
    """``(name, type, unit)`` of one NGFF axis (0.4+ dicts, or 0.3 bare names)."""
    if isinstance(value, str):
        name, kind, unit = value, "", None
    else:
        name, kind, unit = str(value["name"]), str(value.get("type", "")), value.get("unit")
    if not kind:
        kind = {"t": "time", "c": "channel"}.get(name, "space")
    return name, kind, None if unit is None else str(unit)


def _compose(path: str, ndim: int, transforms: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Compose NGFF ``scale``/``translation`` transforms (in order) into one scale and offset per axis."""
    scale, trans = np.ones(ndim), np.zeros(ndim)
    for t in transforms:
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "identity":
            continue
        if kind not in ("scale", "translation") or kind not in t:
            raise SourceError(f"{path}: unsupported coordinateTransformation {t!r} (need inline scale/translation)")
        values = _numbers(path, kind, t[kind], ndim, positive=kind == "scale")
        if kind == "scale":
            scale, trans = scale * values, trans * values
        else:
            trans = trans + values
    return scale, trans


def _numbers(path: str, name: str, value: Any, count: int, *, positive: bool = False) -> np.ndarray:
    ok = isinstance(value, list | tuple) and len(value) == count and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        for v in value
    )
    if not ok:
        kind = "positive finite" if positive else "finite"
        raise SourceError(f"{path}: attribute {name} must be {count} {kind} numbers, got {value!r}")
    return np.asarray(value, dtype=np.float64)


def _matrix(path: str, value: Any) -> np.ndarray:
    try:
        affine = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SourceError(f"{path}: attribute affine must be a 4x4 nested list of numbers: {exc}") from exc
    if affine.shape != (4, 4):
        raise SourceError(f"{path}: attribute affine must be 4x4, got shape {affine.shape}")
    return affine
