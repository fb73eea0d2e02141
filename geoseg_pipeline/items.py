"""One open item: its tiling plan, what the actors are sent, and where its finished blocks go
(sink and statistics). Rasters and volumes differ only here; the driver schedules both alike.

Torch-free and Ray-free: the driver opens items (metadata only), the actors read pixels.
"""

from __future__ import annotations

import math
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputDataError
from .geometry import Window
from .intensity import nonzero_mean_std
from .orientation import axis_map
from .preprocess import Preprocessing
from .report import write_item_stats, write_lesions
from .report.html import write_volume_report
from .resampling import spacing_map
from .sinks import ClassLegend, CogLabelSink
from .sinks.nifti import NiftiLabelSink
from .sinks.zarr_labels import ZarrLabelSink
from .sources import open_raster_source
from .sources.discovery import Item
from .sources.nifti_source import NiftiSource, VolumeSource, open_volume_source
from .sources.remote import S3Config, is_s3, nifti_header
from .spec import WorkflowSpec
from .statistics import ClassTally, ItemStats, LesionTracker, pixel_areas
from .statistics.classes import VolumeTally
from .stitching import FinishedBlock
from .tasks import ItemJob, ModelInfo
from .tiling import TilePlan, plan_tiles

#: Input-grid planes mapped back from the model's spacing at a time.
RESAMPLE_SLAB = 16


