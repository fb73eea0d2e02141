"""The job driver: plan each item, stream its tile tasks through the actor pool with bounded
in-flight work (backpressure), stitch finished blocks, write them, tally statistics.

The driver holds one band of open blocks per active item and at most
``workers × max_tasks_in_flight`` task results, never a whole image, and never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GeosegError, JobError, ModelError, SourceError
from ..items import channel_count
from ..ledger import LEDGER_NAME, ItemKey, Ledger, OutputLock, config_hash, fingerprint, model_hash
from ..report import ItemOutcome, write_summary
from ..sinks import ClassLegend
from ..sinks.publish import OutputLocation, Publisher
from ..sources.discovery import Inputs, Item, discover
from ..spec import WorkflowSpec
from ..statistics import ItemStats
from ..storage import S3Config, needs_s3, rasterio_env
from ..tiling import TileTask
from .item_run import ItemRun
from .pool import WorkerPool, worker_pool
from .progress import Progress, make_progress

log = logging.getLogger("geoseg")

#: Colours for classes the workflow does not name (tab10-like).
DEFAULT_COLOURS = (
    "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
)


@dataclass(frozen=True)
class JobResult:
    """What a job produced: one outcome per item, and where the summary is."""

    outcomes: tuple[ItemOutcome, ...]
    out_dir: Path
    summary_paths: tuple[Path, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every item succeeded (now or in an earlier run)."""
        return bool(self.outcomes) and all(o.status in ("ok", "skipped") for o in self.outcomes)


class _Legend:
    def __init__(self, spec: WorkflowSpec, num_classes: int) -> None:
        if spec.classes is not None:
            if len(spec.classes) != num_classes:
                raise ModelError(
                    f"the model predicts {num_classes} classes but the workflow lists {len(spec.classes)}"
                )
            names = tuple(c.name for c in spec.classes)
            colours = tuple(c.colour for c in spec.classes)
        else:
            names = tuple(f"class_{i}" for i in range(num_classes))
            colours = tuple(DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i in range(num_classes))
        self.legend = ClassLegend(names, colours)


def run_job(
    spec: WorkflowSpec, address: str | None = None, progress: bool | None = None, force: bool = False
) -> JobResult:
    """Run a workflow: every item to ``OUT/<item>/``, then ``OUT/summary.csv``.

    Items the run ledger (``OUT/ledger.sqlite``, see :mod:`geoseg_pipeline.ledger`) records as
    finished with the same input, model and configuration are skipped, unless ``force``.

    Args:
        spec: the validated workflow.
        address: ``None`` to run on this machine (a local Ray, or threads for a one-item job;
            see ``resources.backend``), ``"auto"`` or ``HOST:PORT`` for a Ray cluster.
        progress: force progress bars on/off (default: bars on a terminal).
        force: reprocess every item.

    Raises:
        JobError: Ray cannot be reached, or no input matches.
    """
    started = time.monotonic()
    out_dir = spec.output.directory
    s3 = S3Config.from_env() if needs_s3([*spec.inputs.paths, spec.inputs.manifest or ""]) else None
    try:
        found = discover(spec.inputs, spec.tiling.kind, s3)
    except SourceError as exc:  # an object store cannot be listed: nothing has started
        raise JobError(f"cannot list the inputs: {exc}") from exc
    for msg in found.unmatched:
        log.warning("%s", msg)
    s3 = s3 or (S3Config.from_env() if needs_s3(i.path for i in found.items) else None)  # a manifest may name s3://
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"{out_dir}: cannot create the output directory: {exc.strerror or exc}") from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise JobError(f"{out_dir}: the output directory is not writable (permission denied)")
    with OutputLock(out_dir):
        return _run_locked(spec, found, s3, address, progress, force, started)


