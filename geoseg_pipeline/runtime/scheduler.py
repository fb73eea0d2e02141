"""The scheduling loop of a job: bands of items to the workers with bounded in-flight work
(backpressure), their finished blocks taken as they stream back, written and journaled; each
item opened ahead on a thread of its own and committed on another, so that this loop never
reads pixels."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import GeosegError, ModelError, WorkerLost
from ..items import channel_count
from ..report import ItemOutcome
from ..sinks import ClassLegend
from ..sinks.legend import default_colours
from ..sinks.publish import Publisher
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..spec.model import pretrained_label_names
from ..storage import rasterio_env
from ..tiling import BandTask
from .book import Book
from .item_run import ItemRun
from .pool import WorkerPool
from .progress import Progress
from .zones import ZoneBook

log = logging.getLogger("geoseg")

#: Seconds between two questions to a lost actor whether it serves again.
PROBE_EVERY_S = 2.0

#: A band whose actor was lost runs again alone on an actor (nothing else given to it meanwhile);
#: a band whose actor dies this many times while it runs alone is taken for the cause (a crash of
#: a decoder or of the model on that input), and its item fails.
MAX_SOLO_LOSSES = 2


@dataclass
class Flight:
    """A band handed to an actor, and the windows its parts have counted so far."""

    state: ItemRun
    actor: int
    band: BandTask
    windows_run: int = 0
    windows_skipped: int = 0
    halo_windows: int = 0
    alone: bool = False  # run alone on its actor: a band lost before, under suspicion


def legend_for(spec: WorkflowSpec, num_classes: int) -> ClassLegend:
    """The workflow's classes, or numbered ones with default colours.

    Raises:
        ModelError: the workflow lists another number of classes than the model predicts.
    """
    if spec.model.type == "nnunet" and spec.classes is None:  # the dataset's labels (a region model: more
        from ..nnunet.folder import model_from_spec  # label values than heads)

        names = model_from_spec(spec.model).label_names
        return ClassLegend(names, default_colours(len(names)))
    text = spec.model.text_classes  # prompts given in the model section: their texts name the classes
    if spec.classes is None and text is not None and len(text.prompts) == num_classes:
        return ClassLegend(tuple(p or "background" for p in text.prompts), default_colours(num_classes))
    if spec.model.type == "huggingface" and spec.classes is None and spec.model.path is not None:
        labelled = pretrained_label_names(spec.model.path, num_classes)  # the model's id2label
        if labelled is not None:
            return ClassLegend(labelled, default_colours(num_classes))
    if spec.classes is not None:
        if len(spec.classes) != num_classes:
            raise ModelError(f"the model predicts {num_classes} classes but {len(spec.classes)} class names were "
                             f"given ({', '.join(c.name for c in spec.classes)}): list one per class, in the "
                             "model's order (the workflow's classes, or --classes)")
        # classes without a colour get the palette's colour of their label value
        palette = default_colours(num_classes)
        return ClassLegend(tuple(c.name for c in spec.classes),
                           tuple(c.colour or palette[i] for i, c in enumerate(spec.classes)),
                           tuple(c.dicom for c in spec.classes))
    return ClassLegend(tuple(f"class_{i}" for i in range(num_classes)), default_colours(num_classes))


class Scheduler:
    """Feeds bands of all items to the workers, a bounded number in flight; takes their
    finished blocks as they stream back; opens the next item ahead, on a thread of its own."""

    def __init__(self, spec: WorkflowSpec, items: list[Item], progress: Progress, book: Book,
                 pool: WorkerPool, publisher: Publisher | None = None, zones: ZoneBook | None = None) -> None:
        self.spec = spec
        self.pool = pool
        self.publisher = publisher
        self.zones = zones
        self.book = book
        self.items = items
        self.progress = progress
        self.outcomes: dict[str, ItemOutcome] = {}
        self.pending: deque[Item] = deque(items)
        self.active: list[ItemRun] = []
        self.inflight: dict[Any, Flight] = {}
        # actors lost (their process or node died) since when, and the probe asking each back
        self.lost: dict[int, float] = {}
        self.probes: dict[int, tuple[Any, float]] = {}
        self.all_lost_since: float | None = None
        self.bands_rerun = 0
        # bands lost with their actor (to run again alone), and the losses of each while alone
        self.suspects: set[tuple[int, int]] = set()
        self.solo_losses: Counter[tuple[int, int]] = Counter()
        self.actor_load: dict[int, int] = {}
        self.finalizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoseg-commit")
        # items are opened (headers read, planned, prepared by a worker) here, ahead of need, not in the loop
        self.opener = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoseg-open", initializer=self._enter_env)
        self.opening: deque[tuple[Item, Future[ItemRun]]] = deque()
        self.commits: list[tuple[ItemRun, Future[ItemOutcome]]] = []
        self.first_submit: float | None = None
        self.actor_nodes: list[str] = []
        self.actor_tasks: dict[int, int] = {}
        self.last_result: float | None = None
        self.actor_count = 0
        self.driver_cpu_seconds = 0.0
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
            beyond = [k for k in spec.statistics.lesion_classes if k >= info.num_classes]
            if beyond:
                raise ModelError(f"statistics.lesion_classes names class {beyond[0]}, but the model predicts "
                                 f"{info.num_classes} classes (0..{info.num_classes - 1})")
            self.info = info
            self.legend = legend_for(spec, info.num_classes)
            self.actor_nodes = pool.nodes()
        except GeosegError as exc:
            reason = str(exc)
            log.error("model: %s", reason)
            self.progress.close()
            for i in self.items:
                self.book.failed(i, f"model: {reason}")
            return [ItemOutcome(i.name, i.path, "failed", error=f"model: {reason}") for i in self.items]
        try:
            cpu = time.thread_time()
            self._loop()
            self.driver_cpu_seconds = time.thread_time() - cpu
        finally:
            self.progress.close()
            self.opener.shutdown(wait=True, cancel_futures=True)
            for _, fut in self.opening:
                with contextlib.suppress(BaseException):
                    fut.result().drop()  # opened for nothing: the job stopped
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

    def _enter_env(self) -> None:
        # rasterio's environment (GDAL cache cap, S3 settings) is per thread
        env = rasterio_env(self.book.s3, gdal_cache_mb=self.spec.resources.gdal_cache_mb)
        env.__enter__()

    def _open_ahead(self) -> None:
        """Start opening the next pending item, unless one is being opened already."""
        while not self.opening and self.pending:
            item = self.pending.popleft()
            if item.name in self.duplicates:
                continue
            self.book.started(item)
            bands = self._band_count()
            fut = self.opener.submit(self._open, item, bands)
            self.opening.append((item, fut))

    def _open(self, item: Item, bands: int) -> ItemRun:
        """Open ``item`` (on the opener thread)."""
        zones = self.zones.for_item(item) if self.zones is not None else None
        return ItemRun.open(item, self.spec, self.info, self.legend, self.book.key(item), self.book.s3,
                            self.book.force, bands=bands, prepare=self.pool.prepare, zones=zones)

    def _take_opened(self) -> ItemRun | None:
        """The item opened ahead (waiting for it); ``None`` when it could not be opened."""
        item, fut = self.opening.popleft()
        try:
            run = fut.result()
        except (GeosegError, OSError, ValueError) as exc:
            self._record_failure(item, str(exc))
            return None
        self.progress.add_windows(run.window_total)
        return run

    def _band_count(self) -> int:
        """Bands to cut the next item into: one per worker while fewer items than workers are
        left (so that every worker has work), else one (no halo window run twice)."""
        items_left = len(self.pending) + len(self.opening) + 1
        return max(1, math.ceil(self.pool.size / items_left))

    # -- the loop ----------------------------------------------------------------------------

    def _next_task(self) -> tuple[ItemRun, BandTask] | None:
        for state in self.active:
            task = state.next_task()
            if task is not None:
                return state, task
        # Take the next item only when every active one has handed out all its bands, so that
        # few items hold open outputs at a time; it was opened ahead while they ran.
        self._open_ahead()
        while self.opening:
            if self.inflight and not self.opening[0][1].done():
                return None  # results to take meanwhile; the loop comes back soon
            opened = self._take_opened()
            self._open_ahead()
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
        per_actor = self.spec.resources.max_tasks_in_flight
        while True:
            self._ask_lost()
            live = [a for a in self.actor_load if a not in self.lost]
            while live and len(self.inflight) < len(live) * per_actor:
                open_to = [a for a in live if not self._isolated(a)]  # an actor running a suspect takes nothing else
                nxt = self._next_task() if open_to else None
                if nxt is None:
                    break
                state, task = nxt
                alone = (id(state), task.index) in self.suspects
                if alone:
                    idle = [a for a in open_to if self.actor_load[a] == 0]
                    if not idle:  # wait until an actor is free (those running drain meanwhile)
                        state.put_back(task)
                        break
                    actor = idle[0]
                else:
                    actor = min(open_to, key=lambda a: self.actor_load[a])
                ref = self.pool.submit(actor, state.job, task)
                if self.first_submit is None:
                    self.first_submit = time.monotonic()
                self.inflight[ref] = Flight(state, actor, task, alone=alone)
                self.actor_load[actor] += 1
                self.actor_tasks[actor] += 1
                state.inflight += 1
            self._collect_commits(block=False)
            if not self.inflight:
                if live or not self._work_left():
                    break
                if self._given_up():
                    break
                time.sleep(0.2)  # every actor is lost: wait for one to serve again
                continue
            # an item being opened ahead is looked at again soon
            waiting = (bool(self.opening) and not self.opening[0][1].done()) or bool(self.lost)
            ready = self.pool.wait(list(self.inflight), timeout=0.05 if waiting else 1.0)
            for ref in ready:
                self._receive(ref)
                self.last_result = time.monotonic()
        self._collect_commits(block=True)

    def _ended(self, ref: Any) -> ItemRun:
        flight = self.inflight.pop(ref)
        self.actor_load[flight.actor] -= 1
        flight.state.inflight -= 1
        return flight.state

    def _receive(self, ref: Any) -> None:
        """Take the next part of a band's stream: its finished blocks are written and
        journaled now; the end of the stream may complete the item."""
        flight = self.inflight[ref]
        state = flight.state
        try:
            part = self.pool.result(ref)
        except WorkerLost as exc:
            self._ended(ref)
            self._lose(flight, str(exc))
            return
        except (GeosegError, OSError) as exc:
            self._ended(ref)
            if not state.failed:
                state.fail(str(exc))
            self._maybe_retire(state)
            return
        if part is None:
            self._ended(ref)
            if state.failed:
                self._maybe_retire(state)
            elif state.complete:
                self.active.remove(state)
                self._finish(state)
            return
        if state.failed:
            return
        flight.windows_run += part.windows_run
        flight.windows_skipped += part.windows_skipped
        flight.halo_windows += part.halo_windows
        self.progress.windows_done(part.windows_run + part.windows_skipped)
        try:
            state.add(part)
        except (GeosegError, OSError) as exc:
            state.fail(str(exc))

    # -- lost actors -------------------------------------------------------------------------

    def _lose(self, flight: Flight, reason: str) -> None:
        """``flight``'s actor is gone: its band runs again on the actors that serve (the blocks
        it sent stay written and are skipped); the actor is asked now and then to serve again."""
        now = time.monotonic()
        if flight.actor not in self.lost:
            self.lost[flight.actor] = now
            self.probes[flight.actor] = (None, now + PROBE_EVERY_S)
            log.warning("inference actor %d is lost (%s); its bands run on the actors that serve",
                        flight.actor, reason)
            if len(self.lost) == len(self.actor_load):
                self.all_lost_since = now
        state = flight.state
        key = (id(state), flight.band.index)
        self.suspects.add(key)
        if flight.alone:
            self.solo_losses[key] += 1
        if self.solo_losses[key] >= MAX_SOLO_LOSSES and not state.failed:
            rows = " to ".join(map(str, flight.band.rows))
            state.fail(f"{state.item.path}: the inference worker died {self.solo_losses[key]} times while it ran block "
                       f"rows {rows} of this item alone (a crash of a decoder or of the model on this input?); "
                       "the item is given up")
        if state.failed:
            self._maybe_retire(state)
            return
        state.run_again(flight.band, flight.windows_run, flight.windows_skipped, flight.halo_windows)
        self.progress.windows_undone(flight.windows_run + flight.windows_skipped)
        self.bands_rerun += 1

    def _isolated(self, actor: int) -> bool:
        """Whether ``actor`` runs a suspect band (lost before), which runs alone."""
        return any(f.alone and f.actor == actor for f in self.inflight.values())

    def _ask_lost(self) -> None:
        """Ask each lost actor (now and then) whether it serves again: restarted on its node,
        or on another one that joined."""
        now = time.monotonic()
        for actor in list(self.lost):
            probe, when = self.probes[actor]
            if probe is None:
                if now >= when:
                    self.probes[actor] = (self.pool.probe(actor), now)
                continue
            answer = self.pool.revived(probe)
            if answer is None:
                continue
            if answer:
                log.info("inference actor %d serves again (lost %.0f s)", actor, now - self.lost.pop(actor))
                del self.probes[actor]
                self.all_lost_since = None
            else:
                self.probes[actor] = (None, now + PROBE_EVERY_S)

    def _work_left(self) -> bool:
        return bool(self.pending or self.opening or any(not s.exhausted for s in self.active))

    def _given_up(self) -> bool:
        """Whether every actor has been lost for longer than ``resources.placement_timeout_s``;
        then every item left fails (the blocks finished so far stay journaled for a re-run)."""
        timeout = self.spec.resources.placement_timeout_s
        if self.all_lost_since is None or time.monotonic() - self.all_lost_since < timeout:
            return False
        reason = (f"no inference actor left: all {len(self.actor_load)} were lost with their node(s) and none "
                  f"served again within {timeout:g} s (resources.placement_timeout_s); the blocks finished "
                  "so far are kept: run the job again to resume")
        log.error("%s", reason)
        for state in list(self.active):
            if not state.failed:
                state.fail(reason)
            self.active.remove(state)
            self._record_failure(state.item, reason)
        for item, _ in self.opening:  # dropped when the loop ends
            self._record_failure(item, reason)
        while self.pending:
            item = self.pending.popleft()
            if item.name not in self.duplicates:
                self._record_failure(item, reason)
        return True

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
        reason = self.book.failed(item, reason)
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
            fut.exception()  # wait: the commit may still read the workers' staged copy (the report)
            self.pool.release(state.item.path)
            try:
                outcome = fut.result()
            except (GeosegError, OSError) as exc:
                self._record_failure(state.item, str(exc))
                continue
            self.outcomes[state.item.name] = outcome
            self.progress.item_done(state.item.name, "ok")
        self.commits = remaining


__all__ = ["Scheduler", "legend_for"]
