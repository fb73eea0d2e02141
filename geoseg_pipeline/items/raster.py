"""A 2D raster item: a COG label map (and logits when asked), per-class areas."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError
from ..formats import outputs_for
from ..preprocess import Preprocessing, can_hold
from ..report import write_item_stats, write_zones
from ..report.landcover import write_item_report
from ..report.stac import StacInfo, write_item_stac
from ..sinks import ClassLegend, SinkTarget, make_sinks
from ..sinks.vector import VectorSink
from ..sources import RasterSource, SourceOptions, open_source
from ..sources.discovery import Item
from ..spec import WorkflowSpec
from ..spec.output import MappingUnit
from ..spec.stac import parse_interval
from ..statistics import ClassTally, ItemStats, ItemZones, PixelAreas, ZoneTally, pixel_areas
from ..stitching import LabelBlock
from ..stitching.sieve import MappingUnitSieve, unit_in_pixels
from ..storage import S3Config
from ..tasks import ModelInfo, RegionSettings
from ..tiling import plan_tiles
from .base import OpenItem, band_selection, item_format, item_job, named_bands

log = logging.getLogger("geoseg")


class RasterItem(OpenItem):
    """A 2D raster: COG label map, per-class areas."""

    def __init__(self, item: Item, spec: WorkflowSpec, info: ModelInfo, legend: ClassLegend,
                 s3: S3Config | None = None, zones: ItemZones | None = None,
                 provenance: dict[str, str] | None = None) -> None:
        super().__init__()
        self.legend = legend
        self.stac_info = stac_info(item, spec, provenance or {}) if spec.stac_outputs else None
        fmt = item_format(item, spec)
        src = open_source(fmt, item.path, SourceOptions(s3=s3, max_pixels=spec.inputs.max_pixels, stac=item.stac))
        assert isinstance(src, RasterSource)
        try:
            grid, count, file_nodata, dtype = src.grid, src.band_count, src.nodata, np.dtype(src.dtype)
            named = named_bands(src, spec)
        finally:
            src.close()
        prep = band_selection(item, spec, count, info, "raster", "band(s)", named)
        nodata = spec.inputs.nodata if spec.inputs.nodata is not None else file_nodata
        if spec.inputs.nodata is not None and not can_hold(dtype, spec.inputs.nodata):
            log.warning("%s: inputs.nodata %g cannot occur in its %s pixels: no pixel is nodata", item.path,
                        spec.inputs.nodata, dtype)
        prep = Preprocessing(prep.bands, prep.mean, prep.std, nodata)
        self.item, self.grid = item, grid
        self.plan = plan_tiles(grid.shape, spec.tiling.roi_size, spec.tiling.overlap, spec.tiling.block_shape)
        self.job = item_job(item, spec, fmt, prep, stac=item.stac)
        self.small = any(n < r for n, r in zip(grid.shape, spec.tiling.roi_size, strict=True))
        self.nodata_label = 255 if info.num_classes <= 255 else 65535
        self.label_dtype = "uint8" if self.nodata_label <= 255 else "uint16"
        areas = pixel_areas(grid)
        target = SinkTarget(grid, legend, self.nodata_label, info.num_classes, spec.output, spec.tiling.block_shape,
                            row_area_m2=areas.row_area_m2)
        self.sinks.extend(make_sinks(outputs_for("raster", spec.output.formats), spec.output.directory / item.name,
                                     target))
        self.keep_logits = any(sink.needs_logits for sink in self.sinks)
        self.tally = ClassTally(info.num_classes, areas, legend.names, item.name)
        self.statistics.append(self.tally)
        self.zones: ZoneTally | None = None
        if zones is not None:
            try:
                self.zones = ZoneTally(zones.layer, grid, info.num_classes, legend.names, areas.row_area_m2,
                                       self.nodata_label, zones.earlier)
            except InputDataError as exc:
                self.abort()
                raise InputDataError(f"{item.path}: {exc}") from exc
            self.statistics.append(self.zones)
        self.sieve: MappingUnitSieve | None = None
        unit = spec.output.min_mapping_unit
        if unit is not None:
            self.sieve = self._sieve(unit, areas, spec.output.connectivity, spec.output.directory / item.name)
        if self.sieve is None and any(isinstance(sink, VectorSink) for sink in self.sinks):
            # the workers find each block's regions; the polygon sinks only join them (a sieved
            # map's blocks are the sieve's, made here: the sinks find their regions themselves)
            self.regions = RegionSettings(spec.output.connectivity, self.nodata_label, areas.row_area_m2)

    def _sieve(self, unit: MappingUnit, areas: PixelAreas, connectivity: int, out_dir: Path) -> MappingUnitSieve:
        """The item's minimum mapping unit in pixels, and the sieve that applies it."""
        where = self.item.path
        area = float(np.mean(areas.row_area_m2)) if areas.row_area_m2 is not None else None
        try:
            threshold = unit_in_pixels(unit.value, unit.unit, area, where)
        except ValueError as exc:
            self.abort()
            raise InputDataError(str(exc)) from exc
        pixels = self.grid.pixel_count
        if threshold > pixels:
            self.abort()
            raise InputDataError(f"{where}: output.min_mapping_unit is {threshold} pixels, more than the whole image "
                                 f"({self.grid.height} x {self.grid.width} = {pixels} pixels)")
        self.mapping_unit_pixels = threshold
        folder = out_dir / f".scratch-sieve-{uuid.uuid4().hex[:12]}"
        assert self.nodata_label is not None  # a raster always has one
        return MappingUnitSieve(folder, self.grid.shape, self.label_dtype, self.nodata_label, threshold, connectivity)

    def write(self, block: LabelBlock) -> None:
        """Hand one finished block to every sink and statistic; with a minimum mapping unit, keep
        it for the sieve (only a logits output takes it now: logits are not sieved)."""
        if self.sieve is None:
            super().write(block)
            return
        for sink in self.sinks:
            if sink.needs_logits:
                sink.add(block)
        self.sieve.add(block.window, block.labels)

    def commit(self, meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        """With a minimum mapping unit, sieve the map and hand its blocks out first."""
        if self.sieve is not None:
            try:
                windows = [self.plan.block_window(i) for i in self.plan.blocks()]
                for block in self.sieve.sieved(windows):
                    for consumer in self.consumers:
                        if not getattr(consumer, "needs_logits", False):
                            consumer.add(block)
                meta = {**meta, "min_mapping_unit_pixels": self.mapping_unit_pixels,
                        "pixels_sieved": self.sieve.changed}
            finally:
                self.sieve.close()
        return super().commit(meta)

    def abort(self) -> None:
        """Drop everything written so far."""
        super().abort()
        sieve = getattr(self, "sieve", None)  # None too when the constructor failed before it
        if sieve is not None:
            sieve.close()

    def _report(self, outputs: list[Path], meta: dict[str, Any]) -> tuple[ItemStats, list[Path]]:
        stats = self.tally.finish()
        if self.zones is not None:
            stats = dataclasses.replace(stats, zones=self.zones.finish())
        meta = {"crs": self.grid.crs, "transform": list(self.grid.transform)[:6], "shape": list(self.grid.shape),
                **meta}
        out_dir = outputs[0].parent
        written = write_item_stats(out_dir, self.item.path, stats, meta)
        if self.zones is not None:
            written.append(write_zones(out_dir, stats))
        cog = out_dir / "labels.tif" if any(p.name == "labels.tif" for p in outputs) else None
        written.append(write_item_report(out_dir, stats, cog, meta))
        if self.stac_info is not None and cog is not None:  # last: it lists the files beside the map
            assert self.nodata_label is not None
            written.append(write_item_stac(out_dir, self.item.name, cog, self.legend, self.nodata_label,
                                           self.stac_info))
        return stats, written


def stac_info(item: Item, spec: WorkflowSpec, provenance: dict[str, str]) -> StacInfo:
    """What an item's STAC metadata says beyond its label map: the job's collection, the model,
    the source (a STAC item: its document and acquisition time; a file: its path)."""
    ref = item.stac

    def when(text: str | None) -> datetime | None:
        return None if text is None else parse_interval(text)[0]

    source = ref.self_href if ref is not None else item.path
    start, end = (when(ref.start_datetime), when(ref.end_datetime)) if ref is not None else (None, None)
    if start is None or end is None:
        start = end = None
    return StacInfo(collection_id=spec.name, model_hash=provenance.get("model_hash", ""),
                    model_name=spec.model.name or (str(spec.model.path) if spec.model.path else spec.model.type),
                    source_href=source, source_datetime=when(ref.datetime) if ref is not None else None,
                    source_start=start, source_end=end)


__all__ = ["RasterItem", "stac_info"]
