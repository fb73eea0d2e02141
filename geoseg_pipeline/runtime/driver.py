"""The job driver: plan each item, stream its tile tasks through the actor pool with bounded
in-flight work (backpressure), stitch finished blocks, write them, tally statistics.

The driver holds one band of open blocks per active item and at most
``workers × max_tasks_in_flight`` task results, never a whole image, and never imports torch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from ..errors import GeosegError, JobError, ModelError, SourceError
from ..items import OpenItem, channel_count, open_item
from ..ledger import ItemKey, Ledger, config_hash, fingerprint, model_hash
from ..report import ItemOutcome, write_summary
from ..sinks import ClassLegend
from ..sources.discovery import Item, discover
from ..sources.remote import S3Config, needs_s3, rasterio_env
from ..spec import WorkflowSpec
from ..statistics import ItemStats
from ..stitching import BlockStitcher
from ..tasks import TileResult
from ..tiling import TileTask
from .actors import start_actors, worker_count
from .cluster import ray_session
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


@dataclass
class _ItemState:
    opened: OpenItem
    tasks: Iterator[TileTask]
    stitcher: BlockStitcher
    started: float = field(default_factory=time.monotonic)
    inflight: int = 0
    submitted: int = 0
    windows_run: int = 0
    windows_skipped: int = 0
    failed: str | None = None

    @property
    def item(self) -> Item:
        """The input item."""
        return self.opened.item

    @property
    def exhausted(self) -> bool:
        """Every tile task of the item has been handed to an actor."""
        return self.submitted == self.opened.plan.task_count


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
        address: ``None`` for a local Ray started for the job, ``"auto"`` or ``HOST:PORT``.
        progress: force progress bars on/off (default: bars on a terminal).
        force: reprocess every item.

    Raises:
        JobError: Ray cannot be reached, or no input matches.
    """
    started = time.monotonic()
    out_dir = spec.output.directory
    s3 = S3Config.from_env() if needs_s3([*spec.inputs.paths, spec.inputs.manifest or ""]) else None
    try:
        found = discover(spec.inputs, "volume" if spec.tiling.spatial_dims == 3 else "raster", s3)
    except SourceError as exc:  # an object store cannot be listed: nothing has started
        raise JobError(f"cannot list the inputs: {exc}") from exc
    for msg in found.unmatched:
        log.warning("%s", msg)
    items = list(found.items)
    s3 = s3 or (S3Config.from_env() if needs_s3(i.path for i in items) else None)  # a manifest may name s3://
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out_dir)
    run_id = ledger.start_run(spec.name)
    book = _Book(ledger, run_id, spec, s3)
    todo, skipped = book.triage([i for i in items if i.error is None], force)
    outcomes_by_name: dict[str, ItemOutcome] = {o.item: o for o in skipped}
    for bad in found.failed:  # a bad manifest line, an unknown URI scheme: recorded, never opened
        log.error("%s: %s", bad.name, bad.error)
        book.failed(bad, bad.error or "")
        outcomes_by_name[bad.name] = ItemOutcome(bad.name, bad.path, "failed", error=bad.error or "")
    scheduler: _Scheduler | None = None
    if todo:
        with ray_session(address), rasterio_env(s3, GDAL_CACHEMAX=spec.resources.gdal_cache_mb):
            scheduler = _Scheduler(spec, todo, make_progress(len(todo), progress), book, s3)
            outcomes_by_name.update((o.item, o) for o in scheduler.run())
    outcomes = [outcomes_by_name[i.name] for i in items]
    inference_seconds = scheduler.inference_seconds if scheduler else 0.0
    windows = sum(o.windows for o in outcomes if o.status == "ok")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    ledger.finish_run(run_id, counts["ok"], counts["skipped"], counts["failed"])
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
        "actors": scheduler.actor_count if scheduler else 0,
        # which Ray node each actor ran on, and how many tile tasks it was given
        "actor_nodes": scheduler.actor_nodes if scheduler else [],
        "tasks_per_actor": list(scheduler.actor_tasks.values()) if scheduler else [],
        "kind": "volume" if spec.tiling.spatial_dims == 3 else "raster",
        "lesion_classes": list(spec.statistics.lesion_classes),
    }
    paths = write_summary(out_dir, outcomes, job)
    return JobResult(tuple(outcomes), out_dir, tuple(paths), time.monotonic() - started)