def _run_locked(
    spec: WorkflowSpec, found: Inputs, s3: S3Config | None, address: str | None, progress: bool | None,
    force: bool, started: float,
) -> JobResult:
    """:func:`run_job` once the output directory is this run's: ledger, items, summary."""
    out_dir = spec.output.directory
    items = list(found.items)
    publisher = _publisher(spec, out_dir)
    ledger = Ledger(out_dir)
    run_id = ""
    try:
        ledger.mark_interrupted()
        run_id = ledger.start_run(spec.name)
        book = _Book(ledger, run_id, spec, s3, publisher, force)
        todo, skipped = book.triage([i for i in items if i.error is None])
        outcomes_by_name: dict[str, ItemOutcome] = {o.item: o for o in skipped}
        for bad in found.failed:  # a bad manifest line, an unknown URI scheme: recorded, never opened
            log.error("%s: %s", bad.name, bad.error)
            book.failed(bad, bad.error or "")
            outcomes_by_name[bad.name] = ItemOutcome(bad.name, bad.path, "failed", error=bad.error or "")
        scheduler: _Scheduler | None = None
        if todo:
            with (worker_pool(spec, address, len(todo), s3) as pool,
                  rasterio_env(s3, GDAL_CACHEMAX=spec.resources.gdal_cache_mb)):
                scheduler = _Scheduler(spec, todo, make_progress(len(todo), progress), book, pool, publisher)
                outcomes_by_name.update((o.item, o) for o in scheduler.run())
        outcomes = [outcomes_by_name[i.name] for i in items]
        inference_seconds = scheduler.inference_seconds if scheduler else 0.0
        windows = sum(o.windows for o in outcomes if o.status == "ok")
        counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
        ledger.finish_run(run_id, counts["ok"], counts["skipped"], counts["failed"])
    except BaseException:
        if run_id:  # Ray could not start, the ledger cannot be written, Ctrl-C: not left "running"
            with contextlib.suppress(GeosegError):
                ledger.finish_run(run_id, 0, 0, 0, status="aborted")
        raise
    finally:
        ledger.close()
    job = {
        "workflow": spec.name,
        "run_id": run_id,
        "items_total": len(outcomes),
        "items_ok": counts["ok"],
        "items_skipped": counts["skipped"],
        "items_failed": counts["failed"],
        "seconds": round(time.monotonic() - started, 3),
        "windows_run": windows,
        # pixels (rasters) or voxels (volumes) of the items segmented by this run, nodata included
        "pixels_processed": sum(o.stats.valid_pixels + o.stats.nodata_pixels for o in outcomes
                                if o.status == "ok" and o.stats is not None),
        # from the first task handed to an actor to the last result stitched: the pipeline's
        # sustained rate, without Ray's and the model's start-up
        "inference_seconds": round(inference_seconds, 3),
        "windows_per_second": round(windows / inference_seconds, 2) if inference_seconds else None,
        "backend": scheduler.pool.backend if scheduler else None,
        "actors": scheduler.actor_count if scheduler else 0,
        # which Ray node each actor ran on, and how many tile tasks it was given
        "actor_nodes": scheduler.actor_nodes if scheduler else [],
        "tasks_per_actor": list(scheduler.actor_tasks.values()) if scheduler else [],
        "kind": spec.tiling.kind,
        "lesion_classes": list(spec.statistics.lesion_classes),
    }
    paths = write_summary(out_dir, outcomes, job)
    if publisher is not None:
        try:
            for path in [*paths, out_dir / LEDGER_NAME]:
                publisher.publish_file(path, path.relative_to(out_dir).as_posix())
        except GeosegError as exc:
            raise JobError(f"the items are published, but not the job's summary and ledger: {exc}") from exc
        log.info("outputs published to %s", publisher.location.uri)
    return JobResult(tuple(outcomes), out_dir, tuple(paths), time.monotonic() - started)


def _publisher(spec: WorkflowSpec, out_dir: Path) -> Publisher | None:
    """For an ``s3://`` output directory: the publisher, checked writable, with the ledger of
    earlier runs fetched into the staging folder (so finished items are skipped)."""
    if spec.output.remote is None:
        return None
    publisher = Publisher(OutputLocation(spec.output.remote, out_dir), S3Config.from_env())
    try:
        publisher.check_writable()
        for stale in (out_dir / f"{LEDGER_NAME}-wal", out_dir / f"{LEDGER_NAME}-shm"):
            stale.unlink(missing_ok=True)
        publisher.fetch_file(LEDGER_NAME, out_dir / LEDGER_NAME)
    except GeosegError as exc:
        raise JobError(f"cannot write the outputs: {exc}") from exc
    log.info("outputs go to %s (staged in %s)", spec.output.remote, out_dir)
    return publisher


