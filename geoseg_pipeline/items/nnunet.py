"""A volume segmented by an nnU-Net model: planned on the preprocessed case a worker makes (its
shape is known only once the nonzero crop is found), blended logits kept in half precision in a
scratch file (as nnU-Net holds them), exported at commit slab by slab onto the input's grid
(:mod:`geoseg_pipeline.nnunet.export`), then statistics and reports as for any volume."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError
from ..geometry import Window
from ..nnunet.export import disk_axis_of_rows, export_slabs, to_disk_order
from ..nnunet.folder import model_from_spec
from ..nnunet.reading import reader_axes
from ..preprocess import Preprocessing
from ..sinks import ClassLegend
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..stitching import LabelBlock
from ..storage import S3Config
from ..tasks import ItemJob, ModelInfo
from ..tiling import plan_tiles
from .base import item_job
from .volume import VolumeItem


class NnunetItem(VolumeItem):
    """A volume for an nnU-Net model. ``plan`` is set by :meth:`planned` once a worker has
    preprocessed the case (``ItemJob.case``); until then the item has no blocks."""

    def _open(self, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend, s3: S3Config | None,
              provenance: dict[str, str]) -> None:
        fmt, src = self._header(item, spec, s3)
        try:
            grid, count = src.grid, src.channel_count
        finally:
            src.close()
        self.nn = model_from_spec(spec.model)
        flat = [n for n in grid.shape if n < 2]
        if len(self.nn.patch_size) == 3 and flat:  # a 2D configuration takes single slices
            raise InputDataError(f"{item.path}: a {3 - len(flat)}D image (shape {grid.shape}) given to the 3D "
                                 f"nnU-Net configuration {self.nn.configuration!r}")
        if count != len(self.nn.channels):
            raise InputDataError(f"{item.path}: the nnU-Net model takes {len(self.nn.channels)} channel(s) "
                                 f"({', '.join(self.nn.channels)} in dataset.json) but the volume has {count}")
        self.spec = spec
        self.amap = reader_axes(self.nn, grid.affine, grid.shape)
        self.smap = None
        self.job = item_job(item, spec, fmt, Preprocessing(tuple(range(1, count + 1))),
                            channel_axis=spec.inputs.channel_axis, staged=fmt.staged, dicomweb=self.options.dicomweb,
                            nnunet=self.nn)
        self.small = False
        self.keep_logits = True
        self._outputs(spec, legend, self.nn.num_classes, Path(self.nn.folder).name, provenance)
        self.logits_file: Path | None = None

    def planned(self, job: ItemJob) -> None:
        """Plan the windows on the preprocessed case ``job.case`` (nnU-Net's tiles) and make the
        scratch file of its blended logits (``heads x preprocessed shape``, float16, sparse)."""
        assert job.case is not None
        t = self.spec.tiling
        shape = job.case.preprocessed_shape
        self.job = job
        self.plan = plan_tiles(shape, t.roi_size, t.overlap, t.block_shape, grid="nnunet")
        self.small = any(n < r for n, r in zip(shape, t.roi_size, strict=True))
        self.logits_file = self.scratch_dir / "logits.f16"
        with open(self.logits_file, "wb") as f:
            f.truncate(self.nn.heads * math.prod(shape) * 2)

    def _logits(self) -> np.memmap:
        assert self.logits_file is not None and self.job.case is not None
        return np.memmap(self.logits_file, dtype=np.float16, mode="r+",
                         shape=(self.nn.heads, *self.job.case.preprocessed_shape))

    def write(self, block: LabelBlock) -> None:
        """Keep a finished block's blended logits (its labels are the export's to make)."""
        if block.logits is None:
            raise ValueError(f"{self.item.path}: a block of an nnU-Net item came back without its logits")
        self._logits()[(slice(None), *block.window.slices())] = block.logits.astype(np.float16)

    def _export(self) -> None:
        """Labels onto the input's grid, slab by slab (:func:`export_slabs`)."""
        assert self.job.case is not None
        axis = disk_axis_of_rows(self.nn)
        shape = self.amap.model_shape  # the volume as nnU-Net's reader presents it
        for start, labels in export_slabs(self._logits(), self.job.case, self.nn):
            part = to_disk_order(labels, self.nn)
            begin = [0, 0, 0]
            begin[axis] = start
            window = Window(tuple(begin), part.shape)
            assert all(b + s <= n for b, s, n in zip(begin, part.shape, shape, strict=True))
            self._write_oriented(window, part.astype(self.label_dtype, copy=False))

    def commit(self, meta: dict[str, Any]) -> tuple[Any, list[Path]]:
        self._export()
        # the job's data_path is the preprocessed case, not a copy of the input the report may read
        self.job = replace(self.job, data_path=None)
        meta = {**meta, "nnunet": {"folder": self.nn.folder, "configuration": self.nn.configuration,
                                   "folds": list(self.nn.folds), "mirroring": self.nn.mirroring,
                                   "preprocessed_shape": list(self.job.case.preprocessed_shape) if self.job.case
                                   else None}}
        return super().commit(meta)


__all__ = ["NnunetItem"]