class _Book:
    """The run ledger's side of a job: what to skip, and each item's record as it goes."""

    def __init__(self, ledger: Ledger, run_id: str, spec: WorkflowSpec, s3: S3Config | None = None) -> None:
        self.ledger, self.run_id, self.s3 = ledger, run_id, s3
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

    def triage(self, items: list[Item], force: bool) -> tuple[list[Item], list[ItemOutcome]]:
        """Split ``items`` into those to process and those finished before (as outcomes)."""
        todo: list[Item] = []
        skipped: list[ItemOutcome] = []
        for item in items:
            row = None if force else self.ledger.finished(item.name, self.key(item))
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
                 s3: S3Config | None = None) -> None:
        self.spec = spec
        self.s3 = s3
        self.book = book
        self.items = items
        self.progress = progress
        self.outcomes: dict[str, ItemOutcome] = {}
        self.pending: deque[Item] = deque(items)
        self.active: list[_ItemState] = []
        self.inflight: dict[Any, tuple[_ItemState, Any]] = {}
        self.actor_load: dict[int, int] = {}
        self.finalizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoseg-commit")
        self.commits: list[tuple[_ItemState, Future[ItemOutcome]]] = []
        self.first_submit: float | None = None
        self.actor_nodes: list[str] = []
        self.actor_tasks: dict[int, int] = {}
        self.last_result: float | None = None
        self.actor_count = 0
        names = Counter(i.name for i in items)
        self.duplicates = {n for n, c in names.items() if c > 1}

    # -- setup -------------------------------------------------------------------------------

    def run(self) -> list[ItemOutcome]:
        spec = self.spec
        count = worker_count(spec.resources)
        log.info("starting %d inference actor(s)", count)
        self.actors = start_actors(spec.model, spec.resources, count, spec.inference, self.s3)
        self.actor_count = count
        self.actor_load = {i: 0 for i in range(count)}
        self.actor_tasks = {i: 0 for i in range(count)}
        in_channels = len(spec.preprocessing.bands) if spec.preprocessing.bands else spec.model.in_channels
        try:
            info = ray.get(self.actors[0].describe.remote(in_channels, spec.tiling.roi_size, self._first_band_count()))
            if spec.model.num_classes is not None and info.num_classes != spec.model.num_classes:
                raise ModelError(
                    f"the model predicts {info.num_classes} classes but model.num_classes is "
                    f"{spec.model.num_classes}"
                )
            self.info = info
            self.legend = _Legend(spec, info.num_classes).legend
            self.actor_nodes = [str(n) for n in ray.get([a.node.remote() for a in self.actors])]
        except (RayTaskError, RayActorError, GeosegError) as exc:
            reason = _reason(exc)
            log.error("model: %s", reason)
            self.progress.close()
            for actor in self.actors:
                ray.kill(actor)
            for i in self.items:
                self.book.failed(i, f"model: {reason}")
            return [ItemOutcome(i.name, i.path, "failed", error=f"model: {reason}") for i in self.items]
        try:
            self._loop()
        finally:
            self.progress.close()
            self.finalizer.shutdown(wait=True)
            for actor in self.actors:
                ray.kill(actor)
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
                return channel_count(item, self.spec)
            except GeosegError:
                continue
        return None

    def _dup(self, item: Item) -> ItemOutcome:
        others = [i.path for i in self.items if i.name == item.name]
        return ItemOutcome(item.name, item.path, "failed",
                           error=f"output name {item.name!r} is shared by {', '.join(others)}; rename one")

    def _open_item(self, item: Item) -> _ItemState | None:
        self.book.started(item)
        try:
            opened = open_item(item, self.spec, self.info, self.legend)
            plan = opened.plan
            stitcher = BlockStitcher(plan, self.info.num_classes, opened.nodata_label, np.dtype(opened.label_dtype),
                                     keep_logits=opened.keep_logits, scratch=opened.scratch)
        except (GeosegError, ValueError) as exc:
            self._record_failure(item, _reason(exc))
            return None
        if opened.small:
            log.warning("%s: %s is smaller than the roi %s; padded with zeros as MONAI does",
                        item.name, plan.image_shape, self.spec.tiling.roi_size)
        self.progress.add_windows(plan.window_count)
        log.info("%s: %s, %d windows in %d tasks", item.name, " x ".join(map(str, plan.image_shape)),
                 plan.window_count, plan.task_count)
        return _ItemState(opened, plan.tasks(), stitcher)

    # -- the loop ----------------------------------------------------------------------------

    def _next_task(self) -> tuple[_ItemState, TileTask] | None:
        for state in self.active:
            if state.failed or state.exhausted:
                continue
            task = next(state.tasks, None)
            if task is not None:
                state.submitted += 1
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
            self.active.append(opened)
            return self._next_task()
        return None

    def _loop(self) -> None:
        # Every actor takes at most max_tasks_in_flight tasks; results are consumed as they
        # arrive, so reading, inference and writing overlap and memory stays bounded.
        capacity = len(self.actors) * self.spec.resources.max_tasks_in_flight
        while True:
            while len(self.inflight) < capacity:
                nxt = self._next_task()
                if nxt is None:
                    break
                state, task = nxt
                actor = min(self.actor_load, key=lambda a: self.actor_load[a])
                ref = self.actors[actor].run.remote(state.opened.job, task)
                if self.first_submit is None:
                    self.first_submit = time.monotonic()
                self.inflight[ref] = (state, actor)
                self.actor_load[actor] += 1
                self.actor_tasks[actor] += 1
                state.inflight += 1
            self._collect_commits(block=False)
            if not self.inflight:
                break
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                state, actor = self.inflight.pop(ref)
                self.actor_load[actor] -= 1
                state.inflight -= 1
                self._receive(state, ref)
                self.last_result = time.monotonic()
        self._collect_commits(block=True)

    def _receive(self, state: _ItemState, ref: Any) -> None:
        if state.failed:
            self._maybe_retire(state)
            return
        try:
            result: TileResult = ray.get(ref)
            state.windows_run += result.windows_run
            state.windows_skipped += result.windows_skipped
            self.progress.windows_done(result.windows_run + result.windows_skipped)
            for block in state.stitcher.add(result):
                state.opened.write(block)
        except (RayTaskError, RayActorError, GeosegError, OSError) as exc:
            self._fail(state, _reason(exc))
            return
        if state.exhausted and state.inflight == 0 and state.stitcher.done:
            self.active.remove(state)
            if state.windows_run == 0:
                state.opened.abort()
                self._record_failure(state.item, f"{state.item.path}: every pixel is nodata; nothing to segment")
                return
            self.commits.append((state, self.finalizer.submit(self._commit, state)))

    def _fail(self, state: _ItemState, reason: str) -> None:
        state.failed = reason
        state.stitcher.discard()
        state.opened.abort()
        self._maybe_retire(state)

    def _maybe_retire(self, state: _ItemState) -> None:
        if state.inflight == 0 and state in self.active:
            self.active.remove(state)
            for actor in self.actors:
                actor.release.options(max_task_retries=0).remote(state.item.path)  # no retry after ray.kill
            self._record_failure(state.item, state.failed or "failed")

    def _record_failure(self, item: Item, reason: str) -> None:
        log.error("%s: %s", item.name, reason)
        self.book.failed(item, reason)
        self.outcomes[item.name] = ItemOutcome(item.name, item.path, "failed", error=reason)
        self.progress.item_done(item.name, "failed")

    def _commit(self, state: _ItemState) -> ItemOutcome:
        meta = {"windows_run": state.windows_run, "windows_skipped_nodata": state.windows_skipped,
                "padded_to_roi": state.opened.small}
        stats, paths = state.opened.commit(meta)
        return ItemOutcome(
            state.item.name, state.item.path, "ok", stats=stats, outputs=tuple(str(p) for p in paths),
            seconds=time.monotonic() - state.started, windows=state.windows_run,
        )

    def _collect_commits(self, block: bool) -> None:
        remaining = []
        for state, fut in self.commits:
            if not block and not fut.done():
                remaining.append((state, fut))
                continue
            for actor in self.actors:
                actor.release.options(max_task_retries=0).remote(state.item.path)  # no retry after ray.kill
            try:
                outcome = fut.result()
            except (GeosegError, OSError) as exc:
                self._record_failure(state.item, _reason(exc))
                continue
            self.outcomes[state.item.name] = outcome
            self.book.ok(outcome)
            self.progress.item_done(state.item.name, "ok")
        self.commits = remaining


def _reason(exc: BaseException) -> str:
    """The message a user should see, unwrapped from Ray's task errors."""
    if isinstance(exc, RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else None
        if cause is not None:
            return _reason(cause)
        return str(exc).strip().splitlines()[-1]
    if isinstance(exc, RayActorError):
        return f"an inference actor died: {str(exc).splitlines()[0]}"
    return str(exc)


__all__ = ["JobResult", "run_job"]
