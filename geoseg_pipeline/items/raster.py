"""A 2D raster item: a COG label map (and logits when asked), per-class areas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..formats import detect, outputs_for
from ..preprocess import Preprocessing
from ..report import write_item_stats
from ..sinks import ClassLegend, SinkTarget, make_sinks
from ..sources import RasterSource, SourceOptions, open_source
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..statistics import ClassTally, ItemStats, pixel_areas
from ..storage import S3Config
from ..tasks import ModelInfo
from ..tiling import plan_tiles
from .base import OpenItem, band_selection, item_job


class RasterItem(OpenItem):
    """A 2D raster: COG label map, per-class areas."""

    def __init__(self, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend,
                 s3: S3Config | None = None) -> None:
        super().__init__()
        fmt = detect(item.path, "raster", spec.inputs.format)
        src = open_source(fmt, item.path, SourceOptions(s3=s3))
        assert isinstance(src, RasterSource)
        try:
            grid, count, file_nodata = src.grid, src.band_count, src.nodata
        finally:
            src.close()
        prep = band_selection(item, spec, count, info, "raster", "band(s)")
        nodata = spec.inputs.nodata if spec.inputs.nodata is not None else file_nodata
        prep = Preprocessing(prep.bands, prep.mean, prep.std, nodata)
        self.item, self.grid = item, grid
        self.plan = plan_tiles(grid.shape, spec.tiling.roi_size, spec.tiling.overlap, spec.tiling.block_shape)
        self.job = item_job(item, spec, fmt, prep)
        self.small = any(n < r for n, r in zip(grid.shape, spec.tiling.roi_size, strict=True))
        self.nodata_label = 255 if info.num_classes <= 255 else 65535
        self.label_dtype = "uint8" if self.nodata_label <= 255 else "uint16"
        target = SinkTarget(grid, legend, self.nodata_label, info.num_classes, spec.output, spec.tiling.block_shape)
        self.sinks.extend(make_sinks(outputs_for("raster", spec.output.formats), spec.output.directory / item.name,
                                     target))
        self.keep_logits = any(sink.needs_logits for sink in self.sinks)
        self.tally = ClassTally(info.num_classes, pixel_areas(grid), legend.names, item.name)
        self.statistics.append(self.tally)

    def _report(self, outputs: list[Path], meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        stats = self.tally.finish()
        meta = {"crs": self.grid.crs, "transform": list(self.grid.transform)[:6], "shape": list(self.grid.shape),
                **meta}
        return stats, write_item_stats(outputs[0].parent, self.item.path, stats, meta)


__all__ = ["RasterItem"]
