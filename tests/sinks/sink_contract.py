"""The label-sink contract as tests (zarr-python's ``StoreTests`` shape): every sink gets one
subclass of :class:`LabelSinkContract` that says how to make it and how to read back what it
published; every test is inherited.

A subclass provides:

* ``make_sink(out_dir)``: a sink for a small grid (odd sizes) writing into ``out_dir``;
* ``label_map()``: the label map written in the tests (2D or 3D, on that grid);
* ``read_labels(main)``: the published label map, read from the main output's path;
* ``block``: the block shape the tests cut the label map into;
* ``main_name`` and ``output_names``: the main output's name and every name published;
* optionally ``logits_classes`` and ``read_logits(out_dir)`` for a sink that keeps logits.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from geoseg_pipeline.errors import SinkError
from geoseg_pipeline.geometry import Window, full_window
from geoseg_pipeline.sinks import base as sinks_base
from geoseg_pipeline.sinks.base import LabelSink, StagedSink, commit_together
from geoseg_pipeline.stitching.consumer import BlockConsumer, LabelBlock


def block_windows(shape: Sequence[int], block: Sequence[int]) -> list[Window]:
    """The block lattice of ``shape``, clipped at the far edges, in row-major order."""
    starts = itertools.product(*(range(0, n, b) for n, b in zip(shape, block, strict=True)))
    return [Window(s, tuple(min(b, n - a) for a, b, n in zip(s, block, shape, strict=True))) for s in starts]


def listing(folder: Path) -> list[str]:
    """The names in ``folder``, sorted (``[]`` when it is gone)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class LabelSinkContract:
    """The :class:`~geoseg_pipeline.sinks.base.LabelSink` contract."""

    #: Block shape used to cut :meth:`label_map`.
    block: ClassVar[tuple[int, ...]]
    #: The main output's name in ``out_dir`` (what ``commit`` returns).
    main_name: ClassVar[str]
    #: Every name ``commit`` publishes in ``out_dir``.
    output_names: ClassVar[frozenset[str]]
    #: Logit channels the sink keeps (``None``: it keeps none).
    logits_classes: ClassVar[int | None] = None

    def make_sink(self, out_dir: Path) -> StagedSink:
        """A new sink writing into ``out_dir``; the subclass's job."""
        raise NotImplementedError

    def label_map(self) -> np.ndarray:
        """The label map the tests write; the subclass's job."""
        raise NotImplementedError

    def read_labels(self, main: Path) -> np.ndarray:
        """The published label map, from the main output; the subclass's job."""
        raise NotImplementedError

    def read_logits(self, out_dir: Path) -> np.ndarray:
        """The published logits ``(classes, *grid)``, for a sink with ``logits_classes``."""
        raise NotImplementedError

    # --- helpers ----------------------------------------------------------------------------------

    def logits(self) -> np.ndarray | None:
        """Logits matching :meth:`label_map` (distinct values per class and pixel)."""
        if self.logits_classes is None:
            return None
        shape = (self.logits_classes, *self.label_map().shape)
        return np.random.default_rng(17).standard_normal(shape).astype(np.float32)

    def write_blocks(self, sink: StagedSink, seed: int | None = 0, count: int | None = None) -> None:
        """Write the label map block by block, shuffled with ``seed`` (row-major when ``None``);
        only the first ``count`` blocks when given."""
        labels, logits = self.label_map(), self.logits()
        windows = block_windows(labels.shape, self.block)
        assert len(windows) >= 4, "the grid must cut into several blocks"
        if seed is not None:
            random.Random(seed).shuffle(windows)
        for window in windows[:count]:
            part = None if logits is None else np.ascontiguousarray(logits[(slice(None), *window.slices())])
            sink.write(window, np.ascontiguousarray(labels[window.slices()]), part)

    def assert_nothing_left(self, out_dir: Path) -> None:
        assert listing(out_dir) == [], f"{out_dir} keeps {listing(out_dir)}"

    def assert_only_staging(self, out_dir: Path, sink: StagedSink) -> None:
        names = listing(out_dir)
        assert names == [sink.staging.name], names
        assert sink.staging.name.startswith(".staging-") and sink.staging.is_dir()

    # --- writing and publishing -------------------------------------------------------------------

    def test_is_a_label_sink_and_a_block_consumer(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        assert isinstance(sink, LabelSink)
        assert isinstance(sink, BlockConsumer)
        assert sink.out_dir == tmp_path / "item"
        sink.abort()

    @pytest.mark.parametrize("seed", [None, 0, 1])
    def test_blocks_in_any_order_give_the_label_map(self, tmp_path: Path, seed: int | None) -> None:
        sink = self.make_sink(tmp_path / "item")
        self.write_blocks(sink, seed)
        main = sink.commit()
        got = self.read_labels(main)
        expected = self.label_map()
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)

    def test_logits_round_trip(self, tmp_path: Path) -> None:
        """A sink that keeps logits publishes them exactly; one that does not, publishes none
        (and takes blocks without logits)."""
        sink = self.make_sink(tmp_path / "item")
        self.write_blocks(sink, 3)
        sink.commit()
        if self.logits_classes is None:
            assert not (tmp_path / "item" / "logits.tif").exists()
            assert sink.needs_logits is False
        else:
            assert sink.needs_logits is True
            np.testing.assert_array_equal(self.read_logits(tmp_path / "item"), self.logits())

    def test_add_and_finish_are_write_and_commit(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        labels, logits = self.label_map(), self.logits()
        for window in reversed(block_windows(labels.shape, self.block)):
            part = None if logits is None else np.ascontiguousarray(logits[(slice(None), *window.slices())])
            sink.add(LabelBlock(window, np.ascontiguousarray(labels[window.slices()]), logits=part))
        main = sink.finish()
        assert main == tmp_path / "item" / self.main_name
        np.testing.assert_array_equal(self.read_labels(main), labels)

    def test_nothing_under_the_final_names_before_commit(self, tmp_path: Path) -> None:
        out = tmp_path / "item"
        sink = self.make_sink(out)
        self.assert_only_staging(out, sink)
        self.write_blocks(sink)
        self.assert_only_staging(out, sink)
        sink.prepare()  # everything that can fail is done, nothing is published yet
        self.assert_only_staging(out, sink)
        assert sink.publish() == out / self.main_name

    def test_commit_publishes_every_output_main_last(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        out = tmp_path / "item"
        sink = self.make_sink(out)
        self.write_blocks(sink)
        renames: list[tuple[Path, Path]] = []
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            renames.append((Path(src), Path(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        main = sink.commit()
        monkeypatch.undo()
        assert main == out / self.main_name
        assert listing(out) == sorted(self.output_names)  # the staging folder is gone
        assert {dst.name for _, dst in renames} == self.output_names
        assert all(src.parent == sink.staging for src, _ in renames), renames  # renamed, not copied
        assert all(dst.parent == out for _, dst in renames), renames
        assert renames[-1][1] == main  # the main output appears last
        assert sink.outputs[-1] == main and set(sink.outputs) == {out / n for n in self.output_names}

    def test_commit_replaces_an_earlier_output(self, tmp_path: Path) -> None:
        out = tmp_path / "item"
        first = self.make_sink(out)
        for window in block_windows(self.label_map().shape, self.block):
            first.write(window, np.zeros(window.size, dtype=np.uint8), self._zero_logits(window))
        first.commit()
        second = self.make_sink(out)
        self.write_blocks(second)
        main = second.commit()
        assert listing(out) == sorted(self.output_names)
        np.testing.assert_array_equal(self.read_labels(main), self.label_map())

    def _zero_logits(self, window: Window) -> np.ndarray | None:
        if self.logits_classes is None:
            return None
        return np.zeros((self.logits_classes, *window.size), dtype=np.float32)

    # --- abort ------------------------------------------------------------------------------------

    def test_abort_before_any_write_leaves_nothing(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        sink.abort()
        self.assert_nothing_left(tmp_path / "item")
        sink.abort()  # again: nothing to do, no error

    def test_abort_after_some_writes_leaves_nothing(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        self.write_blocks(sink, count=3)
        sink.abort()
        self.assert_nothing_left(tmp_path / "item")

    def test_abort_after_prepare_leaves_nothing(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        self.write_blocks(sink)
        sink.prepare()
        sink.abort()
        self.assert_nothing_left(tmp_path / "item")
        with pytest.raises(SinkError):
            sink.publish()
        self.assert_nothing_left(tmp_path / "item")

    # --- misuse -----------------------------------------------------------------------------------

    def test_write_after_commit_raises(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        self.write_blocks(sink)
        main = sink.commit()
        window = block_windows(self.label_map().shape, self.block)[0]
        with pytest.raises(SinkError):
            sink.write(window, np.zeros(window.size, dtype=np.uint8), self._zero_logits(window))
        np.testing.assert_array_equal(self.read_labels(main), self.label_map())  # untouched

    def test_write_after_abort_raises(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        sink.abort()
        window = block_windows(self.label_map().shape, self.block)[0]
        with pytest.raises(SinkError):
            sink.write(window, np.zeros(window.size, dtype=np.uint8), self._zero_logits(window))
        self.assert_nothing_left(tmp_path / "item")

    def test_commit_after_abort_raises(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        self.write_blocks(sink)
        sink.abort()
        with pytest.raises(SinkError):
            sink.commit()
        self.assert_nothing_left(tmp_path / "item")

    def test_commit_twice_raises_and_keeps_the_outputs(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path / "item")
        self.write_blocks(sink)
        main = sink.commit()
        with pytest.raises(SinkError):
            sink.commit()
        assert listing(tmp_path / "item") == sorted(self.output_names)
        np.testing.assert_array_equal(self.read_labels(main), self.label_map())

    def test_blocks_outside_the_grid_raise(self, tmp_path: Path) -> None:
        shape = self.label_map().shape
        ndim = len(shape)
        bad = [Window((-1,) + (0,) * (ndim - 1), (2,) * ndim), Window(tuple(shape), (1,) * ndim)]
        for axis in range(ndim):
            start = [0] * ndim
            start[axis] = shape[axis] - 1
            bad.append(Window(tuple(start), (2,) * ndim))  # one pixel inside, one past the edge
        bad.append(full_window((*shape, 1)))  # another number of axes
        sink = self.make_sink(tmp_path / "item")
        for window in bad:
            with pytest.raises(SinkError):
                sink.write(window, np.zeros(window.size, dtype=np.uint8), self._zero_logits(window))
                pytest.fail(f"block {window} on grid {shape} was accepted")
        window = Window((0,) * ndim, (2,) * ndim)
        with pytest.raises(SinkError):  # labels of another shape than the block
            sink.write(window, np.zeros((3,) * ndim, dtype=np.uint8), self._zero_logits(window))
        sink.abort()
        self.assert_nothing_left(tmp_path / "item")

    # --- an item's sinks together -----------------------------------------------------------------

    def test_commit_together_publishes_all(self, tmp_path: Path) -> None:
        sinks = [self.make_sink(tmp_path / "a"), self.make_sink(tmp_path / "b")]
        for sink in sinks:
            self.write_blocks(sink)
        assert commit_together(sinks) == [tmp_path / "a" / self.main_name, tmp_path / "b" / self.main_name]
        for name in ("a", "b"):
            assert listing(tmp_path / name) == sorted(self.output_names)
            np.testing.assert_array_equal(self.read_labels(tmp_path / name / self.main_name), self.label_map())

    def test_commit_together_when_the_second_fails_to_prepare(self, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
        first, second = self.make_sink(tmp_path / "a"), self.make_sink(tmp_path / "b")
        for sink in (first, second):
            self.write_blocks(sink)

        def disk_full() -> list[tuple[Path, Path]]:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(second, "_prepare", disk_full)
        with pytest.raises(SinkError, match="No space left"):
            commit_together([first, second])
        self.assert_nothing_left(tmp_path / "a")
        self.assert_nothing_left(tmp_path / "b")
        window = block_windows(self.label_map().shape, self.block)[0]
        for sink in (first, second):  # both are aborted
            with pytest.raises(SinkError):
                sink.write(window, np.zeros(window.size, dtype=np.uint8), self._zero_logits(window))

    def test_commit_together_when_the_second_fails_to_publish(self, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
        first, second = self.make_sink(tmp_path / "a"), self.make_sink(tmp_path / "b")
        for sink in (first, second):
            self.write_blocks(sink)
        real = sinks_base._replace

        def replace(staged: Path, final: Path, staging: Path) -> None:
            if final == second.out_dir / self.main_name:  # its other outputs are already in place
                raise OSError(5, "Input/output error")
            real(staged, final, staging)

        monkeypatch.setattr(sinks_base, "_replace", replace)
        with pytest.raises(SinkError, match="Input/output error"):
            commit_together([first, second])
        self.assert_nothing_left(tmp_path / "a")  # the first was published, then retracted
        self.assert_nothing_left(tmp_path / "b")


__all__ = ["LabelSinkContract", "block_windows", "listing"]
