"""One item's lifecycle in a job, apart from the scheduling loop: open it (plan, bands, block
journal, blocks resumed from an earlier run), take each band's finished blocks from the workers,
write and journal them, commit or fail. Ray-free and torch-free: the scheduler (:mod:`.driver`)
decides what runs where.

The workers finish the blocks (blend, argmax): the driver receives labels, one byte (two above
255 classes) per pixel, never logits unless the workflow writes them.
"""

from __future__ import annotations

import errno
import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SinkError, TransientSourceError
from ..items import OpenItem, open_item
from ..ledger import ItemKey
from ..report import ItemOutcome
from ..sinks import ClassLegend
from ..sinks.base import disk_note
from ..sinks.publish import Publisher
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..statistics import ItemZones
from ..stitching import BlockJournal, FinishedBlock, journal_key
from ..storage import S3Config, is_transient
from ..storage.retry import TALLY, retrying
from ..storage.transient import is_network_path
from ..tasks import BandResult, ItemFacts, ItemJob, ModelInfo, StitchSettings
from ..tiling import BandTask

log = logging.getLogger("geoseg")


@dataclass
class ItemRun:
    """An open item and its progress through the job."""

    opened: OpenItem
    job: ItemJob
    tasks: Iterator[BandTask]
    journal: BlockJournal
    task_total: int
    window_total: int
    done: set[tuple[int, ...]]
    blocks_resumed: int = 0
    bands: int = 1
    started: float = field(default_factory=time.monotonic)
    inflight: int = 0
    submitted: int = 0
    windows_run: int = 0
    windows_skipped: int = 0
    halo_windows: int = 0
    bytes_received: int = 0
    failed: str | None = None
    again: list[BandTask] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    bands_rerun: int = 0
    windows_redone: int = 0

    @classmethod
    def open(cls, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend, key: ItemKey,
             s3: S3Config | None = None, force: bool = False, bands: int = 1,
             prepare: Callable[[ItemJob], ItemFacts] | None = None, zones: ItemZones | None = None) -> ItemRun:
        """Open ``item`` (metadata only), its block journal, and write the blocks an earlier run
        committed; the item is cut into ``bands`` bands and only those with a block still to
        write are left to run. An item with bands to run that a worker must prepare first (stage
        it, compute its z-score: ``ItemJob.needs_preparation``) is handed to ``prepare`` (a
        worker pool's), so that this process never reads its pixels.

        Raises:
            GeosegError, OSError, ValueError: the item cannot be opened (the reason names it).
        """
        item_dir = spec.output.directory / item.name
        clear_leftovers(item_dir)
        provenance = {"model_version": key.model_hash[:16], "model_hash": key.model_hash}
        opened = retrying(lambda: open_item(item, spec, info, legend, s3, provenance, zones),
                          what=f"{item.path}: open", kind="read", key=item.path, attempts=OPEN_ATTEMPTS,
                          transient=lambda e: _may_pass(e, item.path))
        facts: list[ItemFacts] = []
        if opened.job.nnunet is not None:
            # planned on the case a worker preprocesses (the nonzero crop needs its pixels)
            if prepare is None:
                opened.abort()
                raise ValueError(f"{item.path}: an nnU-Net item must be preprocessed by a worker; none was given")
            try:
                facts.append(prepare(opened.job))
                opened.planned(opened.job.prepared(facts[-1]))  # type: ignore[attr-defined]
            except BaseException:
                opened.abort()
                raise
        plan = opened.plan
        journal: BlockJournal | None = None
        try:
            # an nnU-Net item's blocks carry their logits (the export's input): the journal keeps them
            journal = BlockJournal(item_dir, journal_key(key, plan.image_shape, plan.block_shape),
                                   opened.nodata_label, fresh=force, active=math.prod(plan.block_grid) > 1)
            done = resume(opened, journal)
        except BaseException:
            opened.abort()
            if journal is not None:
                journal.release()
            raise
        if opened.small:
            log.warning("%s: %s is smaller than the roi %s; padded with zeros as MONAI does",
                        item.name, plan.image_shape, spec.tiling.roi_size)
        cut = plan.bands(bands, done)
        needed = [b for b in cut if plan.band_needed(b)]
        if needed and opened.job.needs_preparation:
            if prepare is None:
                raise ValueError(f"{item.path}: the item must be prepared by a worker and no worker was given")
            try:
                facts.append(prepare(opened.job))
                opened.job = opened.job.prepared(facts[-1])
            except BaseException:
                opened.abort()
                journal.release()
                raise
        windows = sum(plan.band_window_count(b)[0] for b in needed)
        if done:
            log.info("%s: resuming: %d of %d blocks were committed by an earlier run; %d of %d bands to run",
                     item.name, len(done), math.prod(plan.block_grid), len(needed), len(cut))
        log.info("%s: %s, %d windows in %d band(s)", item.name, " x ".join(map(str, plan.image_shape)),
                 windows, len(needed))
        stitch = StitchSettings(info.num_classes, opened.nodata_label, opened.label_dtype, opened.keep_logits,
                                opened.regions)
        job = replace(opened.job, plan=plan, stitch=stitch)
        run = cls(opened, job, iter(needed), journal, len(needed), windows, set(done), blocks_resumed=len(done),
                  bands=len(cut))
        for f in facts:
            run.retries.update(dict(f.retries))
        return run

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
        """Every band came back (so every block is written): ready to commit."""
        return self.exhausted and self.inflight == 0 and not self.failed

    @property
    def empty(self) -> bool:
        """Nothing was segmented: every window lay in nodata (and no block was resumed)."""
        return self.windows_run == 0 and self.blocks_resumed == 0

    def next_task(self) -> BandTask | None:
        """The next band to hand out, if any."""
        if self.failed or self.exhausted:
            return None
        task = self.again.pop() if self.again else next(self.tasks, None)
        if task is not None:
            self.submitted += 1
        return task

    def add(self, result: BandResult) -> None:
        """Write and journal the blocks a band finished (those an earlier run committed are
        already written).

        Raises:
            GeosegError, OSError: a block cannot be written.
        """
        plan, nodata = self.opened.plan, self.opened.nodata_label
        self.windows_run += result.windows_run
        self.windows_skipped += result.windows_skipped
        self.halo_windows += result.halo_windows
        self.bytes_received += result.nbytes
        self.retries.update(dict(result.retries))
        for part in result.blocks:
            if part.index in self.done:
                continue
            # the valid mask travels inside the labels: the nodata label where no input was valid
            valid = np.ones(part.labels.shape, bool) if nodata is None else part.labels != nodata
            block = FinishedBlock(plan.block_window(part.index), part.labels, valid, part.logits,
                                  row_counts=part.row_counts, regions=part.regions, index=part.index)
            try:
                self.opened.write(block)
                self.journal.save(block)
            except SinkError:
                raise
            except OSError as exc:  # the journal's, or a file system's, failure: name the folder
                raise write_error(self.journal.folder.parent, f"cannot write block {part.index}", exc) from exc
            self.done.add(part.index)

    def put_back(self, band: BandTask) -> None:
        """``band`` was taken by :meth:`next_task` but not handed out: it is the next again."""
        self.again.append(band)
        self.submitted -= 1

    def run_again(self, band: BandTask, windows_run: int, windows_skipped: int, halo_windows: int) -> None:
        """Hand ``band`` out again: its worker was lost after sending parts of it that counted
        these windows. The blocks of those parts stay written (the re-run skips them); their
        windows are taken back out of the counts, so that each window counts once."""
        self.put_back(band)
        self.bands_rerun += 1
        self.windows_run -= windows_run
        self.windows_skipped -= windows_skipped
        self.halo_windows -= halo_windows
        self.windows_redone += windows_run

    def fail(self, reason: str) -> None:
        """Drop everything of the item (its journal is kept for a later run)."""
        self.failed = reason
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
                                "bands": self.bands, "halo_windows_rerun": self.halo_windows,
                                "padded_to_roi": self.opened.small,
                                "blocks_resumed": self.blocks_resumed, "bytes_from_workers": self.bytes_received,
                                "bands_rerun_lost_worker": self.bands_rerun, "windows_redone": self.windows_redone}
        try:
            stats, paths = self.opened.commit(meta)
        except OSError as exc:
            if isinstance(exc, SinkError):
                raise
            raise write_error(out_root / self.item.name, "cannot finish the outputs", exc) from exc
        outputs = tuple(str(p) for p in paths)
        if publisher is not None:
            outputs = publisher.publish_item(out_root / self.item.name, self.item.name)
        # what this process retried for the item: its open, uploads, DICOMweb calls
        self.retries.update(TALLY.take(self.item.path, self.item.name))
        return ItemOutcome(self.item.name, self.item.path, "ok", stats=stats, outputs=outputs,
                           seconds=time.monotonic() - self.started, windows=self.windows_run,
                           extra={"bytes_from_workers": self.bytes_received, "halo_windows": self.halo_windows,
                                  "bands_rerun": self.bands_rerun, "blocks_resumed": self.blocks_resumed,
                                  "retries": dict(sorted(self.retries.items()))})


def write_error(folder: Path, what: str, exc: OSError) -> SinkError:
    """``FOLDER: WHAT: the error``, with how full its file system is when it is (nearly) full."""
    note = disk_note(folder) or (" (no space left on device)" if exc.errno == errno.ENOSPC else "")
    return SinkError(f"{folder}: {what}: {exc}{note}")


#: Tries to open an item whose open fails in a way that may pass (a remote object, a network disk).
OPEN_ATTEMPTS = 4


def _may_pass(exc: BaseException, path: str) -> bool:
    return isinstance(exc, TransientSourceError) or (
        isinstance(exc, OSError) and is_transient(exc, remote=is_network_path(path)))


def clear_leftovers(item_dir: Path) -> None:
    """Remove the staging and scratch folders a killed run left in ``OUT/<item>`` (only one run
    writes to an output directory at a time: see :class:`~geoseg_pipeline.ledger.OutputLock`)."""
    if item_dir.is_dir() and not item_dir.is_symlink():  # a link is refused by the sinks, never followed
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
