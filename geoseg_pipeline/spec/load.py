"""Read a workflow file: YAML -> :class:`WorkflowSpec`, every problem with its field path."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import GeosegError, SpecError
from ..storage.uri import is_uri
from .bundle import Unsupported, bundle_defaults, bundle_weights_file
from .classes import ClassSpec
from .inference import InferenceSpec
from .model import InputSpec, ModelSpec, PreprocessingSpec, TilingSpec, WorkflowSpec, cross_check
from .output import OutputSpec, StatisticsSpec
from .vision import processor_normalization_problem

_M = TypeVar("_M", bound=BaseModel)

log = logging.getLogger("geoseg")


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(workflow)"


def parse_workflow(data: Any, base_dir: Path, source: str = "<workflow>") -> WorkflowSpec:
    """Validate a parsed mapping; relative paths are resolved against ``base_dir``.

    Raises:
        SpecError: listing every problem as ``(field path, message)``, field problems and
            problems between sections alike.
    """
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a workflow must be a mapping of sections, got {type(data).__name__}",
            [("(workflow)", "expected a mapping")],
        )
    data, taken, problems = _with_bundle_defaults(data, base_dir)
    data, taken_nn, problems_nn = _with_nnunet_defaults(data, base_dir)
    taken |= taken_nn
    problems += problems_nn
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems += _field_problems(exc) + cross_check(*_sections(data))
        _raise(source, [(p, f"{m} (taken from the bundle)" if _is_under(p, taken) else m) for p, m in problems])
    if problems:
        _raise(source, problems)
    spec = _resolve_paths(spec, base_dir)
    if spec.model.type == "huggingface" and spec.model.path is not None and spec.preprocessing.normalize is not None:
        twice = processor_normalization_problem(spec.model.path)  # read once the folder's path is resolved
        if twice:
            _raise(source, [("preprocessing.normalize", twice)])
    return spec


def _raise(source: str, problems: list[tuple[str, str]]) -> NoReturn:
    lines = "\n".join(f"  {p}: {m}" for p, m in problems)
    raise SpecError(f"{source}: {len(problems)} problem(s)\n{lines}", problems) from None


def _is_under(path: str, keys: set[str]) -> bool:
    return any(path == k or path.startswith((f"{k}[", f"{k}.")) for k in keys)


def _with_bundle_defaults(
    data: dict[str, Any], base_dir: Path
) -> tuple[dict[str, Any], set[str], list[tuple[str, str]]]:
    """For ``model.type: bundle``, fill the keys the bundle declares and the workflow leaves
    unset (roi, overlap, blend, orientation, spacing, intensity): the workflow's values win.

    Returns the completed mapping, the keys taken from the bundle, and problems: an unreadable
    bundle, no weights, a bundle declaration geoseg cannot reproduce for an unset key.
    """
    model = data.get("model")
    if not (isinstance(model, dict) and model.get("type") == "bundle" and isinstance(model.get("bundle"), (str, Path))):
        return data, set(), []

    folder = Path(_resolve(model["bundle"], base_dir))
    try:
        defaults = bundle_defaults(folder)
    except GeosegError as exc:
        return data, set(), [("model.bundle", str(exc))]
    problems: list[tuple[str, str]] = []
    if model.get("checkpoint") is None and not bundle_weights_file(folder).is_file():
        problems.append(("model.bundle", f"{bundle_weights_file(folder)}: the bundle's weights are missing "
                                         "(or set model.checkpoint)"))
    data = dict(data)
    taken: dict[str, Any] = {}
    for key, value in defaults.items():
        section, name = key.split(".", 1)
        current = data.get(section, {})
        if not isinstance(current, dict) or name in current:  # the workflow's value wins
            continue
        if isinstance(value, Unsupported):
            problems.append((key, f"{value.reason}; set {key} in the workflow"))
            continue
        data[section] = {**current, name: value}
        taken[key] = value
    if taken:
        log.info("model.bundle %s: taken from the bundle: %s", folder,
                 ", ".join(f"{k}={v}" for k, v in taken.items()))
    return data, set(taken), problems


def _with_nnunet_defaults(
    data: dict[str, Any], base_dir: Path
) -> tuple[dict[str, Any], set[str], list[tuple[str, str]]]:
    """For ``model.type: nnunet``, read the trained model folder (plans, dataset, folds) and set
    the tiling nnU-Net's predictor uses: the plans' patch, nnU-Net's tile step (0.5) and
    gaussian. The workflow may not set another window or any preprocessing: the plans decide.

    Returns the completed mapping, the keys set, and problems (a folder nnU-Net could not
    run, a conflicting workflow key), each before any data is read.
    """
    model = data.get("model")
    if not (isinstance(model, dict) and model.get("type") == "nnunet" and isinstance(model.get("path"), (str, Path))):
        return data, set(), []
    from ..nnunet.folder import read_model_folder

    folds = model.get("folds")
    try:
        nn = read_model_folder(
            _resolve(model["path"], base_dir),
            folds=None if folds is None else tuple(str(f) for f in (folds if isinstance(folds, list) else [folds])),
            checkpoint=str(model.get("checkpoint") or "checkpoint_final.pth"),
            configuration=model.get("configuration"), mirroring=bool(model.get("mirroring", True)))
    except GeosegError as exc:
        return data, set(), [("model.path", str(exc))]
    problems: list[tuple[str, str]] = []
    tiling = dict(data.get("tiling") or {})
    wanted = {"roi_size": list(nn.roi_size), "overlap": 0.5, "blend": "nnunet2d" if nn.is_2d else "nnunet",
              "grid": "nnunet", "sigma_scale": 0.125}
    for key, value in wanted.items():
        given = tiling.get(key)
        if given is not None and (list(given) if isinstance(given, (list, tuple)) else given) != value:
            problems.append((f"tiling.{key}", f"an nnU-Net model runs with its own {key} ({value}); "
                                              "leave it unset"))
    prep = data.get("preprocessing") or {}
    for key in ("orientation", "spacing", "intensity", "normalize", "bands"):
        if isinstance(prep, dict) and prep.get(key) is not None:
            problems.append((f"preprocessing.{key}", "an nnU-Net model preprocesses as its plans say; leave it unset"))
    data = {**data, "tiling": {**tiling, **wanted}}
    log.info("model %s: nnU-Net %s, folds %s, patch %s, spacing %s, mirroring %s", nn.folder, nn.configuration,
             ",".join(nn.folds), list(nn.patch_size), list(nn.spacing), "on" if nn.mirroring else "off")
    return data, {f"tiling.{k}" for k in wanted}, problems


def _field_problems(exc: ValidationError) -> list[tuple[str, str]]:
    errors = [e for e in exc.errors() if e["loc"]]  # loc () is the cross check, redone with paths
    problems = []
    for err in errors:
        loc = tuple(err["loc"])
        # "at least 1 item ... not 0" only echoes a bad entry reported at a deeper path
        if err["type"] == "too_short" and any(len(o["loc"]) > len(loc) and tuple(o["loc"][: len(loc)]) == loc
                                              for o in errors):
            continue
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif isinstance(err.get("input"), (int, float, str)) and "got" not in msg:
            msg = f"{msg}, got {err['input']!r}"
        problems.append((_field_path(loc), msg.removeprefix("Value error, ")))
    return problems


def _section(cls: type[_M], value: Any) -> _M | None:
    try:
        return cls.model_validate(value)
    except ValidationError:
        return None


def _sections(
    data: dict[str, Any],
) -> tuple[
    ModelSpec | None, PreprocessingSpec | None, TilingSpec | None, tuple[ClassSpec, ...] | None, OutputSpec | None,
    InferenceSpec | None, InputSpec | None, StatisticsSpec | None,
]:
    """Each section validated on its own, so that problems between sections are found even
    when some other field is wrong."""
    classes_raw = data.get("classes")
    classes: tuple[ClassSpec, ...] | None = None
    if isinstance(classes_raw, list):
        parsed = [_section(ClassSpec, c) for c in classes_raw]
        classes = tuple(c for c in parsed if c is not None) if all(parsed) else None
    return (
        _section(ModelSpec, data.get("model")),
        _section(PreprocessingSpec, data.get("preprocessing", {})),
        _section(TilingSpec, data.get("tiling", {})),
        classes,
        _section(OutputSpec, data.get("output")),
        _section(InferenceSpec, data.get("inference", {})),
        _section(InputSpec, data.get("inputs")),
        _section(StatisticsSpec, data.get("statistics", {})),
    )


def _resolve(p: str | Path, base_dir: Path) -> str:
    if isinstance(p, str) and is_uri(p):  # s3://, file://: not a path
        return p
    path = Path(p).expanduser()
    return os.path.normpath(path if path.is_absolute() else base_dir / path)


def _resolve_paths(spec: WorkflowSpec, base_dir: Path) -> WorkflowSpec:
    def resolve(p: str | Path) -> str:
        return _resolve(p, base_dir)

    manifest, stac = spec.inputs.manifest, spec.inputs.stac
    inputs = spec.inputs.model_copy(update={
        "paths": tuple(resolve(p) for p in spec.inputs.paths),
        "manifest": None if manifest is None else resolve(manifest),
        "stac": None if stac is None else stac.model_copy(update={"catalog": tuple(map(resolve, stac.catalog))}),
    })
    model = spec.model.model_copy(update={
        field: Path(resolve(value))
        # an nnU-Net checkpoint is a file name inside each fold folder
        for field in (("path", "bundle") if spec.model.type == "nnunet" else ("path", "checkpoint", "bundle"))
        if (value := getattr(spec.model, field)) is not None
    })
    output = spec.output.model_copy(update={"directory": Path(resolve(spec.output.directory))})
    update: dict[str, Any] = {"inputs": inputs, "model": model, "output": output}
    zones = spec.statistics.zones
    if zones is not None:
        update["statistics"] = spec.statistics.model_copy(
            update={"zones": zones.model_copy(update={"path": Path(resolve(zones.path))})})
    if spec.evaluation is not None:
        update["evaluation"] = spec.evaluation.model_copy(
            update={"reference": Path(resolve(spec.evaluation.reference))})
    return spec.model_copy(update=update)


def load_workflow(path: str | Path) -> WorkflowSpec:
    """Load and validate a workflow YAML file.

    Raises:
        SpecError: the file is missing, is not YAML, or breaks the schema.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as stream:  # a stream, so YAML errors name the file
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read workflow file: {exc.strerror or exc}",
                        [("(file)", str(exc))]) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}", [("(yaml)", str(exc))]) from exc
    return parse_workflow(data, path.resolve().parent, str(path))
