"""Run one tile task: read its region, predict its windows, blend them into one partial sum.

This is the work an inference actor does; it is a plain class so tests call it directly.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import numpy as np
import torch

from ..errors import GeosegError, SourceError
from ..geometry import Window, full_window, intersection
from ..orientation import OrientedVolume, axis_map
from ..preprocess import to_model_input, valid_mask
from ..resampling import ResampledVolume
from ..sources import RasterSource, open_raster_source
from ..sources.nifti_source import NiftiSource, VolumeSource, open_volume_source
from ..spec import InferenceSpec, ModelSpec
from ..stitching.weights import importance_map
from ..tasks import ItemJob, ModelInfo, TileResult
from ..tiling import TileTask
from .predictor import Predictor

log = logging.getLogger("geoseg")


class TileExecutor:
    """Holds a :class:`Predictor` and the open sources; processes tile tasks.

    One executor serves one thread at a time (its open sources are not shared); threads of one
    process may share a ``predictor`` (torch runs a loaded model from several threads).
    """

    def __init__(
        self, model: ModelSpec, device: str | None = None, threads: int | None = None,
        options: InferenceSpec | None = None, *, predictor: Predictor | None = None,
    ) -> None:
        self.predictor = predictor or Predictor(model, device=device, threads=threads, options=options)
        self._sources: OrderedDict[str, RasterSource | VolumeSource] = OrderedDict()

    def describe(self, in_channels: int | None, roi: tuple[int, ...], fallback: int | None = None) -> ModelInfo:
        """The model's channels and classes (one probe forward pass)."""
        return self.predictor.describe(in_channels, roi, fallback)

    def _source(self, job: ItemJob) -> RasterSource | VolumeSource:
        src = self._sources.get(job.path)
        if src is None:
            src = open_raster_source(job.path, job.format) if job.kind == "raster" else _open_volume(job)
            self._sources[job.path] = src
            while len(self._sources) > 4:
                self._sources.popitem(last=False)[1].close()
        else:
            self._sources.move_to_end(job.path)
        return src

    def release(self, path: str) -> None:
        """Close ``path`` if it is open (after its item is done)."""
        src = self._sources.pop(path, None)
        if src is not None:
            src.close()

    def close(self) -> None:
        """Close every open source."""
        while self._sources:
            self._sources.popitem()[1].close()

    def _read(self, src: RasterSource | VolumeSource, job: ItemJob, window: Window, channels: list[int]) -> np.ndarray:
        """``src.read`` with retries on I/O errors (network file systems, object stores): a
        failed read is retried ``job.read_retries`` times after 0.5, 1, 2, ... s, the file
        reopened each time; errors about the content (``GeosegError``) are not retried."""
        delay = 0.5
        for attempt in range(job.read_retries + 1):
            try:
                return src.read(window, channels)
            except GeosegError:
                raise
            except OSError as exc:
                if attempt == job.read_retries:
                    raise SourceError(f"{job.path}: reading {window} failed {attempt + 1} time(s): {exc}") from exc
                log.warning("%s: read of %s failed (%s); retrying in %.1f s", job.path, window, exc, delay)
                time.sleep(delay)
                delay *= 2
                self.release(job.path)
                src = self._source(job)
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


def _open_volume(job: ItemJob) -> VolumeSource:
    """A volume for an actor: the driver's inflated copy of a ``.nii.gz`` when there is one,
    presented in the model's orientation and spacing when the workflow sets them."""
    if job.data_path and job.data_path != job.path:
        src: VolumeSource = NiftiSource(job.path, job.channel_axis, data_path=job.data_path)
    else:
        src = open_volume_source(job.path, None, job.channel_axis)
    amap = axis_map(src.grid.affine, src.grid.shape, job.axcodes)
    out: VolumeSource = src if amap.identity else OrientedVolume(src, amap)  # type: ignore[assignment]
    if job.resample is not None:
        out = ResampledVolume(out, job.resample)  # type: ignore[assignment]
    return out
