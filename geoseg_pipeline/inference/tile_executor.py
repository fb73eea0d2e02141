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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..spec import InferenceSpec, ModelSpec
from ..stitching.blocks import BlockStitcher
from ..stitching.weights import importance_map
from ..storage import S3Config
from ..tasks import BandResult, FinishedLabels, ItemJob, ModelInfo, TileResult
from ..tiling import BandTask, TileTask
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

    def release(self, path: str) -> None:
        """Close ``path`` if it is open, and drop its own staged copy (after its item is done)."""
        self.reader.release(path)

    def close(self) -> None:
        """Stop reading, close every source and drop every staged copy."""
        self.reader.close()

    def run_band(self, job: ItemJob, band: BandTask) -> Iterator[BandResult]:
        """Finish the blocks of ``band``: run its halo and its tasks, blend them here (in a
        stitcher of the band's own), argmax each block as it completes. Yields the blocks as
        they finish (so that the driver journals them at once), with the windows run since the
        last part; only labels (and, when asked, logits) leave the worker."""
        if job.plan is None or job.stitch is None:
            raise ValueError(f"{job.name}: a band needs the item's plan and stitch settings")
        plan, st = job.plan, job.stitch
        rows = range(*band.rows)
        outside = [b for b in plan.blocks() if b[0] not in rows or b in band.done]
        scratch = Path(tempfile.mkdtemp(prefix="geoseg-band-")) if job.kind == "volume" else None
        try:
            stitcher = BlockStitcher(plan, st.num_classes, st.nodata_label, np.dtype(st.label_dtype),
                                     keep_logits=st.keep_logits, scratch=scratch, done=outside)
            own = halo = skipped = 0
            for prepared in self.reader.prepared(job, plan.band_tasks(band)):
                task = prepared.task
                result = self._predict(job, prepared)
                if task.block[0] in rows:
                    own += result.windows_run
                    skipped += result.windows_skipped
                else:
                    halo += result.windows_run
                finished = stitcher.add(result)
                if finished:
                    yield BandResult(band.index, tuple(FinishedLabels(b.index, b.labels, b.logits) for b in finished),
                                     own, skipped, halo)
                    own = halo = skipped = 0
            if not stitcher.done:  # cannot happen for a plan's band: every block gets its tasks
                raise RuntimeError(f"{job.name}: band {band.rows} left blocks unfinished")
            if own or halo or skipped:
                yield BandResult(band.index, (), own, skipped, halo)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def run(self, job: ItemJob, task: TileTask) -> TileResult:
        """Read, predict and blend the windows of ``task`` (in this thread)."""
        return self._predict(job, self.reader.prepare(job, task))

    def _predict(self, job: ItemJob, prepared: PreparedTask) -> TileResult:
        """Predict a prepared task's windows and blend them into one partial sum (on the
        model's device: one copy of the region to it, the windows cut there)."""
        device = self.predictor.device
        region, inside = prepared.task.region, prepared.inside
        runnable = prepared.runnable
        x = prepared.x.to(device, non_blocking=True)
        weights_map = importance_map(job.roi_size, job.blend, job.sigma_scale).to(device)
        batch_size = job.batch_size or self.predictor.batch_size(x.shape[0], job.roi_size)
        logits: torch.Tensor | None = None
        wsum = torch.zeros(region.size, dtype=torch.float32, device=device)
        for b in range(0, len(runnable), batch_size):
            batch_windows = runnable[b : b + batch_size]
            batch = torch.stack([x[(slice(None), *w.slices(region.start))] for w in batch_windows])
            pred = self.predictor.predict(batch)
            if logits is None:
                logits = torch.zeros((pred.shape[1], *region.size), dtype=torch.float32, device=pred.device)
            for p, w in zip(pred, batch_windows, strict=True):
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
            windows_run=len(runnable),
            windows_skipped=len(prepared.task.windows) - len(runnable),
        )
