"""The open blocks of one raster band as torch tensors on the worker's device: each window's
logits are blended straight into the blocks it covers (MONAI's ``output += pred * importance``,
with no per-task buffer in between), and a block is argmaxed where it lies once its last task
is in; only its labels (and, when asked, its logits) go to the host.

Volumes keep :class:`~geoseg_pipeline.stitching.BlockStitcher`: a volume band's open blocks
span a whole plane of blocks (``classes × block`` each), which that stitcher keeps in scratch
files rather than in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import Window, full_window, intersection
from ..stitching import FinishedBlock
from ..stitching.blocks import check_no_nan, class_argmax, finished_block
from ..tasks import StitchSettings
from ..tiling import TilePlan, TileTask

#: Finished blocks' tensors kept for reuse, per block shape.
SPARE_BLOCKS = 2


@dataclass
class _Open:
    """One open block: the weighted logit sums and weight sums (on the device), the pixels that
    had valid input (on the host), and how many of its tasks are still to come."""

    window: Window
    sums: torch.Tensor
    weights: torch.Tensor
    seen: np.ndarray
    remaining: int


class DeviceBandStitcher:
    """Blends the windows of one band's tasks into its open blocks on ``device``.

    Args:
        plan: the item's plan.
        settings: classes, nodata label, label type, whether logits are kept.
        done: blocks not to open (other bands', or committed by an earlier run).
        device: where the sums live (the model's device).
    """

    def __init__(self, plan: TilePlan, settings: StitchSettings, done: Iterable[tuple[int, ...]],
                 device: torch.device) -> None:
        self.plan, self.settings, self.device = plan, settings, device
        self._done = frozenset(done)
        self._remaining = {ix: n for ix, n in plan.contributions().items() if ix not in self._done}
        self._open: dict[tuple[int, ...], _Open] = {}
        self._image = full_window(plan.image_shape)
        # finished blocks' tensors, zeroed and reused: a fresh allocation of this size costs
        # page faults on a CPU, more than clearing one
        self._spare: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def done(self) -> bool:
        """Whether every block it had to finish is finished."""
        return not self._remaining and not self._open

    def _block(self, index: tuple[int, ...]) -> _Open:
        block = self._open.get(index)
        if block is None:
            window = self.plan.block_window(index)
            spare = self._spare.get(window.size)
            if spare:
                sums, weights = spare.pop()
                sums.zero_()
                weights.zero_()
            else:
                sums = torch.zeros((self.settings.num_classes, *window.size), dtype=torch.float32, device=self.device)
                weights = torch.zeros(window.size, dtype=torch.float32, device=self.device)
            block = self._open[index] = _Open(window, sums, weights, np.zeros(window.size, bool),
                                              self._remaining.pop(index))
        return block

    def _blocks(self, part: Window) -> list[tuple[int, ...]]:
        """The blocks ``part`` (inside the image) overlaps that this stitcher finishes."""
        lo = [s // b for s, b in zip(part.start, self.plan.block_shape, strict=True)]
        hi = [(e - 1) // b for e, b in zip(part.stop, self.plan.block_shape, strict=True)]
        found: list[tuple[int, ...]] = []
        for i in range(lo[0], hi[0] + 1):
            for j in range(lo[1], hi[1] + 1):
                if (i, j) not in self._done:
                    found.append((i, j))
        return found

    def add_window(self, window: Window, logits: torch.Tensor, weights: torch.Tensor) -> None:
        """Blend one window's ``logits`` ``(classes, *roi)`` with the importance map ``weights``."""
        inside = intersection(window, self._image)
        if inside is None:
            return
        for index in self._blocks(inside):
            block = self._block(index)
            part = intersection(inside, block.window)
            if part is None:
                continue
            dst, src = part.slices(block.window.start), part.slices(window.start)
            block.sums[(slice(None), *dst)].addcmul_(logits[(slice(None), *src)], weights[src])
            block.weights[dst] += weights[src]

    def end_task(self, task: TileTask, valid: np.ndarray, inside: Window) -> list[FinishedBlock]:
        """Every window of ``task`` is in: mark its valid input pixels (``valid`` over the task's
        region), count it, and finish the blocks that had no other task to wait for."""
        finished = []
        region = task.region
        for index in self._blocks(inside):
            block = self._block(index)
            part = intersection(inside, block.window)
            if part is not None:
                block.seen[part.slices(block.window.start)] |= valid[part.slices(region.start)]
            block.remaining -= 1
            if block.remaining == 0:
                finished.append(self._finish(index, self._open.pop(index)))
        return finished

    def _finish(self, index: tuple[int, ...], block: _Open) -> FinishedBlock:
        st, sums = self.settings, block.sums

        valid = block.seen & (block.weights > 0).cpu().numpy()

        def argmax() -> np.ndarray:
            # numpy beats torch's argmax over the class axis on a CPU; on a GPU it stays there
            if sums.device.type == "cpu":
                return class_argmax(sums.numpy(), valid, block.window)
            nan = torch.isnan(sums)
            if bool(nan.any()):  # one number to the host per block; the per-pixel plane only for a message
                check_no_nan(nan.any(dim=0).cpu().numpy(), valid, block.window)
            best: np.ndarray = torch.argmax(sums, dim=0).cpu().numpy()
            return best

        logits = (sums / block.weights).cpu().numpy() if st.keep_logits else None
        finished = finished_block(block.window, index, valid, argmax, st.nodata_label, np.dtype(st.label_dtype),
                                  logits)
        spare = self._spare.setdefault(block.window.size, [])
        if len(spare) < SPARE_BLOCKS:
            spare.append((block.sums, block.weights))  # the labels and logits above are copies
        return finished
