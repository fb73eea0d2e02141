"""MONAI bundle configs, read without running code: the files of a bundle, the resolved config,
and the workflow defaults the bundle declares (roi, overlap, blend, orientation, spacing,
intensity). The network itself is built by :mod:`geoseg_pipeline.inference.bundle`.

Reading a bundle runs no code: ``@`` references and ``$`` values that are plain literals
(``"$@roi"``, ``"$[96, 96, 96]"``) are resolved here; any other ``$`` expression is refused,
and a ``_target_`` must name a class of ``monai.networks.nets``. ``trust_code`` hands the
network definition to MONAI's ``ConfigParser``, which then may import and evaluate anything.

This module imports neither torch nor MONAI: the spec loader reads the defaults.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ModelError

log = logging.getLogger("geoseg")

#: Where a bundle keeps its inference config, in the order they are looked for.
CONFIG_FILES = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")
#: Where a bundle keeps its weights (a state dict).
WEIGHTS_FILE = "models/model.pt"

SEP = "::"
_REFERENCE = re.compile(r"^@[\w:#\-]+$")
MONAI_NETS = "monai.networks.nets"
# MONAI's ComponentLocator keys; only these may sit beside _target_ in a safe network_def
META_KEYS = {"_target_", "_desc_", "_mode_", "_disabled_", "_requires_"}
# the arguments read from each intensity transform
_INTENSITY_ARGS = {
    "ScaleIntensityRange": ("a_min", "a_max", "b_min", "b_max", "clip"),
    "NormalizeIntensity": ("nonzero", "channel_wise", "subtrahend", "divisor"),
}
# transforms that change neither the geometry nor the intensities the model sees
_HARMLESS = {
    "LoadImage", "EnsureChannelFirst", "AddChannel", "AsChannelFirst", "EnsureType", "ToTensor", "ToNumpy",
    "CastToType", "ToDevice", "Identity", "CopyItems", "DeleteItems", "SelectItems", "SqueezeDim", "Compose",
}


@dataclass(frozen=True)
class Unsupported:
    """A bundle declaration geoseg cannot reproduce; an error unless the workflow sets the key."""

    reason: str


class Unreadable(Exception):
    """A value that cannot be read without running code (an expression, a macro, a bad reference)."""


# -- files -----------------------------------------------------------------------------------


def bundle_config_file(bundle_dir: str | Path) -> Path:
    """The bundle's inference config file.

    Raises:
        ModelError: the folder is missing or holds none of :data:`CONFIG_FILES`.
    """
    folder = Path(bundle_dir)
    if not folder.is_dir():
        raise ModelError(f"{folder}: bundle folder not found")
    for name in CONFIG_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelError(f"{folder}: not a MONAI bundle: no {' or '.join(CONFIG_FILES)}")


def bundle_weights_file(bundle_dir: str | Path) -> Path:
    """``models/model.pt`` in the bundle (existence is checked when it is read)."""
    return Path(bundle_dir) / WEIGHTS_FILE


def read_config(path: Path) -> dict[str, Any]:
    """A JSON or YAML config as a mapping (YAML through the safe loader).

    Raises:
        ModelError: unreadable, not JSON/YAML, or not a mapping.
    """
    try:
        with path.open(encoding="utf-8") as stream:
            data = json.load(stream) if path.suffix == ".json" else yaml.safe_load(stream)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the bundle config: {exc.strerror or exc}") from exc
    except (ValueError, yaml.YAMLError) as exc:  # json.JSONDecodeError is a ValueError
        raise ModelError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: the bundle config must be a mapping, got {type(data).__name__}")
    return data


# -- references --------------------------------------------------------------------------------


def _normalize_id(ref: str) -> str:
    return ref.replace("#", SEP)


def _absolute_id(current: str, ref: str) -> str:
    """MONAI's relative ids: ``@#x`` is ``x`` beside the current value, ``@##x`` one level up."""
    ref = _normalize_id(ref)
    levels = 0
    while ref.startswith(SEP):
        ref, levels = ref[len(SEP):], levels + 1
    if not levels:
        return ref
    parts = current.split(SEP)
    if levels > len(parts):
        raise Unreadable(f"the relative reference in {current!r} points above the config")
    return SEP.join([*parts[: len(parts) - levels], ref])


