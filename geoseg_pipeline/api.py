"""The library API: run a workflow, or a one-off prediction, from Python without the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import SpecError
from .ledger import LEDGER_NAME, Ledger, LedgerRow
from .nnunet.folder import is_nnunet_folder
from .runtime import JobResult, run_job
from .spec import WorkflowSpec, load_workflow, parse_workflow
from .spec.model import is_pretrained_folder
from .spec.prompts import TEXT_PROMPTED_TYPES, pretrained_model_type

if TYPE_CHECKING:
    from .evaluation import EvaluationResult


def run_workflow(
    workflow: WorkflowSpec | str | Path, address: str | None = None, progress: bool | None = None,
    force: bool = False,
) -> JobResult:
    """Run a workflow (a spec, or the path of a YAML file).

    Items finished by an earlier run into the same output directory, with the same input,
    model and settings, are skipped (see :mod:`geoseg_pipeline.ledger`).

    Args:
        workflow: the workflow.
        address: ``None`` starts a local Ray for the job; ``"auto"`` or ``HOST:PORT`` joins a cluster.
        progress: force progress bars on or off (default: on a terminal only).
        force: reprocess every item.
    """
    spec = workflow if isinstance(workflow, WorkflowSpec) else load_workflow(workflow)
    result = run_job(spec, address=address, progress=progress, force=force)
    if spec.evaluation is not None:
        evaluate_outputs(spec)
    return result


def evaluate_outputs(spec: WorkflowSpec) -> EvaluationResult | None:
    """The workflow's ``evaluation`` section applied to its output directory (``None`` without one)."""
    if spec.evaluation is None:
        return None
    from .evaluation import evaluate  # torch and MONAI: only when asked for

    ev = spec.evaluation
    names = [c.name for c in spec.classes] if spec.classes else None
    return evaluate(spec.output.directory, ev.reference, spec.output.directory, classes=ev.classes,
                    class_names=names, include_background=ev.include_background, hausdorff=ev.hausdorff)


def ledger_rows(out: str | Path) -> list[LedgerRow]:
    """The run ledger of an output directory: one row per item (empty if there is none).

    Raises:
        LedgerError: the ledger exists but cannot be read.
    """
    path = Path(out)
    if not (path / LEDGER_NAME).is_file():
        return []
    ledger = Ledger(path)
    try:
        return ledger.rows()
    finally:
        ledger.close()


def model_section(model: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """The workflow's ``model`` section for a ``--model`` argument (or, from Python, a path, or a
    model section itself: a mapping, returned as a dict).

    ``landcover-demo`` or ``builtin:NAME``: a built-in model; ``*.onnx``: an ONNX file; a folder
    with ``configs/inference.json|yaml``: a MONAI bundle; a folder with ``plans.json``,
    ``dataset.json`` and ``fold_<k>/``: an nnU-Net trained model; a folder with ``config.json``
    and weights: a Hugging Face transformers model (``save_pretrained``); ``*.ckpt``: a TorchGeo task
    checkpoint; ``*.yaml`` / ``*.yml``: a file holding
    a whole model section (for MONAI networks and the other types, see ``docs/models.md``);
    anything else: a TorchScript file.
    """
    from .models import BUILTIN_MODEL_NAMES

    if isinstance(model, Mapping):
        return dict(model)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model: expected a path, a built-in model's name or a model section (a mapping), "
                        f"got {type(model).__name__}")
    model = os.fspath(model)
    name = model.removeprefix("builtin:")
    path = Path(model)
    if model.startswith("builtin:") or (name in BUILTIN_MODEL_NAMES and not path.exists()):
        return {"type": "builtin", "name": name}
    if path.is_dir() and any((path / "configs" / f"inference.{ext}").is_file() for ext in ("json", "yaml", "yml")):
        return {"type": "bundle", "bundle": model}
    if is_nnunet_folder(path):
        return {"type": "nnunet", "path": model}
    if is_pretrained_folder(path):
        return {"type": "huggingface", "path": model}
    if path.suffix.lower() == ".onnx":
        return {"type": "onnx", "path": model}
    if path.suffix.lower() == ".ckpt":
        return {"type": "torchgeo", "checkpoint": model}
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            section = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"{model}: cannot read the model section: {exc}", [("model", str(exc))]) from exc
        if not isinstance(section, dict):
            raise SpecError(f"{model}: must hold a mapping (the workflow's model section)",
                            [("model", "not a mapping")])
        section = section.get("model", section)
        # relative paths in the file are relative to the file
        for key in ("path", "checkpoint", "bundle"):
            if isinstance(section.get(key), str) and not Path(section[key]).is_absolute():
                section[key] = str(path.parent / section[key])
        return dict(section)
    if path.is_dir():
        raise SpecError(f"{model}: {_not_a_model_folder(path)}", [("model", "not a model folder")])
    return {"type": "torchscript", "path": model}


def _not_a_model_folder(path: Path) -> str:
    """Why ``path``, a folder, is none of the model folders ``--model`` takes, naming what the
    nearest kind lacks."""
    nnunet = {"plans.json": (path / "plans.json").is_file(), "dataset.json": (path / "dataset.json").is_file(),
              "fold_<k>/": any(p.is_dir() for p in path.glob("fold_*"))}
    if any(nnunet.values()):
        missing = ", ".join(k for k, found in nnunet.items() if not found)
        return (f"an incomplete nnU-Net model folder: {missing} missing (it needs plans.json, dataset.json and "
                "fold_<k>/)")
    if (path / "config.json").is_file():
        return "has config.json but no weights (model.safetensors) for a Hugging Face model"
    return ("is a folder but no model folder: an nnU-Net model (plans.json, dataset.json, fold_<k>/), a MONAI "
            "bundle (configs/inference.json) or a Hugging Face model (config.json and model.safetensors)")


