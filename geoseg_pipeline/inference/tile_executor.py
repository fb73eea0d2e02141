"""A worker's inference: predict the windows of tile tasks and finish whole bands of blocks
(blend, argmax) where the logits are, so that only labels leave the worker.

This is the work an inference actor (or a local worker thread) does; it is a plain class so
tests call it directly. Reading runs ahead on the :class:`~.reading.ItemReader`'s threads.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..geometry import Window
from ..sinks.regions import regions_in_block
from ..spec import InferenceSpec, ModelSpec
from ..statistics.classes import row_class_counts
from ..stitching import FinishedBlock
from ..stitching.blocks import BlockStitcher
from ..stitching.weights import importance_map
from ..storage import S3Config
from ..storage.retry import TALLY
from ..tasks import BandResult, BlockRegions, FinishedLabels, ItemFacts, ItemJob, ModelInfo, TileResult
from ..tiling import BandTask, TileTask
from .band_stitcher import DeviceBandStitcher
from .predictor import Predictor
from .reading import ItemReader, PreparedTask

log = logging.getLogger("geoseg")


class TileExecutor:
    """Holds a :class:`Predictor` and an :class:`ItemReader`; runs tile tasks and bands.

    One executor serves one thread at a time; threads of one process may share a
    ``predictor`` (torch runs a loaded model from several threads).

    Args:
        model: the model to load (unless ``predictor`` is given).
        device, threads, options: see :class:`Predictor`.
        predictor: an already loaded model to share.
        s3: the job's object store configuration.
        reader_threads: threads reading ahead of the model (a GPU worker wants several).
        reader_env: entered by each reading thread (rasterio's per-thread environment).
    """

    def __init__(
        self, model: ModelSpec, device: str | None = None, threads: int | None = None,
        options: InferenceSpec | None = None, *, predictor: Predictor | None = None, s3: S3Config | None = None,
        reader_threads: int = 1, reader_env: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.predictor = predictor or Predictor(model, device=device, threads=threads, options=options)
        self.s3 = s3
        self.reader = ItemReader(s3, reader_threads, reader_env, pin=self.predictor.device.type == "cuda")

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """The model's channels and classes (one probe forward pass)."""
        return self.predictor.describe(in_channels, roi, fallback)

    def prepare_item(self, job: ItemJob) -> ItemFacts:
        """Stage the item and compute its intensity statistics (see :meth:`ItemReader.prepare_item`)."""
        facts = self.reader.prepare_item(job)
        retries = _retries(job)
        return replace(facts, retries=retries) if retries else facts

    def release(self, path: str) -> None:
        """Close ``path`` if it is open, and drop its own staged copy (after its item is done)."""
        self.reader.release(path)

    def close(self) -> None:
        """Stop reading, close every source and drop every staged copy."""
        self.reader.close()

    def run_band(self, job: ItemJob, band: BandTask) -> Iterator[BandResult]:
        """Finish the blocks of ``band``: run its halo and its tasks, blend them here, argmax
        each block as it completes. Yields the blocks as they finish (so that the driver
        journals them at once), with the windows run since the last part; only labels (and,
        when asked, logits) leave the worker.

        A raster band is blended on the model's device (:class:`DeviceBandStitcher`); a volume
        band in a :class:`BlockStitcher` with scratch files (its open blocks span a plane)."""
        if job.plan is None or job.stitch is None:
            raise ValueError(f"{job.name}: a band needs the item's plan and stitch settings")
        plan, st = job.plan, job.stitch
        rows = range(*band.rows)
        outside = [b for b in plan.blocks() if b[0] not in rows or b in band.done]
        scratch = Path(tempfile.mkdtemp(prefix="geoseg-band-")) if job.kind == "volume" else None
        try:
            device = self.predictor.device
            stitcher: DeviceBandStitcher | BlockStitcher = (
                DeviceBandStitcher(plan, st, outside, device) if job.kind == "raster" else
                BlockStitcher(plan, st.num_classes, st.nodata_label, np.dtype(st.label_dtype),
                              keep_logits=st.keep_logits, scratch=scratch, done=outside))
            weights = importance_map(job.roi_size, job.blend, job.sigma_scale).to(device)
            own = halo = skipped = 0
            for prepared in self.reader.prepared(job, plan.band_tasks(band)):
                task, ran = prepared.task, len(prepared.runnable)
                if task.block[0] in rows:
                    own += ran
                    skipped += len(task.windows) - ran
                else:
                    halo += ran
                if isinstance(stitcher, DeviceBandStitcher):
                    for window, logits in self._window_logits(job, prepared):
                        stitcher.add_window(window, logits, weights)
                    finished = stitcher.end_task(task, prepared.valid, prepared.inside)
                else:
                    finished = stitcher.add(self._predict(job, prepared))
                if finished:
                    parts = tuple(FinishedLabels(b.index, b.labels, _logits_out(job, b.logits),
                                                 _counts(job, b.labels, b.valid), _regions(job, b)) for b in finished)
                    yield BandResult(band.index, parts, own, skipped, halo, _retries(job))
                    own = halo = skipped = 0
            if not stitcher.done:  # cannot happen for a plan's band: every block gets its tasks
                raise RuntimeError(f"{job.name}: band {band.rows} left blocks unfinished")
            retries = _retries(job)
            if own or halo or skipped or retries:
                yield BandResult(band.index, (), own, skipped, halo, retries)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def run(self, job: ItemJob, task: TileTask) -> TileResult:
        """Read, predict and blend the windows of ``task`` (in this thread) into one partial sum."""
        return self._predict(job, self.reader.prepare(job, task))

    def _window_logits(self, job: ItemJob, prepared: PreparedTask) -> Iterator[tuple[Window, torch.Tensor]]:
        """Each runnable window of a prepared task with its logits ``(classes, *roi)``, on the
        model's device: the region goes to the device once and the windows are cut there."""
        region, runnable = prepared.task.region, prepared.runnable
        x = prepared.x.to(self.predictor.device, non_blocking=True)
        batch_size = job.batch_size or self.predictor.batch_size(x.shape[0], job.roi_size)
        for b in range(0, len(runnable), batch_size):
            batch_windows = runnable[b : b + batch_size]
            batch = torch.stack([x[(slice(None), *w.slices(region.start))] for w in batch_windows])
            yield from zip(batch_windows, self.predictor.predict(batch), strict=True)

    def _predict(self, job: ItemJob, prepared: PreparedTask) -> TileResult:
        """Predict a prepared task's windows and blend them into one partial sum over its region."""
        device = self.predictor.device
        region, inside = prepared.task.region, prepared.inside
        weights_map = importance_map(job.roi_size, job.blend, job.sigma_scale).to(device)
        logits: torch.Tensor | None = None
        wsum = torch.zeros(region.size, dtype=torch.float32, device=device)
        for w, p in self._window_logits(job, prepared):
            if logits is None:
                logits = torch.zeros((p.shape[0], *region.size), dtype=torch.float32, device=p.device)
            s = w.slices(region.start)
            logits[(slice(None), *s)] += p * weights_map
            wsum[s] += weights_map
        sl = inside.slices(region.start)
        crop = (slice(None), *sl)
        return TileResult(
            task_index=prepared.task.index,
            region=inside,
            logits=logits[crop].cpu().numpy() if logits is not None else np.zeros((0, *inside.size), np.float32),
            weights=wsum[sl].cpu().numpy(),
            valid=prepared.valid[sl],
            windows_run=len(prepared.runnable),
            windows_skipped=len(prepared.task.windows) - len(prepared.runnable),
        )


def _retries(job: ItemJob) -> tuple[tuple[str, int], ...]:
    """The remote calls this process retried for ``job``'s item since it was last asked, by kind
    (see :mod:`geoseg_pipeline.storage.retry`): they travel back to the driver's count."""
    return tuple(sorted(TALLY.take(job.path).items()))


def _logits_out(job: ItemJob, logits: np.ndarray | None) -> np.ndarray | None:
    """A block's logits as they go back: half precision for an nnU-Net item (its export reads
    float16, as nnU-Net holds its logits), else as blended."""
    if logits is None or job.nnunet is None:
        return logits
    return logits.astype(np.float16)


def _counts(job: ItemJob, labels: np.ndarray, valid: np.ndarray | None) -> np.ndarray | None:
    """A raster block's valid pixels per (row, class), counted here rather than in the driver,
    when they cost at most a quarter of the labels' bytes (uint16: a row holds at most 65,535
    pixels); else ``None``, and the driver counts them."""
    assert job.stitch is not None
    classes = job.stitch.num_classes
    if job.kind != "raster" or labels.shape[1] > np.iinfo(np.uint16).max \
            or 2 * classes * labels.shape[0] > labels.nbytes // 4:
        return None
    mask = valid if valid is not None else np.ones(labels.shape, bool)
    return row_class_counts(labels, mask, classes).astype(np.uint16)


def _regions(job: ItemJob, block: FinishedBlock) -> BlockRegions | None:
    """A raster block's connected regions, found here rather than in the driver, when the item
    writes polygons (``StitchSettings.regions``): the driver then only joins them across blocks."""
    assert job.stitch is not None
    settings = job.stitch.regions
    return None if settings is None else regions_in_block(settings, block.window, block.labels)