class _Book:
    """The run ledger's side of a job: what to skip, and each item's record as it goes."""

    def __init__(self, ledger: Ledger, run_id: str, spec: WorkflowSpec, s3: S3Config | None = None,
                 publisher: Publisher | None = None, force: bool = False) -> None:
        self.ledger, self.run_id, self.s3, self.publisher = ledger, run_id, s3, publisher
        self.force = force
        self.model_hash = model_hash(spec)
        self.config_hash = config_hash(spec)
        self.keys: dict[str, ItemKey] = {}

    def key(self, item: Item) -> ItemKey:
        """The item's input fingerprint with this run's model and config hashes."""
        key = self.keys.get(item.name)
        if key is None:
            try:
                fp = fingerprint(item.path, self.s3)
            except OSError:
                fp = "unreadable"
            key = self.keys[item.name] = ItemKey(fp, self.model_hash, self.config_hash)
        return key

    def triage(self, items: list[Item]) -> tuple[list[Item], list[ItemOutcome]]:
        """Split ``items`` into those to process and those finished before (as outcomes);
        with ``force``, none is finished."""
        todo: list[Item] = []
        skipped: list[ItemOutcome] = []
        exists = self.publisher.exists if self.publisher is not None else os.path.exists
        for item in items:
            row = None if self.force else self.ledger.finished(item.name, self.key(item), exists)
            if row is None:
                todo.append(item)
                continue
            stats = ItemStats.from_dict(row.stats) if row.stats else None
            skipped.append(ItemOutcome(item.name, item.path, "skipped", stats=stats, outputs=row.outputs,
                                       seconds=row.seconds or 0.0, windows=row.windows or 0,
                                       extra={"finished_by_run": row.run_id}))
        if skipped:
            log.info("%d item(s) already done with the same input, model and configuration: skipped "
                     "(--force reprocesses them)", len(skipped))
        return todo, skipped

    def started(self, item: Item) -> None:
        self.ledger.started(item.name, item.path, self.key(item), self.run_id)

    def ok(self, outcome: ItemOutcome) -> None:
        self.ledger.succeeded(outcome.item, outcome.outputs, outcome.seconds, outcome.windows,
                              outcome.stats.to_dict() if outcome.stats else None)

    def failed(self, item: Item, reason: str) -> None:
        self.ledger.failed(item.name, item.path, self.key(item), self.run_id, reason)


