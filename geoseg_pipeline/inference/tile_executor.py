"""Run one tile task: read its region, predict its windows, blend them into one partial sum.

This is the work an inference actor does; it is a plain class so tests call it directly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import GeosegError, SourceError, TransientSourceError
from ..formats import lookup
from ..geometry import Window, full_window, intersection
from ..orientation import OrientedVolume, axis_map
from ..preprocess import to_model_input, valid_mask
from ..resampling import ResampledVolume
from ..sources import RasterSource, SourceOptions, VolumeSource, open_source, stage_item
from ..spec import InferenceSpec, ModelSpec
from ..stitching.weights import importance_map
from ..storage import S3Config, is_transient
from ..tasks import ItemJob, ModelInfo, TileResult
from ..tiling import TileTask
from .predictor import Predictor

log = logging.getLogger("geoseg")

#: Seconds before the first retry of a failed read (:meth:`TileExecutor._read`); doubled after each.
READ_RETRY_DELAY = 0.5


class TileExecutor:
    """Holds a :class:`Predictor` and the open sources; processes tile tasks.

    One executor serves one thread at a time (its open sources are not shared); threads of one
    process may share a ``predictor`` (torch runs a loaded model from several threads).
    """

    def __init__(
        self, model: ModelSpec, device: str | None = None, threads: int | None = None,
        options: InferenceSpec | None = None, *, predictor: Predictor | None = None, s3: S3Config | None = None,
    ) -> None:
        self.predictor = predictor or Predictor(model, device=device, threads=threads, options=options)
        self.s3 = s3
        self._sources: OrderedDict[str, RasterSource | VolumeSource] = OrderedDict()
        # items this executor staged itself (the driver's copy is not visible here)
        self._staged: dict[str, Path] = {}

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """The model's channels and classes (one probe forward pass)."""
        return self.predictor.describe(in_channels, roi, fallback)

    def _source(self, job: ItemJob) -> RasterSource | VolumeSource:
        src = self._sources.get(job.path)
        if src is None:
            src = self._open(job)
            self._sources[job.path] = src
            while len(self._sources) > 4:
                self._sources.popitem(last=False)[1].close()
        else:
            self._sources.move_to_end(job.path)
        return src

    def _open(self, job: ItemJob) -> RasterSource | VolumeSource:
        """Open the item with its format's reader. A staged format reads the driver's copy when
        this process sees it (same machine, shared output folder), else its own copy, made once
        per item (an actor on another node of a cluster)."""
        fmt = lookup(job.format, "volume" if job.kind == "volume" else "raster")
        options = SourceOptions(s3=self.s3, channel_axis=job.channel_axis)
        if fmt.staged:
            data_path = job.data_path if job.data_path and os.path.exists(job.data_path) else None
            if data_path is None:
                folder = self._staged.get(job.path)
                if folder is None:
                    folder = self._staged[job.path] = Path(tempfile.mkdtemp(prefix="geoseg-stage-"))
                data_path = stage_item(fmt, job.path, folder, options)
            options = replace(options, data_path=data_path)
        src = open_source(fmt, job.path, options)
        if isinstance(src, RasterSource):
            return src
        amap = axis_map(src.grid.affine, src.grid.shape, job.axcodes)
        out: VolumeSource = src if amap.identity else OrientedVolume(src, amap)  # type: ignore[assignment]
        if job.resample is not None:
            out = ResampledVolume(out, job.resample)  # type: ignore[assignment]
        return out

    def release(self, path: str) -> None:
        """Close ``path`` if it is open, and drop its own staged copy (after its item is done)."""
        src = self._sources.pop(path, None)
        if src is not None:
            src.close()
        folder = self._staged.pop(path, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Close every open source and drop every staged copy."""
        for path in [*self._sources, *self._staged]:
            self.release(path)

    def _read(self, src: RasterSource | VolumeSource, job: ItemJob, window: Window, channels: list[int]) -> np.ndarray:
        """``src.read``, retried when the failure may pass: a :class:`TransientSourceError`
        (object store 5xx or throttling, a timeout, a dropped connection, a network file system
        hiccup) or a bare ``OSError`` that :func:`~geoseg_pipeline.storage.is_transient` says is
        one. A failed read is retried ``job.read_retries`` times, after :data:`READ_RETRY_DELAY`
        seconds, then twice as long each time, the item reopened each time. Any other error (a
        corrupt tile, access denied, content that cannot be segmented) is raised at once.

        Raises:
            SourceError: the read failed ``read_retries + 1`` times (the message says how many
                and gives the last error), or failed in a way retrying cannot mend.
        """
        delay = READ_RETRY_DELAY
        current: RasterSource | VolumeSource | None = src
        for attempt in range(job.read_retries + 1):
            try:
                if current is None:
                    current = self._source(job)
                return current.read(window, channels)
            except TransientSourceError as exc:
                error: OSError = exc
            except GeosegError:
                raise
            except OSError as exc:
                if not is_transient(exc):
                    raise SourceError(f"{job.path}: cannot read {window}: {exc}") from exc
                error = exc
            if attempt == job.read_retries:
                raise SourceError(
                    f"{job.path}: reading {window} failed {attempt + 1} time(s) (read_retries={job.read_retries}); "
                    f"last error: {error}"
                ) from error
            log.warning("%s: read of %s failed (%s); retrying in %.1f s", job.path, window, error, delay)
            time.sleep(delay)
            delay *= 2
            self.release(job.path)
            current = None
        raise AssertionError("unreachable")

    def run(self, job: ItemJob, task: TileTask) -> TileResult:
        """Read, predict and blend the windows of ``task``."""
        src = self._source(job)
        prep = job.preprocessing
        region = task.region
        inside = intersection(region, full_window(job.image_shape or src.grid.shape))
        if inside is None:  # cannot happen for a plan of this grid
            raise ValueError(f"{job.name}: task {task.index} lies outside the image")
        # raster bands are 1-based (GDAL), volume channels 0-based (array axes)
        channels = list(prep.bands) if job.kind == "raster" else [b - 1 for b in prep.bands]
        data = self._read(src, job, inside, channels)
        valid_in = valid_mask(data, prep.nodata)
        x_in = to_model_input(data, valid_in, prep, job.path)

        # Windows may reach into MONAI's zero padding around a small image.
        x = np.zeros((len(prep.bands), *region.size), dtype=np.float32)
        valid = np.zeros(region.size, dtype=bool)
        sl = inside.slices(region.start)
        x[(slice(None), *sl)] = x_in
        valid[sl] = valid_in

        runnable = [w for w in task.windows if valid[w.slices(region.start)].any()]
        weights_map = importance_map(job.roi_size, job.blend, job.sigma_scale).to(self.predictor.device)
        logits: torch.Tensor | None = None
        wsum = torch.zeros(region.size, dtype=torch.float32, device=self.predictor.device)
        for b in range(0, len(runnable), job.batch_size):
            batch_windows = runnable[b : b + job.batch_size]
            batch = np.stack([x[(slice(None), *w.slices(region.start))] for w in batch_windows])
            pred = self.predictor.predict(batch)
            if logits is None:
                logits = torch.zeros((pred.shape[1], *region.size), dtype=torch.float32, device=pred.device)
            for p, w in zip(pred, batch_windows, strict=True):
                s = w.slices(region.start)
                logits[(slice(None), *s)] += p * weights_map
                wsum[s] += weights_map
        if logits is None:
            logits = torch.zeros((0, *region.size), dtype=torch.float32)
        crop = (slice(None), *sl)
        return TileResult(
            task_index=task.index,
            region=inside,
            logits=logits[crop].cpu().numpy() if logits.shape[0] else np.zeros((0, *inside.size), np.float32),
            weights=wsum[sl].cpu().numpy(),
            valid=valid[sl],
            windows_run=len(runnable),
            windows_skipped=len(task.windows) - len(runnable),
        )
