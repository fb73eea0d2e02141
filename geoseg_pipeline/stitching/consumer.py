"""What consumes finished blocks: sinks and statistics alike (MONAI's ``Merger`` shape:
``aggregate`` = :meth:`BlockConsumer.add`, ``finalize`` = :meth:`BlockConsumer.finish`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from ..geometry import Window
from ..tasks import BlockRegions

T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class LabelBlock:
    """One finished output block on an item's grid.

    ``labels``: class index per pixel (the nodata label where invalid); ``valid``: pixels with
    a prediction (``None``: all); ``logits``: blended logits ``(classes, *block)``, when kept;
    ``row_counts``: valid pixels per (row, class), when the worker that finished the block
    counted them already (:func:`~geoseg_pipeline.statistics.classes.row_class_counts`);
    ``regions``: its connected regions, when that worker found them for the polygon outputs.
    """

    window: Window
    labels: np.ndarray
    valid: np.ndarray | None = None
    logits: np.ndarray | None = None
    row_counts: np.ndarray | None = None
    regions: BlockRegions | None = None


@runtime_checkable
class BlockConsumer(Protocol[T_co]):
    """Takes every finished block of one item once, in any order, then gives its result.

    Contract (``tests/statistics/statistic_contract.py`` checks it for every statistic): the result does
    not depend on the order of the blocks, nor on how the item is cut into blocks.
    """

    def add(self, block: LabelBlock) -> None:
        """Take one finished block."""

    def finish(self) -> T_co:
        """Everything was added: the result."""


__all__ = ["BlockConsumer", "LabelBlock"]