class ConfigReader:
    """Reads values from a config, following ``@`` references; never evaluates code."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def raw(self, ref: str) -> Any:
        node: Any = self.config
        for key in _normalize_id(ref).split(SEP) if ref else []:
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise Unreadable(f"the reference @{ref} names nothing in the config")
        return node

    def follow(self, value: Any, ref: str, seen: frozenset[str] = frozenset()) -> tuple[Any, str]:
        """``value`` (found at ``ref``) with references followed: the raw node and its id."""
        while isinstance(value, str):
            text = value[1:].strip() if value.startswith("$") else value
            if not _REFERENCE.match(text):
                break
            target = _absolute_id(ref, text[1:])
            if target in seen:
                raise Unreadable(f"the reference {value!r} at {ref} is circular")
            seen |= {target}
            value, ref = self.raw(target), target
        return value, ref

    def value(self, ref: str) -> Any:
        """The fully resolved value at ``ref``: plain data, every reference followed, every
        ``$`` value a plain literal (``_target_`` keys are kept as they are)."""
        return self._resolve(self.raw(ref), ref, frozenset({ref}))

    def _resolve(self, value: Any, ref: str, seen: frozenset[str]) -> Any:
        value, ref = self.follow(value, ref, seen)
        if isinstance(value, str):
            if value.startswith("$"):
                try:
                    return ast.literal_eval(value[1:].strip())
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    raise Unreadable(f"{ref} is the expression {value!r}") from None
            if value.startswith("%"):
                raise Unreadable(f"{ref} is the macro {value!r}")
            return value
        if isinstance(value, Mapping):
            return {k: self._resolve(v, f"{ref}{SEP}{k}", seen | {ref}) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, f"{ref}{SEP}{i}", seen | {ref}) for i, v in enumerate(value)]
        return value


# -- defaults ----------------------------------------------------------------------------------


def bundle_defaults(bundle_dir: str | Path) -> dict[str, Any]:
    """The workflow keys a bundle's inference config declares, as dotted keys.

    Reads the ``inferer`` (a sliding-window inferer: ``roi_size``, ``overlap``, ``mode``,
    ``sigma_scale``, ``sw_batch_size``) and the ``preprocessing`` transforms (``Orientationd``
    axcodes, ``Spacingd`` pixdim, ``ScaleIntensityRanged`` as a window to [0, 1] with clipping,
    ``NormalizeIntensityd(nonzero=True)``). Keys: ``tiling.roi_size``, ``tiling.overlap``,
    ``tiling.blend``, ``tiling.sigma_scale``, ``tiling.batch_size``, ``preprocessing.orientation``,
    ``preprocessing.spacing``, ``preprocessing.intensity``. A declaration geoseg cannot reproduce
    (an expression, a window not to [0, 1], a z-score over all voxels) is an :class:`Unsupported`
    value: a problem only if the workflow leaves that key unset. Transforms that geoseg does not
    apply are logged.

    Raises:
        ModelError: no bundle config, or it is not JSON/YAML.
    """
    config_file = bundle_config_file(bundle_dir)
    reader = ConfigReader(read_config(config_file))
    defaults = _inferer_defaults(reader)
    defaults.update(_transform_defaults(reader, config_file))
    return defaults


def _read(reader: ConfigReader, ref: str) -> Any:
    """The value at ``ref``, or an :class:`Unsupported` saying why it cannot be read."""
    try:
        return reader.value(ref)
    except Unreadable as exc:
        return Unsupported(f"the bundle declares {exc}, which geoseg does not evaluate")


def _target_name(node: Any) -> str:
    target = node.get("_target_") if isinstance(node, Mapping) else None
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else ""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_number(value: Any, what: str) -> Any:
    """A number, or a per-axis list of one repeated number."""
    if isinstance(value, Unsupported) or _number(value):
        return value
    if isinstance(value, list) and value and all(_number(v) for v in value) and len(set(value)) == 1:
        return value[0]
    return Unsupported(f"the bundle's {what} is {value!r}; geoseg takes one number for all axes")


def _inferer_defaults(reader: ConfigReader) -> dict[str, Any]:
    try:
        node, ref = reader.follow(reader.raw("inferer"), "inferer")
    except Unreadable:
        return {}
    if "SlidingWindow" not in _target_name(node):
        return {}
    out: dict[str, Any] = {}
    if "roi_size" in node:
        roi = _read(reader, f"{ref}{SEP}roi_size")
        dims = _read(reader, f"network_def{SEP}spatial_dims")
        if _number(roi) and isinstance(dims, int) and dims in (2, 3):  # MONAI repeats one size per axis
            roi = [roi] * dims
        if not isinstance(roi, Unsupported) and not (
            isinstance(roi, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in roi)
        ):
            roi = Unsupported(f"the bundle's inferer roi_size is {roi!r}; geoseg needs positive sizes, one per axis")
        out["tiling.roi_size"] = roi
    if "overlap" in node:
        out["tiling.overlap"] = _one_number(_read(reader, f"{ref}{SEP}overlap"), "inferer overlap")
    if "mode" in node:
        mode = _read(reader, f"{ref}{SEP}mode")
        if not isinstance(mode, Unsupported) and mode not in ("constant", "gaussian"):
            mode = Unsupported(f"the bundle's inferer mode is {mode!r}; geoseg blends constant or gaussian")
        out["tiling.blend"] = mode
    if "sigma_scale" in node:
        out["tiling.sigma_scale"] = _one_number(_read(reader, f"{ref}{SEP}sigma_scale"), "inferer sigma_scale")
    if "sw_batch_size" in node:
        batch = _read(reader, f"{ref}{SEP}sw_batch_size")
        if isinstance(batch, int) and not isinstance(batch, bool):  # a speed setting: skipped if unreadable
            out["tiling.batch_size"] = batch
    return out


def _transform_nodes(reader: ConfigReader, value: Any, ref: str, depth: int = 0) -> list[tuple[Any, str]]:
    """The transforms of ``preprocessing`` (a Compose, a list, references to lists, ``$@a + @b``)."""
    if depth > 8:
        raise Unreadable(f"{ref} nests transforms too deeply")
    value, ref = reader.follow(value, ref)
    if isinstance(value, str) and value.startswith("$") and "+" in value:
        parts = [p.strip() for p in value[1:].split("+")]
        if not all(_REFERENCE.match(p) for p in parts):
            raise Unreadable(f"{ref} is the expression {value!r}")
        return [n for p in parts for n in _transform_nodes(reader, f"${p}", ref, depth + 1)]
    if isinstance(value, Mapping) and _target_name(value) == "Compose":
        return _transform_nodes(reader, value.get("transforms", []), f"{ref}{SEP}transforms", depth + 1)
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _transform_nodes(reader, v, f"{ref}{SEP}{i}", depth + 1)]
    if isinstance(value, Mapping):
        return [(value, ref)]
    raise Unreadable(f"{ref} is {value!r}, not a transform")


def _transform_defaults(reader: ConfigReader, config_file: Path) -> dict[str, Any]:
    try:
        nodes = _transform_nodes(reader, reader.raw("preprocessing"), "preprocessing")
    except Unreadable as exc:
        if "preprocessing" not in reader.config:
            return {}
        reason = f"the bundle's preprocessing cannot be read without running code ({exc})"
        return {key: Unsupported(reason) for key in ("preprocessing.orientation", "preprocessing.spacing",
                                                     "preprocessing.intensity")}
    out: dict[str, Any] = {}
    ignored: list[str] = []
    names = [_target_name(node).removesuffix("d") for node, _ in nodes]
    for i, ((node, ref), name) in enumerate(zip(nodes, names, strict=True)):
        if name == "Orientation" and "axcodes" in node:
            out["preprocessing.orientation"] = _read(reader, f"{ref}{SEP}axcodes")
        elif name == "Spacing" and "pixdim" in node:
            out["preprocessing.spacing"] = _spacing(_read(reader, f"{ref}{SEP}pixdim"),
                                                    before_orientation="Orientation" in names[i + 1:])
        elif name in ("ScaleIntensityRange", "NormalizeIntensity"):
            if "preprocessing.intensity" in out:
                out["preprocessing.intensity"] = Unsupported(
                    "the bundle applies more than one intensity transform; geoseg applies one")
            else:
                args = {k: _read(reader, f"{ref}{SEP}{k}") for k in _INTENSITY_ARGS[name] if k in node}
                out["preprocessing.intensity"] = (_window(args) if name == "ScaleIntensityRange"
                                                  else _zscore(args, reader))
        elif name not in _HARMLESS:
            ignored.append(_target_name(node) or ref)
    if ignored:
        log.warning("%s: geoseg does not apply the bundle's preprocessing transform(s) %s; "
                    "check that the model does not need them", config_file, ", ".join(ignored))
    return out


def _spacing(pixdim: Any, *, before_orientation: bool) -> Any:
    if isinstance(pixdim, Unsupported):
        return pixdim
    values = [pixdim] if _number(pixdim) else pixdim
    if not (isinstance(values, list) and values and all(_number(v) for v in values)):
        return Unsupported(f"the bundle's Spacingd pixdim is {pixdim!r}; geoseg needs voxel sizes in mm")
    values = (values + [values[-1]] * 3)[:3]  # MONAI pads with the last value and ignores extras
    if any(v <= 0 for v in values):
        return Unsupported(f"the bundle's Spacingd pixdim {pixdim!r} keeps the input's spacing on some axes; "
                           "geoseg resamples every axis")
    if before_orientation:
        return Unsupported("the bundle resamples (Spacingd) before it reorients (Orientationd), so its pixdim is in "
                           "the input's axis order; geoseg's spacing is in the model's")
    return values


def _window(args: dict[str, Any]) -> Any:
    bad = [v for v in args.values() if isinstance(v, Unsupported)]
    if bad:
        return bad[0]
    a_min, a_max = args.get("a_min"), args.get("a_max")
    b_min, b_max, clip = args.get("b_min"), args.get("b_max"), args.get("clip", False)
    if not (_number(a_min) and _number(a_max)):
        return Unsupported(f"the bundle's ScaleIntensityRanged has a_min={a_min!r}, a_max={a_max!r}; numbers needed")
    if b_min != 0 or b_max != 1 or clip is not True:
        return Unsupported(
            f"the bundle's ScaleIntensityRanged maps [{a_min}, {a_max}] to [{b_min}, {b_max}] with clip={clip}; "
            "geoseg's intensity window maps to [0, 1] with clipping only (b_min=0, b_max=1, clip=true)"
        )
    return {"mode": "window", "window": [a_min, a_max]}


def _zscore(args: dict[str, Any], reader: ConfigReader) -> Any:
    bad = [v for v in args.values() if isinstance(v, Unsupported)]
    if bad:
        return bad[0]
    if args.get("nonzero") is not True:
        return Unsupported("the bundle's NormalizeIntensityd z-scores over all voxels (nonzero=false); "
                           "geoseg z-scores over nonzero voxels only (zscore_nonzero)")
    if args.get("subtrahend") is not None or args.get("divisor") is not None:
        return Unsupported("the bundle's NormalizeIntensityd uses a fixed subtrahend/divisor; "
                           "geoseg computes the z-score from each item")
    if args.get("channel_wise") is not True:
        channels = _read(reader, f"network_def{SEP}in_channels")
        if not (isinstance(channels, int) and channels == 1):
            return Unsupported("the bundle's NormalizeIntensityd pools all channels (channel_wise=false); "
                               "geoseg z-scores each channel")
    return {"mode": "zscore_nonzero"}
