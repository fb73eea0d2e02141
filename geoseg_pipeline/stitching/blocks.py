"""Accumulate task partial sums into output blocks; hand each block over once it is final.

A block is final when every task whose region touches it has been added (the counts come from
the plan), so blocks finish in roughly row-major order and only a band of blocks about one
block-row tall is ever held in memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..geometry import Window, intersection
from ..tasks import TileResult
from ..tiling import TilePlan


@dataclass(frozen=True)
class FinishedBlock:
    """One final output block.

    ``labels``: class index per pixel, ``nodata_label`` where invalid; ``valid``: pixels with a
    prediction; ``logits``: blended logits ``(classes, *block)`` (NaN where invalid), only when
    the stitcher keeps them.
    """

    index: tuple[int, ...]
    window: Window
    labels: np.ndarray
    valid: np.ndarray
    logits: np.ndarray | None


class _Accumulator:
    __slots__ = ("logits", "remaining", "valid", "weights")

    def __init__(self, shape: tuple[int, ...], classes: int, remaining: int) -> None:
        self.logits = np.zeros((classes, *shape), dtype=np.float32)
        self.weights = np.zeros(shape, dtype=np.float32)
        self.valid = np.zeros(shape, dtype=bool)
        self.remaining = remaining


class BlockStitcher:
    """Blend :class:`TileResult` s of one item into :class:`FinishedBlock` s.

    Args:
        plan: the item's tiling plan.
        num_classes: model output channels.
        nodata_label: label written where there is no valid input.
        label_dtype: ``uint8`` or ``uint16``.
        keep_logits: also return the blended logits of each block.
    """

    def __init__(
        self,
        plan: TilePlan,
        num_classes: int,
        nodata_label: int | None,
        label_dtype: np.dtype,
        keep_logits: bool = False,
    ) -> None:
        self.plan = plan
        self.num_classes = num_classes
        self.nodata_label = nodata_label
        self.label_dtype = np.dtype(label_dtype)
        self.keep_logits = keep_logits
        self._remaining = plan.contributions()
        self._open: dict[tuple[int, ...], _Accumulator] = {}

    @property
    def open_blocks(self) -> int:
        """Blocks currently held in memory."""
        return len(self._open)

    @property
    def done(self) -> bool:
        """Whether every block has been finished."""
        return not self._remaining and not self._open

    def add(self, result: TileResult) -> list[FinishedBlock]:
        """Add one task's partial sums; return the blocks this made final."""
        region = result.region
        finished = []
        for index in self._blocks_of(region):
            bw = self.plan.block_window(index)
            acc = self._open.get(index)
            if acc is None:
                acc = _Accumulator(bw.size, self.num_classes, self._remaining.pop(index))
                self._open[index] = acc
            part = intersection(region, bw)
            if part is not None:
                dst, src = part.slices(bw.start), part.slices(region.start)
                if result.logits.shape[0]:
                    acc.logits[(slice(None), *dst)] += result.logits[(slice(None), *src)]
                    acc.weights[dst] += result.weights[src]
                acc.valid[dst] |= result.valid[src]
            acc.remaining -= 1
            if acc.remaining == 0:
                finished.append(self._finish(index, bw, self._open.pop(index)))
        return finished

    def _blocks_of(self, region: Window) -> list[tuple[int, ...]]:
        ranges = [
            range(region.start[i] // b, (region.stop[i] - 1) // b + 1)
            for i, b in enumerate(self.plan.block_shape)
        ]
        return [tuple(ix) for ix in itertools.product(*ranges)]

    def _finish(self, index: tuple[int, ...], window: Window, acc: _Accumulator) -> FinishedBlock:
        valid = acc.valid & (acc.weights > 0)
        labels = np.full(window.size, self.nodata_label or 0, dtype=self.label_dtype)
        if valid.any():
            labels[valid] = np.argmax(acc.logits[:, valid], axis=0).astype(self.label_dtype)
        logits = None
        if self.keep_logits:
            with np.errstate(invalid="ignore", divide="ignore"):
                logits = acc.logits / acc.weights
            logits[:, ~valid] = np.nan
        return FinishedBlock(index, window, labels, valid, logits)
