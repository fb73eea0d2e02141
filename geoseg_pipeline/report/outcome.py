"""How one item of a job ended: the value the job summary and the cohort report are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..statistics import ItemStats


@dataclass(frozen=True)
class ItemOutcome:
    """How one item ended: ``ok`` with its stats, or ``failed`` with the reason."""

    item: str
    source: str
    status: str
    stats: ItemStats | None = None
    error: str = ""
    outputs: tuple[str, ...] = ()
    seconds: float = 0.0
    windows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
