"""One item's lifecycle in a job, apart from the scheduling loop: open it (plan, block journal,
stitcher, blocks resumed from an earlier run), add task results, write finished blocks, commit
or fail. Ray-free and torch-free: the scheduler (:mod:`.driver`) decides what runs where.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..items import OpenItem, open_item
from ..ledger import ItemKey
from ..report import ItemOutcome
from ..sinks import ClassLegend
from ..sinks.publish import Publisher
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..stitching import BlockJournal, BlockStitcher, journal_key
from ..storage import S3Config
from ..tasks import ModelInfo, TileResult
from ..tiling import TileTask

log = logging.getLogger("geoseg")


@dataclass
class ItemRun:
    """An open item and its progress through the job."""

    opened: OpenItem
    tasks: Iterator[TileTask]
    stitcher: BlockStitcher
    journal: BlockJournal
    task_total: int
    window_total: int
    blocks_resumed: int = 0
    started: float = field(default_factory=time.monotonic)
    inflight: int = 0
    submitted: int = 0
    windows_run: int = 0
    windows_skipped: int = 0
    failed: str | None = None

    @classmethod
    def open(cls, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend, key: ItemKey,
             s3: S3Config | None = None, force: bool = False) -> ItemRun:
        """Open ``item`` (metadata only), its block journal, and write the blocks an earlier run
        committed; only the tasks still needed are left to run.

        Raises:
            GeosegError, OSError, ValueError: the item cannot be opened (the reason names it).
        """
        item_dir = spec.output.directory / item.name
        clear_leftovers(item_dir)
        opened = open_item(item, spec, info, legend, s3)
        plan = opened.plan
        journal: BlockJournal | None = None
        try:
            journal = BlockJournal(item_dir, journal_key(key, plan.image_shape, plan.block_shape),
                                   opened.nodata_label, fresh=force, active=math.prod(plan.block_grid) > 1)
            done = resume(opened, journal)
            stitcher = BlockStitcher(plan, info.num_classes, opened.nodata_label, np.dtype(opened.label_dtype),
                                     keep_logits=opened.keep_logits, scratch=opened.scratch, done=done)
        except BaseException:
            opened.abort()
            if journal is not None:
                journal.release()
            raise
        if opened.small:
            log.warning("%s: %s is smaller than the roi %s; padded with zeros as MONAI does",
                        item.name, plan.image_shape, spec.tiling.roi_size)
        tasks, task_total, windows = plan.tasks(), plan.task_count, plan.window_count
        if done:
            needed = [t for t in plan.tasks() if stitcher.needs(t.region)]
            tasks, task_total, windows = iter(needed), len(needed), sum(len(t.windows) for t in needed)
            log.info("%s: resuming: %d of %d blocks were committed by an earlier run; %d of %d tasks to run",
                     item.name, len(done), math.prod(plan.block_grid), task_total, plan.task_count)
        log.info("%s: %s, %d windows in %d tasks", item.name, " x ".join(map(str, plan.image_shape)),
                 windows, task_total)
        return cls(opened, tasks, stitcher, journal, task_total, windows, blocks_resumed=len(done))

    @property
    def item(self) -> Item:
        """The input item."""
        return self.opened.item

    @property
    def exhausted(self) -> bool:
        """Every tile task of the item has been handed to an actor."""
        return self.submitted == self.task_total

    @property
    def complete(self) -> bool:
        """Every task came back and every block is written: ready to commit."""
        return self.exhausted and self.inflight == 0 and self.stitcher.done

    @property
    def empty(self) -> bool:
        """Nothing was segmented: every window lay in nodata (and no block was resumed)."""
        return self.windows_run == 0 and self.blocks_resumed == 0

    def next_task(self) -> TileTask | None:
        """The next task to hand out, if any."""
        if self.failed or self.exhausted:
            return None
        task = next(self.tasks, None)
        if task is not None:
            self.submitted += 1
        return task

    def add(self, result: TileResult) -> None:
        """Stitch one task's result; write and journal the blocks it finished.

        Raises:
            GeosegError, OSError: a block cannot be written.
        """
        self.windows_run += result.windows_run
        self.windows_skipped += result.windows_skipped
        for block in self.stitcher.add(result):
            self.opened.write(block)
            self.journal.save(block)

    def fail(self, reason: str) -> None:
        """Drop everything of the item (its journal is kept for a later run)."""
        self.failed = reason
        self.stitcher.discard()
        self.opened.abort()
        self.journal.release()

    def drop(self) -> None:
        """Nothing to publish (every pixel nodata): drop outputs and journal."""
        self.opened.abort()
        self.journal.clear()

    def commit(self, publisher: Publisher | None, out_root: Path) -> ItemOutcome:
        """Publish the item's outputs (to the object store too, with a ``publisher``); its
        outcome. Runs in the driver's commit thread."""
        meta: dict[str, Any] = {"windows_run": self.windows_run, "windows_skipped_nodata": self.windows_skipped,
                                "padded_to_roi": self.opened.small, "blocks_resumed": self.blocks_resumed}
        stats, paths = self.opened.commit(meta)
        outputs = tuple(str(p) for p in paths)
        if publisher is not None:
            outputs = publisher.publish_item(out_root / self.item.name, self.item.name)
        return ItemOutcome(self.item.name, self.item.path, "ok", stats=stats, outputs=outputs,
                           seconds=time.monotonic() - self.started, windows=self.windows_run)


def clear_leftovers(item_dir: Path) -> None:
    """Remove the staging and scratch folders a killed run left in ``OUT/<item>`` (only one run
    writes to an output directory at a time: see :class:`~geoseg_pipeline.ledger.OutputLock`)."""
    if item_dir.is_dir():
        for leftover in [*item_dir.glob(".staging-*"), *item_dir.glob(".scratch-*")]:
            shutil.rmtree(leftover, ignore_errors=True)


def resume(opened: OpenItem, journal: BlockJournal) -> set[tuple[int, ...]]:
    """Write the blocks an earlier run committed to ``journal`` into the new outputs and
    statistics; returns their indices. A block file that cannot be read is computed again."""
    plan = opened.plan
    done = set()
    for index in sorted(journal.committed() & set(plan.blocks())):
        try:
            block = journal.load(index, plan.block_window(index))
        except OSError as exc:
            log.warning("%s; that block is computed again", exc)
            continue
        opened.write(block)
        done.add(index)
    return done


__all__ = ["ItemRun", "clear_leftovers", "resume"]
