"""The library API: run a workflow, or a one-off prediction, from Python without the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .ledger import LEDGER_NAME, Ledger, LedgerRow
from .runtime import JobResult, run_job
from .spec import WorkflowSpec, load_workflow, parse_workflow


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
    return run_job(spec, address=address, progress=progress, force=force)


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


def model_section(model: str) -> dict[str, Any]:
    """``landcover-demo`` or ``builtin:NAME`` -> a built-in model; anything else is a TorchScript path."""
    from .models import BUILTIN_MODEL_NAMES

    name = model.removeprefix("builtin:")
    if model.startswith("builtin:") or (name in BUILTIN_MODEL_NAMES and not Path(model).exists()):
        return {"type": "builtin", "name": name}
    return {"type": "torchscript", "path": model}


def predict(
    inputs: Sequence[str | Path],
    model: str,
    out: str | Path,
    *,
    roi_size: int | Sequence[int] = 256,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 8,
    workers: int | None = None,
    classes: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    lesion_classes: Sequence[int] = (),
    orientation: str | None = None,
    spacing: Sequence[float] | None = None,
    block_size: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
    force: bool = False,
) -> JobResult:
    """Segment ``inputs`` with ``model`` into ``out`` without a workflow file.

    A ``roi_size`` of three numbers makes the job a volume job (NIfTI or Zarr volumes);
    ``orientation`` (axis codes) and ``spacing`` (mm) then prepare each volume for the model.
    """
    data: dict[str, Any] = {
        "name": "predict",
        "inputs": {"paths": [str(p) for p in inputs]},
        "model": model_section(model),
        "tiling": {"roi_size": roi_size, "overlap": overlap, "blend": blend, "batch_size": batch_size,
                   "block_size": block_size},
        "preprocessing": {"orientation": orientation, "spacing": list(spacing) if spacing else None},
        "output": {"directory": str(out), "formats": list(formats) if formats else None},
        "resources": {"workers": workers},
        "statistics": {"lesion_classes": list(lesion_classes)},
    }
    if classes:
        data["classes"] = [{"name": c} for c in classes]
    spec = parse_workflow(data, Path.cwd(), "geoseg predict")
    return run_job(spec, address=address, progress=progress, force=force)