class OpenItem(ABC):
    """An item being processed: ``plan`` and ``job`` drive the actors; ``write`` takes each
    finished block; ``commit`` publishes outputs and statistics (may run in a thread)."""

    item: Item
    plan: TilePlan
    job: ItemJob
    nodata_label: int | None
    label_dtype: str
    small: bool
    #: where the stitcher keeps open blocks' sums (``None``: in memory)
    scratch: Path | None = None
    #: whether finished blocks must carry their blended logits
    keep_logits: bool = False

    @abstractmethod
    def write(self, block: FinishedBlock) -> None:
        """Write one finished block and count it."""

    @abstractmethod
    def commit(self, meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        """Publish the outputs; returns the statistics and the written paths."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written so far."""


def _bands(item: Item, spec: WorkflowSpec, count: int, info: ModelInfo, kind: str, what: str) -> Preprocessing:
    """Band (channel) selection and normalization, checked against the model and the item."""
    bands = spec.preprocessing.bands or tuple(range(1, count + 1))
    if max(bands) > count:
        raise InputDataError(f"{item.path}: preprocessing.bands selects {max(bands)} but the {kind} has {count} {what}")
    if len(bands) != info.in_channels:
        raise InputDataError(
            f"{item.path}: the model takes {info.in_channels} input channel(s) but the {kind} gives "
            f"{len(bands)} {what}" + (" after band selection" if spec.preprocessing.bands else "")
        )
    norm = spec.preprocessing.normalize
    if norm is not None and len(norm.mean) != len(bands):
        raise InputDataError(
            f"{item.path}: preprocessing.normalize has {len(norm.mean)} entries for {len(bands)} {what}"
        )
    return Preprocessing(bands, norm.mean if norm else None, norm.std if norm else None)


def _job(item: Item, spec: WorkflowSpec, prep: Preprocessing, kind: str, **extra: Any) -> ItemJob:
    t = spec.tiling
    return ItemJob(item.name, item.path, spec.inputs.format, prep, tuple(t.roi_size), t.blend, t.sigma_scale,
                   t.batch_size, kind=kind, read_retries=spec.resources.read_retries, **extra)


def _intensity(src: VolumeSource, spec: WorkflowSpec, prep: Preprocessing) -> Preprocessing:
    """Add the workflow's intensity preparation; a z-score reads the item once, slab by slab."""
    intensity = spec.preprocessing.intensity
    if intensity is None:
        return prep
    if intensity.mode == "window":
        return replace(prep, window=intensity.window)
    mean, std = nonzero_mean_std(src, [b - 1 for b in prep.bands])
    return replace(prep, mean=mean, std=std, nonzero_only=True)


class RasterItem(OpenItem):
    """A 2D raster: COG label map, per-class areas."""

    def __init__(self, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend) -> None:
        src = open_raster_source(item.path, spec.inputs.format)
        try:
            grid, count, file_nodata = src.grid, src.band_count, src.nodata
        finally:
            src.close()
        prep = _bands(item, spec, count, info, "raster", "band(s)")
        nodata = spec.inputs.nodata if spec.inputs.nodata is not None else file_nodata
        prep = Preprocessing(prep.bands, prep.mean, prep.std, nodata)
        self.item, self.grid = item, grid
        self.plan = plan_tiles(grid.shape, spec.tiling.roi_size, spec.tiling.overlap, spec.tiling.block_shape)
        self.job = _job(item, spec, prep, "raster")
        self.small = any(n < r for n, r in zip(grid.shape, spec.tiling.roi_size, strict=True))
        self.nodata_label = 255 if info.num_classes <= 255 else 65535
        self.keep_logits = "logits" in spec.output.resolved_formats(2)
        self.sink = CogLabelSink(
            spec.output.directory / item.name, grid, legend, self.nodata_label,
            compression=spec.output.compression, overview_resampling=spec.output.overview_resampling,
            logits_classes=info.num_classes if self.keep_logits else None,
        )
        self.label_dtype = self.sink.dtype
        self.tally = ClassTally(info.num_classes, pixel_areas(grid))
        self.names = legend.names

    def write(self, block: FinishedBlock) -> None:
        self.sink.write(block.window, block.labels, block.logits)
        self.tally.add(block.window, block.labels, block.valid)

    def commit(self, meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        labels = self.sink.commit()
        stats = self.tally.result(self.item.name, self.names)
        meta = {"crs": self.grid.crs, "transform": list(self.grid.transform)[:6], "shape": list(self.grid.shape),
                **meta}
        return stats, [labels, *write_item_stats(labels.parent, self.item.path, stats, meta)]

    def abort(self) -> None:
        self.sink.abort()


class VolumeItem(OpenItem):
    """A 3D volume (NIfTI, Zarr): NIfTI label volume on the input's grid, volumes in mL, lesions.

    The item's hidden scratch folder in its output directory holds the inflated copy of a
    ``.nii.gz`` (see :func:`~geoseg_pipeline.sources.nifti_source.prepare_volume`), the open
    blocks' running sums and, when resampling, the model-space labels; it is removed when the
    item ends.
    """

    def __init__(self, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend) -> None:
        out_dir = spec.output.directory / item.name
        self.scratch_dir = out_dir / f".scratch-{uuid.uuid4().hex[:12]}"
        self.scratch_dir.mkdir(parents=True)
        self.scratch = self.scratch_dir
        try:
            src = open_volume_source(item.path, self.scratch_dir, spec.inputs.channel_axis)
            try:
                grid, count = src.grid, src.channel_count
                data_path = getattr(src, "data_path", item.path)
                if src.ndim_effective < 3:
                    raise InputDataError(f"{item.path}: a {src.ndim_effective}D image (shape {grid.shape}) "
                                         "given to a 3D model")
                prep = _intensity(src, spec, _bands(item, spec, count, info, "volume", "channel(s)"))
            finally:
                src.close()
            self.item, self.grid = item, grid
            self.amap = axis_map(grid.affine, grid.shape, spec.preprocessing.orientation)
            oriented_zooms = tuple(grid.zooms[p] for p in self.amap.perm)
            self.smap = spacing_map(self.amap.model_shape, oriented_zooms, spec.preprocessing.spacing)
            shape = self.smap.model_shape if self.smap is not None else self.amap.model_shape
            self.plan = plan_tiles(shape, spec.tiling.roi_size, spec.tiling.overlap, spec.tiling.block_shape)
            self.job = _job(item, spec, prep, "volume", data_path=data_path, channel_axis=spec.inputs.channel_axis,
                            axcodes=spec.preprocessing.orientation, image_shape=shape, resample=self.smap)
            self.small = any(n < r for n, r in zip(shape, spec.tiling.roi_size, strict=True))
            self.nodata_label = None
            header = data_path if item.path.lower().endswith((".nii", ".nii.gz")) else None
            formats = spec.output.resolved_formats(3)
            self.sinks: list[NiftiLabelSink | ZarrLabelSink] = []
            if "nifti" in formats:
                self.sinks.append(NiftiLabelSink(out_dir, grid, header, legend, None))
            if "zarr" in formats:
                self.sinks.append(ZarrLabelSink(out_dir, grid, legend, None, chunks=_zarr_chunks(spec)))
            self.label_dtype = str(self.sinks[0].dtype)
            self.tally = VolumeTally(info.num_classes, grid.voxel_volume_mm3)
            st = spec.statistics
            self.lesions = LesionTracker(st.lesion_classes, grid.affine, grid.shape, connectivity=st.connectivity,
                                         min_voxels=st.min_lesion_voxels) if st.lesion_classes else None
            self.names = legend.names
            self.colours = legend.colours
            # with resampling, blocks arrive in model space: one byte (two) per model voxel in a
            # scratch file, mapped back onto the input grid at commit
            self.model_labels: Path | None = None
            if self.smap is not None:
                self.model_labels = self.scratch_dir / "model-labels.raw"
                with open(self.model_labels, "wb") as f:  # sparse
                    f.truncate(math.prod(shape) * np.dtype(self.label_dtype).itemsize)
        except BaseException:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
            raise

    def write(self, block: FinishedBlock) -> None:
        if self.model_labels is not None:
            self._model_labels()[block.window.slices()] = block.labels
        else:
            self._write_oriented(block.window, block.labels)

    def _write_oriented(self, window: Window, labels: np.ndarray) -> None:
        # blocks are planned in the model's orientation; outputs stay on the input's grid
        window, labels = self.amap.to_disk_window(window), self.amap.to_disk_array(labels)
        for sink in self.sinks:
            sink.write(window, labels)
        self.tally.add(labels)
        if self.lesions is not None:
            self.lesions.add_block(window, labels)

    def _model_labels(self) -> np.memmap:
        # mapped per use, so that the pages stay in the page cache, not in the driver
        assert self.model_labels is not None and self.smap is not None
        return np.memmap(self.model_labels, dtype=self.label_dtype, mode="r+", shape=self.smap.model_shape)

    def _map_back(self) -> None:
        """Nearest-neighbour labels from the model-spacing grid onto the (reoriented) input grid,
        one slab of ``RESAMPLE_SLAB`` planes at a time."""
        assert self.smap is not None
        model_labels = self._model_labels()
        shape = self.amap.model_shape
        j = self.smap.nearest_model_index(1, 0, shape[1])
        k = self.smap.nearest_model_index(2, 0, shape[2])
        for start in range(0, shape[0], RESAMPLE_SLAB):
            size = min(RESAMPLE_SLAB, shape[0] - start)
            i = self.smap.nearest_model_index(0, start, size)
            labels = np.asarray(model_labels[np.ix_(i, j, k)])
            self._write_oriented(Window((start, 0, 0), (size, shape[1], shape[2])), labels)
        self.model_labels = None

    def commit(self, meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        try:
            if self.model_labels is not None:
                self._map_back()
            written = [sink.commit() for sink in self.sinks]
            labels = written[0]
            lesions = tuple(self.lesions.finish()) if self.lesions is not None else ()
            stats = self.tally.result(self.item.name, self.names, lesions)
            meta = {"shape": list(self.grid.shape), "affine": self.grid.affine.tolist(),
                    "axcodes": "".join(self.grid.axcodes), "voxel_size_mm": list(self.grid.zooms), **meta}
            if self.smap is not None:
                meta["model_grid"] = {"shape": list(self.smap.model_shape), "voxel_size_mm": list(self.smap.target),
                                      "labels_mapped_back": "nearest"}
            paths = [*written, *write_item_stats(labels.parent, self.item.path, stats, meta)]
            if self.lesions is not None:
                paths.append(write_lesions(labels.parent, stats))
            # the inflated copy (if any) is still there: no second decompression
            data_path = self.job.data_path or self.item.path
            src: VolumeSource = (NiftiSource(self.item.path, self.job.channel_axis, data_path=data_path)
                                 if data_path != self.item.path else open_volume_source(self.item.path))
            try:
                paths.append(write_volume_report(labels.parent, src, stats, self.colours))
            finally:
                src.close()
            return stats, paths
        finally:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()
        shutil.rmtree(self.scratch_dir, ignore_errors=True)


def _zarr_chunks(spec: WorkflowSpec) -> tuple[int, ...]:
    """Zarr chunks: the output block, at most 64 voxels an axis (so a viewer reads little)."""
    edge = min(64, spec.tiling.block_shape[0])
    return (edge, edge, edge)


def open_item(item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend) -> OpenItem:
    """Open ``item`` as the workflow's kind: a raster for a 2D roi, a volume for a 3D roi."""
    if spec.tiling.spatial_dims == 3:
        return VolumeItem(item, spec, info, legend)
    return RasterItem(item, spec, info, legend)


def channel_count(item: Item, spec: WorkflowSpec) -> int:
    """Bands (or channels) of ``item``, from its metadata."""
    if spec.tiling.spatial_dims == 3:
        if is_s3(item.path) and item.path.lower().endswith((".nii", ".nii.gz")):
            shape = nifti_header(item.path, S3Config.from_env()).get_data_shape()
            axis = spec.inputs.channel_axis
            return int(shape[axis]) if axis is not None and axis < len(shape) else 1
        vol = open_volume_source(item.path, None, spec.inputs.channel_axis)
        vol.close()
        return vol.channel_count
    src = open_raster_source(item.path, spec.inputs.format)
    src.close()
    return src.band_count
