"""A 3D volume item (NIfTI, Zarr): label volumes on the input's grid (NIfTI and/or OME-Zarr),
volumes in mL, lesions, the item's HTML report."""

from __future__ import annotations

import math
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError
from ..formats import detect, outputs_for
from ..geometry import Window
from ..orientation import axis_map
from ..report import write_item_stats, write_lesions
from ..report.html import write_volume_report
from ..resampling import spacing_map
from ..sinks import ClassLegend, SinkTarget, make_sinks
from ..sinks.dicom_seg import SEG_NAME
from ..sinks.volume_labels import label_type
from ..sources import SourceOptions, VolumeSource, open_metadata, open_source, open_volume_source, stage_item
from ..sources.dicomweb import from_spec, is_dicomweb, store
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..statistics import ItemStats, LesionTracker
from ..statistics.classes import VolumeTally
from ..stitching import LabelBlock
from ..storage import S3Config, is_s3
from ..tasks import ModelInfo
from ..tiling import plan_tiles
from ..version import __version__
from .base import OpenItem, band_selection, item_job

#: Input-grid planes mapped back from the model's spacing at a time.
RESAMPLE_SLAB = 16


class VolumeItem(OpenItem):
    """A 3D volume: label volumes on the input's grid, volumes in mL, lesions.

    The driver reads the item's header only: a worker stages it (a ``.nii.gz`` inflated, an
    ``s3://`` object fetched: see the format's ``stage``) and computes its z-score statistics
    (``ItemJob.needs_preparation``); workers on the same machine read that copy, others make
    their own. The item's hidden scratch folder in its output directory holds, when resampling,
    the model-space labels (and a report's copy of an object no worker here staged); it is
    removed when the item ends.
    """

    def __init__(self, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend,
                 s3: S3Config | None = None, provenance: dict[str, str] | None = None) -> None:
        super().__init__()
        out_dir = spec.output.directory / item.name
        self.scratch_dir = out_dir / f".scratch-{uuid.uuid4().hex[:12]}"
        self.scratch_dir.mkdir(parents=True)
        self.scratch = self.scratch_dir
        try:
            self._open(item, spec, info, legend, s3, provenance or {})
        except BaseException:
            self.abort()
            raise

    def _header(self, item: Item, spec: WorkflowSpec, s3: S3Config | None) -> tuple[Any, VolumeSource]:
        """Open ``item``'s metadata (the format's reader in header mode: the workers stage the
        item and compute its statistics, ``prepare_item``); sets the format, source options and
        study attributes. Returns the format and the open source (the caller closes it)."""
        fmt = detect(item.path, "volume", spec.inputs.format)
        dicomweb = from_spec(spec.inputs.dicomweb) if spec.inputs.dicomweb is not None else None
        self.options = SourceOptions(s3=s3, channel_axis=spec.inputs.channel_axis, dicomweb=dicomweb,
                                     max_pixels=spec.inputs.max_pixels)
        self.format = fmt
        src = open_metadata(fmt, item.path, self.options)
        assert isinstance(src, VolumeSource)
        self.study = study_fields(getattr(src, "info", {}), spec.output.identifiers)
        self.item, self.grid = item, src.grid
        # a NIfTI output copies a NIfTI input's header; a DICOM SEG references a series' instances
        self.header = getattr(src, "header", None) if fmt.name == "nifti" else None
        return fmt, src

    def _outputs(self, spec: WorkflowSpec, legend: ClassLegend, num_classes: int, model: str,
                 provenance: dict[str, str]) -> None:
        """The item's sinks and statistics on the input's grid, for ``num_classes`` label values."""
        item, grid, fmt = self.item, self.grid, self.format
        out_dir = spec.output.directory / item.name
        dicomweb = self.options.dicomweb
        made_by = {"model": model, "software": f"geoseg-pipeline {__version__}", **provenance}
        target = SinkTarget(grid, legend, None, num_classes, spec.output, spec.tiling.block_shape, self.header,
                            made_by, item.path if fmt.series else None, dicomweb)
        self.sinks.extend(make_sinks(outputs_for("volume", spec.output.formats), out_dir, target))
        self.label_dtype = str(label_type(out_dir, legend, None)[1])
        self.tally = VolumeTally(num_classes, grid.voxel_volume_mm3, legend.names, item.name)
        self.statistics.append(self.tally)
        st = spec.statistics
        self.lesions = LesionTracker(st.lesion_classes, grid.affine, grid.shape, connectivity=st.connectivity,
                                     min_voxels=st.min_lesion_voxels) if st.lesion_classes else None
        if self.lesions is not None:
            self.statistics.append(self.lesions)
        self.colours = legend.colours
        self.stow = from_spec(spec.output.dicomweb) if spec.output.dicomweb is not None else None
        self.nodata_label = None
        self.model_labels: Path | None = None

    def _open(self, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend, s3: S3Config | None,
              provenance: dict[str, str]) -> None:
        fmt, src = self._header(item, spec, s3)
        try:
            grid, count = src.grid, src.channel_count
            if src.ndim_effective < 3:
                raise InputDataError(f"{item.path}: a {src.ndim_effective}D image (shape {grid.shape}) "
                                     "given to a 3D model")
            prep = band_selection(item, spec, count, info, "volume", "channel(s)")
        finally:
            src.close()
        if spec.inputs.nodata is not None:  # e.g. NaN outside the body: read as 0, labelled 0 (background)
            prep = replace(prep, nodata=spec.inputs.nodata)
        intensity = spec.preprocessing.intensity
        if intensity is not None and intensity.mode == "window":
            prep = replace(prep, window=intensity.window)
        self.amap = axis_map(grid.affine, grid.shape, spec.preprocessing.orientation)
        oriented_zooms = tuple(grid.zooms[p] for p in self.amap.perm)
        self.smap = spacing_map(self.amap.model_shape, oriented_zooms, spec.preprocessing.spacing,
                                self.amap.model_affine(grid.affine))
        shape = self.smap.model_shape if self.smap is not None else self.amap.model_shape
        self.plan = plan_tiles(shape, spec.tiling.roi_size, spec.tiling.overlap, spec.tiling.block_shape)
        self.job = item_job(item, spec, fmt, prep, channel_axis=spec.inputs.channel_axis,
                            axcodes=spec.preprocessing.orientation, image_shape=shape, resample=self.smap,
                            staged=fmt.staged, dicomweb=self.options.dicomweb,
                            zscore_nonzero=intensity is not None and intensity.mode == "zscore_nonzero")
        self.small = any(n < r for n, r in zip(shape, spec.tiling.roi_size, strict=True))
        model = spec.model.path.name if spec.model.path is not None else (spec.model.name or spec.model.type)
        self._outputs(spec, legend, info.num_classes, model, provenance)
        # with resampling, blocks arrive in model space: one byte (two) per model voxel in a
        # scratch file, mapped back onto the input grid at commit
        if self.smap is not None:
            self.model_labels = self.scratch_dir / "model-labels.raw"
            with open(self.model_labels, "wb") as f:  # sparse
                f.truncate(math.prod(shape) * np.dtype(self.label_dtype).itemsize)

    def write(self, block: LabelBlock) -> None:
        """Take one finished block, planned in the model's orientation (and spacing)."""
        if self.model_labels is not None:
            self._model_labels()[block.window.slices()] = block.labels
        else:
            self._write_oriented(block.window, block.labels)

    def _write_oriented(self, window: Window, labels: np.ndarray) -> None:
        # blocks are planned in the model's orientation; outputs stay on the input's grid
        super().write(LabelBlock(self.amap.to_disk_window(window), self.amap.to_disk_array(labels)))

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
            return super().commit(meta)
        finally:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def _report(self, outputs: list[Path], meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        if self.stow is not None:  # first: a refusal takes back the published outputs, before any report
            store(self.stow, outputs[0].parent / SEG_NAME, key=outputs[0].parent.name)
        lesions = tuple(self.lesions.finish()) if self.lesions is not None else ()
        stats = replace(self.tally.finish(), lesions=lesions, study=self.study)
        meta = {"shape": list(self.grid.shape), "affine": self.grid.affine.tolist(),
                "axcodes": "".join(self.grid.axcodes), "voxel_size_mm": list(self.grid.zooms), **meta}
        if self.smap is not None:
            meta["model_grid"] = {"shape": list(self.smap.model_shape), "voxel_size_mm": list(self.smap.target),
                                  "labels_mapped_back": "nearest"}
        out_dir = outputs[0].parent
        paths = write_item_stats(out_dir, self.item.path, stats, meta)
        if self.lesions is not None:
            paths.append(write_lesions(out_dir, stats))
        src = self._input(pixels=bool(stats.lesions))
        labels = open_volume_source(str(outputs[0]))
        try:
            paths.append(write_volume_report(out_dir, src, labels, stats, self.colours))
        finally:
            src.close()
            labels.close()
        return stats, paths

    def _input(self, pixels: bool) -> VolumeSource:
        """The input, for the report: its metadata, and when ``pixels`` the few slices of its
        figures, read from the workers' staged copy where this process sees it (no second
        decompression or download), else in place (a local file), else from a copy fetched into
        the scratch folder (an object read by workers on other nodes)."""
        options = self.options
        if self.job.data_path and os.path.exists(self.job.data_path):
            options = replace(options, data_path=self.job.data_path)
        elif not pixels:
            src = open_metadata(self.format, self.item.path, options)
            assert isinstance(src, VolumeSource)
            return src
        elif is_s3(self.item.path) or is_dicomweb(self.item.path):
            options = replace(options, data_path=stage_item(self.format, self.item.path, self.scratch_dir, options))
        src = open_source(self.format, self.item.path, options)
        assert isinstance(src, VolumeSource)
        return src

    def abort(self) -> None:
        super().abort()
        shutil.rmtree(self.scratch_dir, ignore_errors=True)


#: DICOM attributes an item's statistics and reports carry; the first three identify a patient.
STUDY_FIELDS = ("PatientID", "StudyInstanceUID", "StudyDate", "SeriesDescription", "Modality")
IDENTIFYING = frozenset(STUDY_FIELDS[:3])


def study_fields(info: dict[str, str], identifiers: bool) -> tuple[tuple[str, str], ...]:
    """The study attributes of a DICOM item for its statistics and reports (none for other
    inputs); without ``identifiers`` (``output.identifiers: false``) the identifying ones are left out."""
    return tuple((k, str(info[k])) for k in STUDY_FIELDS if k in info and (identifiers or k not in IDENTIFYING))


__all__ = ["RESAMPLE_SLAB", "STUDY_FIELDS", "VolumeItem", "study_fields"]