class _Scheduler:
    """Feeds tile tasks of all items to the actors, keeping a bounded number in flight."""

    def __init__(self, spec: WorkflowSpec, items: list[Item], progress: Progress, book: _Book,
                 pool: WorkerPool, publisher: Publisher | None = None) -> None:
        self.spec = spec
        self.pool = pool
        self.publisher = publisher
        self.book = book
        self.items = items
        self.progress = progress
        self.outcomes: dict[str, ItemOutcome] = {}
        self.pending: deque[Item] = deque(items)
        self.active: list[ItemRun] = []
        self.inflight: dict[Any, tuple[ItemRun, Any]] = {}
        self.actor_load: dict[int, int] = {}
        self.finalizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoseg-commit")
        self.commits: list[tuple[ItemRun, Future[ItemOutcome]]] = []
        self.first_submit: float | None = None
        self.actor_nodes: list[str] = []
        self.actor_tasks: dict[int, int] = {}
        self.last_result: float | None = None
        self.actor_count = 0
        names = Counter(i.name for i in items)
        self.duplicates = {n for n, c in names.items() if c > 1}

    # -- setup -------------------------------------------------------------------------------

    def run(self) -> list[ItemOutcome]:
        spec, pool = self.spec, self.pool
        count = pool.size
        log.info("%d inference %s", count, "actor(s) on Ray" if pool.backend == "ray" else
                 "thread(s) in this process (resources.backend: local)")
        self.actor_count = count
        self.actor_load = {i: 0 for i in range(count)}
        self.actor_tasks = {i: 0 for i in range(count)}
        in_channels = len(spec.preprocessing.bands) if spec.preprocessing.bands else spec.model.in_channels
        try:
            info = pool.describe(in_channels, spec.tiling.roi_size, self._first_band_count())
            if spec.model.num_classes is not None and info.num_classes != spec.model.num_classes:
                raise ModelError(
                    f"the model predicts {info.num_classes} classes but model.num_classes is "
                    f"{spec.model.num_classes}"
                )
            self.info = info
            self.legend = _Legend(spec, info.num_classes).legend
            self.actor_nodes = pool.nodes()
        except GeosegError as exc:
            reason = str(exc)
            log.error("model: %s", reason)
            self.progress.close()
            for i in self.items:
                self.book.failed(i, f"model: {reason}")
            return [ItemOutcome(i.name, i.path, "failed", error=f"model: {reason}") for i in self.items]
        try:
            self._loop()
        finally:
            self.progress.close()
            self.finalizer.shutdown(wait=True)
        return [self.outcomes[i.name] if i.name not in self.duplicates else self._dup(i) for i in self.items]

    @property
    def inference_seconds(self) -> float:
        """Seconds from the first task submitted to the last result stitched."""
        if self.first_submit is None or self.last_result is None:
            return 0.0
        return self.last_result - self.first_submit

    def _first_band_count(self) -> int | None:
        """Bands of the first item that opens: the input channels of a parameter-free model."""
        for item in self.items:
            try:
                return channel_count(item, self.spec, self.book.s3)
            except GeosegError:
                continue
        return None

    def _dup(self, item: Item) -> ItemOutcome:
        others = [i.path for i in self.items if i.name == item.name]
        return ItemOutcome(item.name, item.path, "failed",
                           error=f"output name {item.name!r} is shared by {', '.join(others)}; rename one")

    def _open_item(self, item: Item) -> ItemRun | None:
        self.book.started(item)
        try:
            run = ItemRun.open(item, self.spec, self.info, self.legend, self.book.key(item), self.book.s3,
                               self.book.force)
        except (GeosegError, OSError, ValueError) as exc:
            self._record_failure(item, str(exc))
            return None
        self.progress.add_windows(run.window_total)
        return run

    # -- the loop ----------------------------------------------------------------------------

    def _next_task(self) -> tuple[ItemRun, TileTask] | None:
        for state in self.active:
            task = state.next_task()
            if task is not None:
                return state, task
        # Open the next item only when every active one has handed out all its tasks, so
        # that at most about two items hold open blocks at a time.
        while self.pending:
            item = self.pending.popleft()
            if item.name in self.duplicates:
                continue
            opened = self._open_item(item)
            if opened is None:
                continue
            if opened.task_total == 0:  # an earlier run committed every block
                self._finish(opened)
                continue
            self.active.append(opened)
            return self._next_task()
        return None

    def _loop(self) -> None:
        # Every actor takes at most max_tasks_in_flight tasks; results are consumed as they
        # arrive, so reading, inference and writing overlap and memory stays bounded.
        capacity = self.pool.size * self.spec.resources.max_tasks_in_flight
        while True:
            while len(self.inflight) < capacity:
                nxt = self._next_task()
                if nxt is None:
                    break
                state, task = nxt
                actor = min(self.actor_load, key=lambda a: self.actor_load[a])
                ref = self.pool.submit(actor, state.opened.job, task)
                if self.first_submit is None:
                    self.first_submit = time.monotonic()
                self.inflight[ref] = (state, actor)
                self.actor_load[actor] += 1
                self.actor_tasks[actor] += 1
                state.inflight += 1
            self._collect_commits(block=False)
            if not self.inflight:
                break
            ready = self.pool.wait(list(self.inflight), timeout=1.0)
            for ref in ready:
                state, actor = self.inflight.pop(ref)
                self.actor_load[actor] -= 1
                state.inflight -= 1
                self._receive(state, ref)
                self.last_result = time.monotonic()
        self._collect_commits(block=True)

    def _receive(self, state: ItemRun, ref: Any) -> None:
        if state.failed:
            self._maybe_retire(state)
            return
        try:
            result = self.pool.result(ref)
            self.progress.windows_done(result.windows_run + result.windows_skipped)
            state.add(result)
        except (GeosegError, OSError) as exc:
            state.fail(str(exc))
            self._maybe_retire(state)
            return
        if state.complete:
            self.active.remove(state)
            self._finish(state)

    def _finish(self, state: ItemRun) -> None:
        """Every block of the item is written: publish it (in the commit thread)."""
        if state.empty:
            state.drop()
            self._record_failure(state.item, f"{state.item.path}: every pixel is nodata; nothing to segment")
            return
        self.commits.append((state, self.finalizer.submit(self._commit, state)))

    def _maybe_retire(self, state: ItemRun) -> None:
        if state.inflight == 0 and state in self.active:
            self.active.remove(state)
            self.pool.release(state.item.path)
            self._record_failure(state.item, state.failed or "failed")

    def _record_failure(self, item: Item, reason: str) -> None:
        log.error("%s: %s", item.name, reason)
        self.book.failed(item, reason)
        self.outcomes[item.name] = ItemOutcome(item.name, item.path, "failed", error=reason)
        self.progress.item_done(item.name, "failed")

    def _commit(self, state: ItemRun) -> ItemOutcome:
        outcome = state.commit(self.publisher, self.spec.output.directory)
        # recorded the moment its outputs are published: a driver killed from here on never
        # computes this item again
        self.book.ok(outcome)
        state.journal.clear()
        return outcome

    def _collect_commits(self, block: bool) -> None:
        remaining = []
        for state, fut in self.commits:
            if not block and not fut.done():
                remaining.append((state, fut))
                continue
            self.pool.release(state.item.path)
            try:
                outcome = fut.result()
            except (GeosegError, OSError) as exc:
                self._record_failure(state.item, str(exc))
                continue
            self.outcomes[state.item.name] = outcome
            self.progress.item_done(state.item.name, "ok")
        self.commits = remaining


__all__ = ["JobResult", "run_job"]
