"""The block-consumer contract as tests (zarr-python's ``StoreTests`` shape): every statistic
that consumes an item's finished blocks gets one subclass of :class:`BlockConsumerContract`;
every test is inherited.

The contract (:class:`~geoseg_pipeline.stitching.consumer.BlockConsumer`): the result does not
depend on the order of the blocks, nor on how the item is cut into blocks. Both are checked
exactly (``==``); the result is also checked against a reference computed from the whole label
map at once, within ``reference_rel`` (floating-point sums may be grouped differently there).

A subclass provides:

* ``make_consumer()``: a new consumer for the item;
* ``label_map()``: the item's label map (2D or 3D), and optionally ``valid_map()``;
* ``block_shapes``: two different block shapes to cut it into (several blocks each);
* ``reference()``: the expected result, computed without the consumer;
* optionally ``reference_rel``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from geoseg_pipeline.geometry import Window, full_window
from geoseg_pipeline.stitching.consumer import BlockConsumer, LabelBlock


def block_windows(shape: Sequence[int], block: Sequence[int]) -> list[Window]:
    """The block lattice of ``shape``, clipped at the far edges, in row-major order."""
    starts = itertools.product(*(range(0, n, b) for n, b in zip(shape, block, strict=True)))
    return [Window(s, tuple(min(b, n - a) for a, b, n in zip(s, block, shape, strict=True))) for s in starts]


def assert_same_result(got: Any, want: Any, rel: float = 0.0, where: str = "result") -> None:
    """``got == want``, field by field so that a failure names the field; floats within ``rel``
    (relative) when it is not 0."""
    if dataclasses.is_dataclass(got) and not isinstance(got, type):
        assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
        for f in dataclasses.fields(got):
            assert_same_result(getattr(got, f.name), getattr(want, f.name), rel, f"{where}.{f.name}")
    elif isinstance(got, list | tuple):
        assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
        assert len(got) == len(want), f"{where}: {len(got)} entries != {len(want)}"
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same_result(a, b, rel, f"{where}[{i}]")
    elif isinstance(got, dict):
        assert isinstance(want, dict) and got.keys() == want.keys(), f"{where}: keys differ"
        for key in got:
            assert_same_result(got[key], want[key], rel, f"{where}[{key!r}]")
    elif isinstance(got, float) and rel:
        assert isinstance(want, float) and math.isclose(got, want, rel_tol=rel, abs_tol=1e-300), (
            f"{where}: {got!r} != {want!r} (rel {rel})"
        )
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
    if not rel:
        assert got == want, where


class BlockConsumerContract:
    """The :class:`~geoseg_pipeline.stitching.consumer.BlockConsumer` contract."""

    #: Two different block shapes (each cutting the item into several blocks).
    block_shapes: ClassVar[tuple[tuple[int, ...], tuple[int, ...]]]
    #: Relative tolerance of floats against :meth:`reference` (0: exact).
    reference_rel: ClassVar[float] = 0.0

    def make_consumer(self) -> BlockConsumer[Any]:
        """A new consumer of the item; the subclass's job."""
        raise NotImplementedError

    def label_map(self) -> np.ndarray:
        """The item's label map; the subclass's job."""
        raise NotImplementedError

    def valid_map(self) -> np.ndarray | None:
        """Pixels with a prediction (``None``: all)."""
        return None

    def reference(self) -> Any:
        """The expected result, computed from the whole label map without the consumer."""
        raise NotImplementedError

    def feed(self, windows: Sequence[Window]) -> Any:
        """A new consumer's result after adding the blocks of ``windows`` in that order."""
        labels, valid = self.label_map(), self.valid_map()
        consumer = self.make_consumer()
        for window in windows:
            part = None if valid is None else valid[window.slices()].copy()
            consumer.add(LabelBlock(window, labels[window.slices()].copy(), part))
        return consumer.finish()

    def windows(self, which: int = 0, seed: int | None = None) -> list[Window]:
        """The blocks of ``block_shapes[which]``, shuffled with ``seed`` (row-major when ``None``)."""
        windows = block_windows(self.label_map().shape, self.block_shapes[which])
        assert len(windows) >= 4, "the item must cut into several blocks"
        if seed is not None:
            random.Random(seed).shuffle(windows)
        return windows

    # --- the contract -----------------------------------------------------------------------------

    def test_is_a_block_consumer(self) -> None:
        assert isinstance(self.make_consumer(), BlockConsumer)

    def test_the_result_is_the_reference(self) -> None:
        assert_same_result(self.feed(self.windows()), self.reference(), self.reference_rel)

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_the_order_of_the_blocks_does_not_matter(self, seed: int) -> None:
        in_order = self.feed(self.windows())
        shuffled = self.windows(seed=seed)
        assert shuffled != self.windows()
        assert_same_result(self.feed(shuffled), in_order)

    @pytest.mark.parametrize("cut", ["other block shape", "other block shape, reversed", "one block"])
    def test_the_block_shape_does_not_matter(self, cut: str) -> None:
        in_order = self.feed(self.windows())
        if cut == "one block":
            windows = [full_window(self.label_map().shape)]
        else:
            windows = self.windows(1)[:: -1 if "reversed" in cut else 1]
        assert_same_result(self.feed(windows), in_order)


__all__ = ["BlockConsumerContract", "assert_same_result", "block_windows"]
