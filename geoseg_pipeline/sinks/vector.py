"""Polygon outputs of raster items: one feature per connected region of a class, produced while the
map is stitched (:class:`~geoseg_pipeline.sinks.regions.RegionTracker`), equal to polygonizing the
whole map with GDAL at once.

* ``labels.parquet`` (:class:`GeoParquetSink`): GeoParquet 1.1, WKB geometries with a ``bbox``
  covering column, counter-clockwise exteriors, the CRS as PROJJSON; row groups written as regions
  complete.
* ``labels.gpkg`` (:class:`GpkgSink`): an OGC GeoPackage layer ``labels`` written through OGR
  (pyogrio), with a spatial index.

Fields: ``class_index``, ``class_name``, ``pixels``, ``area_m2``, ``area_ha`` (the ground area of
the region's pixels, as the item's statistics compute it: planar, or geodesic per row for
geographic CRSs; empty when the item has none). Geometries are in the raster's CRS; with
``output.connectivity: 8`` they are multipolygons (regions whose pixels meet at a corner only
would otherwise be invalid rings). ``output.simplify`` (CRS units) simplifies each polygon on its
own (topology-preserving within the polygon; the neighbours' shared edges are simplified
independently).

Needs the ``vector`` extra (shapely, pyarrow, pyogrio).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from affine import Affine

from ..errors import SinkError
from ..geometry import Grid, Window
from ..stitching import LabelBlock
from ..tasks import BlockRegions
from .base import SinkTarget, StagedSink
from .legend import ClassLegend
from .regions import Connectivity, Region, RegionTracker

#: Regions written per batch (one Parquet row group, one OGR transaction).
BATCH = 8192
INSTALL_HINT = "polygon outputs need the vector extra: pip install 'geoseg-pipeline[vector]'"


def vector_modules(*names: str) -> None:
    """Raise :class:`SinkError` with the install hint when a module of the vector extra that a
    sink needs is missing (each is imported only by the sink that uses it: pyogrio carries a
    GDAL of its own, some 80 MiB)."""
    import importlib

    try:
        for name in names:
            importlib.import_module(name)
    except ImportError as exc:
        raise SinkError(f"{INSTALL_HINT} ({exc})") from exc


class VectorSink(StagedSink):
    """Regions of one item's label map as polygon features (subclasses write the file).

    Args:
        out_dir: ``OUT/<item>``.
        grid: the item's grid (CRS and transform of the features).
        legend: class names (``class_name``).
        nodata_label: pixels with this label are no region.
        row_area_m2: ground area of a pixel of each row (``None``: no areas).
        connectivity: 4 or 8.
        simplify: tolerance in CRS units (0: none).
    """

    file_name: ClassVar[str] = ""
    #: the modules of the vector extra the sink writes with
    modules: ClassVar[tuple[str, ...]] = ("shapely",)

    def __init__(self, out_dir: Path, grid: Grid, legend: ClassLegend, nodata_label: int | None, *,
                 row_area_m2: np.ndarray | None = None, connectivity: Connectivity = 4,
                 simplify: float = 0.0) -> None:
        vector_modules(*self.modules)
        super().__init__(out_dir)
        self.grid, self.legend, self.simplify = grid, legend, simplify
        self.multipolygons = connectivity == 8
        self.tracker = RegionTracker(grid.shape, connectivity=connectivity, ignore=nodata_label,
                                     row_area_m2=row_area_m2)
        self.features = 0
        self._batch: list[Region] = []
        self._path = self.staging / self.file_name

    @classmethod
    def for_item(cls, out_dir: Path, target: SinkTarget) -> VectorSink:
        """The registry's way in (:data:`geoseg_pipeline.formats.OUTPUTS`)."""
        assert isinstance(target.grid, Grid)
        out = target.output
        return cls(out_dir, target.grid, target.legend, target.nodata_label, row_area_m2=target.row_area_m2,
                   connectivity=out.connectivity, simplify=out.simplify)

    def add(self, block: LabelBlock) -> None:
        """The block-consumer side: write ``block``, joining the regions a worker found in it
        (``block.regions``) rather than finding them again."""
        self._check_open()
        self._track(block.window, block.labels, block.regions)

    def _write(self, window: Window, labels: np.ndarray, logits: np.ndarray | None) -> None:
        self._track(window, labels, None)

    def _track(self, window: Window, labels: np.ndarray, regions: BlockRegions | None) -> None:
        try:
            found = self.tracker.add(window, labels, regions=regions)
        except ValueError as exc:
            raise SinkError(f"{self.out_dir}: {exc}") from exc
        self._take(found)

    def _take(self, regions: list[Region]) -> None:
        self._batch.extend(regions)
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        import shapely

        if not self._batch:
            return
        regions, self._batch = self._batch, []
        geoms = shapely.transform(np.array([r.geometry for r in regions], dtype=object), _to_crs(self.grid.transform))
        if self.simplify > 0:
            geoms = shapely.simplify(geoms, self.simplify, preserve_topology=True)
        # counter-clockwise exteriors whatever the sign of the transform (GeoParquet, OGC SFA)
        geoms = shapely.orient_polygons(geoms, exterior_cw=False)
        if self.multipolygons:
            geoms = np.array([shapely.multipolygons(shapely.get_parts(g)) for g in geoms], dtype=object)
        self._append(geoms, self._fields(regions))
        self.features += len(regions)

    def _fields(self, regions: list[Region]) -> dict[str, np.ndarray]:
        """The features' fields (NaN areas: none)."""
        area = np.array([np.nan if r.area_m2 is None else r.area_m2 for r in regions], np.float64)
        return {
            "class_index": np.array([r.class_index for r in regions], np.int32),
            "class_name": np.array([self._name(r.class_index) for r in regions], dtype=object),
            "pixels": np.array([r.pixels for r in regions], np.int64),
            "area_m2": area,
            "area_ha": area / 10_000.0,
        }

    def _name(self, index: int) -> str:
        names = self.legend.names
        return names[index] if index < len(names) else f"class_{index}"

    @property
    def geometry_type(self) -> str:
        """The layer's one geometry type."""
        return "MultiPolygon" if self.multipolygons else "Polygon"

    def _prepare(self) -> list[tuple[Path, Path]]:
        self._take(self.tracker.finish())
        self._flush()
        self._close_file()
        return [(self._path, self.out_dir / self.file_name)]

    @abstractmethod
    def _append(self, geoms: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        """Write one batch of features (CRS geometries and their fields) to the staged file."""

    def _close_file(self) -> None:  # writers that hold a handle close it here
        """Finish the staged file."""


class GeoParquetSink(VectorSink):
    """``labels.parquet``: GeoParquet 1.1 (see the module doc)."""

    name = "geoparquet"
    file_name = "labels.parquet"
    modules = ("shapely", "pyarrow")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import pyarrow as pa
        import pyarrow.parquet as pq

        box = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
        self._schema = pa.schema([
            ("class_index", pa.int32()), ("class_name", pa.string()), ("pixels", pa.int64()),
            ("area_m2", pa.float64()), ("area_ha", pa.float64()), ("geometry", pa.binary()), ("bbox", box),
        ])
        self._bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])
        self._writer: Any = pq.ParquetWriter(self._path, self._schema, compression="zstd")

    def _append(self, geoms: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        import pyarrow as pa
        import shapely

        bounds = shapely.bounds(geoms)
        self._bounds = np.concatenate([np.minimum(self._bounds[:2], bounds[:, :2].min(axis=0)),
                                       np.maximum(self._bounds[2:], bounds[:, 2:].max(axis=0))])
        area = fields["area_m2"]
        columns = {
            **{k: v for k, v in fields.items() if not k.startswith("area")},
            "area_m2": pa.array(area, mask=np.isnan(area)),
            "area_ha": pa.array(fields["area_ha"], mask=np.isnan(area)),
            "geometry": pa.array(shapely.to_wkb(geoms, output_dimension=2), pa.binary()),
            "bbox": pa.StructArray.from_arrays([pa.array(bounds[:, i]) for i in range(4)],
                                               names=["xmin", "ymin", "xmax", "ymax"]),
        }
        self._writer.write_table(pa.table(columns, schema=self._schema))

    def _close_file(self) -> None:
        self._writer.add_key_value_metadata({"geo": json.dumps(self.geo_metadata())})
        self._writer.close()

    def geo_metadata(self) -> dict[str, Any]:
        """The file's ``geo`` metadata (GeoParquet 1.1)."""
        column: dict[str, Any] = {
            "encoding": "WKB",
            "geometry_types": [self.geometry_type],
            "crs": _projjson(self.grid.crs),
            "orientation": "counterclockwise",
            "edges": "planar",
            "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
        }
        if self.features:
            column["bbox"] = [float(v) for v in self._bounds]
        return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}

    def _close(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None and writer.is_open:
            writer.close()


class GpkgSink(VectorSink):
    """``labels.gpkg``: a GeoPackage layer ``labels`` (see the module doc)."""

    name = "gpkg"
    file_name = "labels.gpkg"
    modules = ("shapely", "pyogrio")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started = False

    def _append(self, geoms: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        import shapely
        from pyogrio.raw import write

        data = list(fields.values())  # NaN areas are written as nulls
        write(self._path, shapely.to_wkb(geoms, output_dimension=2), data, list(fields), driver="GPKG",
              layer="labels", geometry_type=self.geometry_type, crs=self.grid.crs, append=self._started)
        self._started = True

    def _close_file(self) -> None:
        if not self._started:  # no region at all: an empty layer, still with its fields
            self._append(np.array([], dtype=object), self._fields([]))


def _to_crs(t: Affine) -> Any:
    """Pixel space (column, row) to the CRS, on an ``(n, 2)`` coordinate array."""

    def apply(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f])

    return apply


def _projjson(crs: str | None) -> dict[str, Any] | None:
    if crs is None:
        return None  # GeoParquet: null is an unknown CRS (an absent key would mean OGC:CRS84)
    from pyproj import CRS

    doc: dict[str, Any] = CRS.from_user_input(crs).to_json_dict()
    return doc


__all__ = ["GeoParquetSink", "GpkgSink", "VectorSink", "vector_modules"]
