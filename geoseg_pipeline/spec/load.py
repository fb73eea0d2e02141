"""Read a workflow file: YAML -> :class:`WorkflowSpec`, every problem with its field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import SpecError
from .model import WorkflowSpec


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
        SpecError: listing every problem as ``(field path, message)``.
    """
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a workflow must be a mapping of sections, got {type(data).__name__}",
            [("(workflow)", "expected a mapping")],
        )
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif isinstance(err.get("input"), (int, float, str)) and "got" not in msg:
                msg = f"{msg}, got {err['input']!r}"
            problems.append((_field_path(tuple(err["loc"])), msg.removeprefix("Value error, ")))
        lines = "\n".join(f"  {p}: {m}" for p, m in problems)
        raise SpecError(f"{source}: {len(problems)} problem(s)\n{lines}", problems) from None
    return _resolve_paths(spec, base_dir)


def _resolve_paths(spec: WorkflowSpec, base_dir: Path) -> WorkflowSpec:
    def resolve(p: str | Path) -> str:
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else base_dir / path)

    inputs = spec.inputs.model_copy(update={"paths": tuple(resolve(p) for p in spec.inputs.paths)})
    model = spec.model
    if model.path is not None:
        model = model.model_copy(update={"path": Path(resolve(model.path))})
    output = spec.output.model_copy(update={"directory": Path(resolve(spec.output.directory))})
    return spec.model_copy(update={"inputs": inputs, "model": model, "output": output})


def load_workflow(path: str | Path) -> WorkflowSpec:
    """Load and validate a workflow YAML file.

    Raises:
        SpecError: the file is missing, is not YAML, or breaks the schema.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read workflow file: {exc.strerror or exc}",
                        [("(file)", str(exc))]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}", [("(yaml)", str(exc))]) from exc
    return parse_workflow(data, path.resolve().parent, str(path))
