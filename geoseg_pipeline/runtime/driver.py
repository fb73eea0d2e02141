"""The job driver: discover the items, take the output directory and its ledger, skip what
earlier runs finished, run the rest through the :class:`~.scheduler.Scheduler`, write the
job's summary.

The workers blend and argmax; the driver receives finished labels (about one byte per pixel),
writes them, and never holds logits nor imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import GeosegError, JobError, SourceError
from ..ledger import LEDGER_NAME, Ledger, OutputLock
from ..report import ItemOutcome, write_summary
from ..report.stac import ITEM_NAME as STAC_ITEM_NAME
from ..report.stac import write_collection
from ..sinks.publish import OutputLocation, Publisher
from ..sources.discovery import Inputs, discover
from ..spec import WorkflowSpec
from ..storage import S3Config, needs_s3, rasterio_env
from ..storage.retry import KINDS, TALLY
from .book import Book
from .pool import worker_pool
from .progress import make_progress
from .scheduler import Scheduler
from .zones import ZoneBook

log = logging.getLogger("geoseg")

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
    s3 = S3Config.from_env() if needs_s3(spec.inputs.locations) else None
    try:
        found = discover(spec.inputs, spec.tiling.kind, s3, spec.output.directory)
    except SourceError as exc:  # an object store cannot be listed: nothing has started
        raise JobError(f"cannot list the inputs: {exc}") from exc
    for msg in found.unmatched:
        log.warning("%s", msg)
    # a manifest or a STAC item may name s3:// objects
    s3 = s3 or (S3Config.from_env() if needs_s3(found.locations()) else None)
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
        book = Book(ledger, run_id, spec, s3, publisher, force)
        todo, skipped = book.triage([i for i in items if i.error is None])
        outcomes_by_name: dict[str, ItemOutcome] = {o.item: o for o in skipped}
        for bad in found.failed:  # a bad manifest line, an unknown URI scheme: recorded, never opened
            log.error("%s: %s", bad.name, bad.error)
            book.failed(bad, bad.error or "")
            outcomes_by_name[bad.name] = ItemOutcome(bad.name, bad.path, "failed", error=bad.error or "")
        scheduler: Scheduler | None = None
        if todo:
            with (worker_pool(spec, address, len(todo), s3) as pool,
                  rasterio_env(s3, gdal_cache_mb=spec.resources.gdal_cache_mb)):
                zones = ZoneBook(spec, [i for i in items if i.error is None], s3) if spec.statistics.zones else None
                scheduler = Scheduler(spec, todo, make_progress(len(todo), progress), book, pool, publisher, zones)
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
        # what the coordinating thread costs: its CPU time, and the bytes the workers sent it
        "driver_cpu_seconds": round(scheduler.driver_cpu_seconds, 3) if scheduler else 0.0,
        "driver_cpu_ms_per_window": round(1000 * scheduler.driver_cpu_seconds / windows, 4)
        if scheduler and windows else None,
        "bytes_from_workers": sum(int(o.extra.get("bytes_from_workers", 0))
                                  for o in outcomes if o.status == "ok"),
        "backend": scheduler.pool.backend if scheduler else None,
        "actors": scheduler.actor_count if scheduler else 0,
        # which Ray node each actor ran on, and how many bands it was given (the key keeps its old name)
        "actor_nodes": scheduler.actor_nodes if scheduler else [],
        "tasks_per_actor": list(scheduler.actor_tasks.values()) if scheduler else [],
        # bands handed out again because their actor was lost (its process or node died), and the
        # actors still lost when the job ended
        "bands_rerun": scheduler.bands_rerun if scheduler else 0,
        "actors_lost": len(scheduler.lost) if scheduler else 0,
        # remote calls tried again (window reads, uploads, DICOMweb), by kind: the items' and the job's own
        "retries": retry_totals(outcomes),
        "kind": spec.tiling.kind,
        "lesion_classes": list(spec.statistics.lesion_classes),
    }
    paths = write_summary(out_dir, outcomes, job)
    legend = getattr(scheduler, "legend", None)
    if spec.stac_outputs and legend is not None:
        paths.append(write_collection(out_dir, spec.name, sorted(out_dir.glob(f"*/{STAC_ITEM_NAME}")), legend,
                                      f"Label maps made by geoseg with the workflow {spec.name!r}",
                                      nodata_label=255 if len(legend.names) <= 255 else 65535))
    if publisher is not None:
        try:
            for path in [*paths, out_dir / LEDGER_NAME]:
                publisher.publish_file(path, path.relative_to(out_dir).as_posix())
        except GeosegError as exc:
            raise JobError(f"the items are published, but not the job's summary and ledger: {exc}") from exc
        log.info("outputs published to %s", publisher.location.uri)
    return JobResult(tuple(outcomes), out_dir, tuple(paths), time.monotonic() - started)


def retry_totals(outcomes: Sequence[ItemOutcome]) -> dict[str, int]:
    """Retries of remote calls, by kind: the items' (ok ones: a failed item's are in its log
    lines) and those of the job's own calls (listing, the write check, the ledger)."""
    total: Counter[str] = Counter(TALLY.take("job"))
    for o in outcomes:
        total.update(o.extra.get("retries", {}))
    return {kind: total[kind] for kind in KINDS}


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


__all__ = ["JobResult", "run_job"]