def predict(
    inputs: Sequence[str | Path],
    model: str,
    out: str | Path,
    *,
    roi_size: int | Sequence[int] | None = None,
    overlap: float | None = None,
    blend: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    classes: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    lesion_classes: Sequence[int] = (),
    orientation: str | None = None,
    spacing: Sequence[float] | None = None,
    block_size: int | None = None,
    input_format: str = "auto",
    address: str | None = None,
    progress: bool | None = None,
    force: bool = False,
    folds: Sequence[str] | None = None,
    mirroring: bool = True,
    assets: Sequence[str] | None = None,
    mask: dict[str, Any] | None = None,
    background_threshold: float | None = None,
    variables: Sequence[str] | None = None,
) -> JobResult:
    """Segment ``inputs`` with ``model`` into ``out`` without a workflow file.

    For an nnU-Net model folder, ``folds`` (default: every fold present) and ``mirroring``
    select as ``nnUNetv2_predict``'s ``-f`` and ``--disable_tta``; the tiling is nnU-Net's.

    ``input_format`` is ``inputs.format``: ``dicom`` reads folders of DICOM files as one item
    per image series. With ``assets`` (asset keys in the model's channel order) the inputs are
    STAC documents (``inputs.stac.catalog``: items, item collections, catalogs, STAC-GeoParquet);
    ``mask`` is ``inputs.mask`` (``{"asset": "SCL", "invalid": [...]}``). With
    ``input_format="xarray-zarr"``, ``variables`` is ``inputs.variables``: the cube's bands in
    the model's channel order.

    A ``roi_size`` of three numbers makes the job a volume job (NIfTI or Zarr volumes);
    ``orientation`` (axis codes) and ``spacing`` (mm) then prepare each volume for the model.
    Options left ``None`` take the workflow defaults (roi 256, overlap 0.25, gaussian, batch 8
    on a CPU or as many as fit on a GPU), or, for a MONAI bundle, the bundle's own settings.

    For a text-prompted model folder (CLIPSeg), ``classes`` are the prompts: ``NAME`` (the name
    is the prompt) or ``NAME=PROMPT``; ``background_threshold`` adds a first class, ``background``,
    with that threshold (see :mod:`geoseg_pipeline.spec.prompts`).
    """
    tiling = {"roi_size": roi_size, "overlap": overlap, "blend": blend, "batch_size": batch_size,
              "block_size": block_size}
    preprocessing = {"orientation": orientation, "spacing": list(spacing) if spacing else None}
    found: dict[str, Any] = {"paths": [str(p) for p in inputs], "format": input_format}
    if variables:
        found["variables"] = list(variables)
    if assets:
        found = {"stac": {"catalog": [str(p) for p in inputs], "assets": list(assets)},
                 **({"mask": mask} if mask else {})}
    elif mask:
        raise SpecError("a quality mask names an asset of STAC items: give the assets too",
                        [("inputs.mask", "needs inputs.stac.assets")])
    data: dict[str, Any] = {
        "name": "predict",
        "inputs": found,
        "model": model_section(model),
        # only what was given: a key that is present counts as set (and wins over a bundle's)
        "tiling": {k: v for k, v in tiling.items() if v is not None},
        "preprocessing": {k: v for k, v in preprocessing.items() if v is not None},
        "output": {"directory": str(out), "formats": list(formats) if formats else None},
        "resources": {"workers": workers},
        "statistics": {"lesion_classes": list(lesion_classes)},
    }
    entries = class_entries(model, data["model"], classes, background_threshold)
    if entries is not None:
        data["classes"] = entries
    if folds is not None or not mirroring:
        if data["model"].get("type") != "nnunet":
            raise SpecError(f"{model}: folds and mirroring select an nnU-Net model's folds; this is not an nnU-Net "
                            "model folder", [("model", "not an nnU-Net model folder")])
        data["model"] = {**data["model"], "mirroring": mirroring,
                         **({"folds": list(folds)} if folds is not None else {})}
    spec = parse_workflow(data, Path.cwd(), "geoseg predict")
    return run_job(spec, address=address, progress=progress, force=force)


def class_entries(model: str, section: dict[str, Any], classes: Sequence[str] | None,
                  background_threshold: float | None = None) -> list[dict[str, Any]] | None:
    """The workflow's ``classes`` for :func:`predict`: names; for a text-prompted model folder,
    ``NAME`` or ``NAME=PROMPT`` entries with their prompts, after a ``background`` class when a
    ``background_threshold`` is given.

    Raises:
        SpecError: a text-prompted model without classes; a background threshold for a model
            that is not text-prompted.
    """
    prompted = section.get("type") == "huggingface" and pretrained_model_type(Path(model)) in TEXT_PROMPTED_TYPES
    if not prompted:
        if background_threshold is not None:
            raise SpecError(f"{model}: a background threshold goes with a text-prompted model (CLIPSeg)",
                            [("classes", "background threshold without prompts")])
        return [{"name": c} for c in classes] if classes else None
    if not classes:
        raise SpecError(f"{model}: a text-prompted model (CLIPSeg) needs its classes as prompts, for example "
                        "--classes 'water=a river or a lake,forest'", [("classes", "no prompts")])
    entries: list[dict[str, Any]] = []
    if background_threshold is not None:
        entries.append({"name": "background", "threshold": background_threshold})
    for entry in classes:
        name, _, prompt = entry.partition("=")
        entries.append({"name": name.strip(), "prompt": (prompt or name).strip()})
    return entries
