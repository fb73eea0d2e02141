"""STAC metadata for the outputs: ``OUT/<item>/item.json`` per label map and ``OUT/collection.json``
per job, a self-contained static catalog (relative links, no ``self`` links, so that the output
folder can be moved or uploaded as it is).

Versions: STAC 1.1.0 with the extensions in :data:`EXTENSIONS` (projection 2.0.0, raster 2.0.0,
classification 2.0.0, file 2.1.0, processing 1.2.0), the ones written for STAC 1.1 (``bands``
with ``nodata`` and ``data_type`` as common metadata; the raster extension adds
``raster:sampling`` and ``raster:spatial_resolution`` to them).

The footprint is the label map's data (pixels other than the nodata label) read from an overview
at most :data:`FOOTPRINT_PX` pixels a side, so it is exact to one pixel of that overview (a patch
of data smaller than that may be left out; a map whose overview shows no data at all is checked
at full resolution, so that a little data never makes a null geometry).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import shapes
from rasterio.warp import transform_geom

from ..errors import GeosegError
from ..sinks.legend import ClassLegend
from ..storage import atomic_write_text
from ..version import __version__

STAC_VERSION = "1.1.0"
#: The extension schemas the documents name in ``stac_extensions``.
EXTENSIONS = {
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
}
ITEM_NAME = "item.json"
COLLECTION_NAME = "collection.json"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
FOOTPRINT_PX = 1024
#: A footprint with more vertices is traced again from a coarser read (a speckled nodata mask).
MAX_VERTICES = 20_000
#: Each ring edge is cut into pieces no longer than 1/DENSIFY of the map's larger side before
#: reprojection, so that edges that are straight in the map's CRS stay true in EPSG:4326.
DENSIFY = 64
WORLD = (-180.0, -90.0, 180.0, 90.0)
#: The item's other files that become assets when present: key, file, media type, title.
SIDE_ASSETS = (
    ("stats", "stats.json", "application/json", "Class statistics"),
    ("stats_csv", "stats.csv", "text/csv", "Class statistics (CSV)"),
    ("zones", "zones.csv", "text/csv", "Zone statistics (CSV)"),
    ("report", "report.html", "text/html", "Report"),
)
_NAME_FORBIDDEN = re.compile(r"[^0-9A-Za-z_-]+")


class StacError(GeosegError, ValueError):
    """Metadata that cannot be written as STAC: a bad :class:`StacInfo` or an unreadable item.json."""


@dataclass(frozen=True)
class StacInfo:
    """What the label map itself does not say.

    Args:
        collection_id: the job's collection id (``OUT/collection.json``).
        model_hash: SHA-256 hex of the model (:func:`geoseg_pipeline.ledger.model_hash`).
        model_name: the model's name for people, when it has one.
        source_href: the source item's href (a STAC item, or the input file), written as given
            in a ``derived_from`` link.
        source_datetime: the source's acquisition time; or ``source_start`` and ``source_end``
            when it covers a range (both, or neither). Time-zone aware.
        processed: when the map was made (``processing:datetime``, ``created``, and the item's
            ``datetime`` when the source has no time). Time-zone aware; default now.
    """

    collection_id: str
    model_hash: str
    model_name: str | None = None
    source_href: str | None = None
    source_datetime: datetime | None = None
    source_start: datetime | None = None
    source_end: datetime | None = None
    processed: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        if not self.collection_id:
            raise StacError("collection_id must not be empty")
        for name in ("source_datetime", "source_start", "source_end", "processed"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise StacError(f"{name} must be time-zone aware (e.g. UTC), got {value.isoformat()}")
        if (self.source_start is None) != (self.source_end is None):
            raise StacError(f"give both source_start and source_end or neither, got {self.source_start} and "
                            f"{self.source_end}")
        if self.source_start is not None and self.source_end is not None and self.source_start > self.source_end:
            raise StacError(f"source_start {self.source_start.isoformat()} is after source_end "
                            f"{self.source_end.isoformat()}")


def write_item_stac(out_dir: Path, item_id: str, labels_tif: Path, legend: ClassLegend, nodata_label: int,
                    info: StacInfo) -> Path:
    """Write ``out_dir/item.json``: a STAC item for the label map ``labels_tif`` (linked relative
    to ``out_dir``: ``./labels.tif``), with the other files of :data:`SIDE_ASSETS` found in ``out_dir``.

    ``geometry`` and ``bbox`` are the data footprint in EPSG:4326 (``null`` and no ``bbox`` for
    a map that is all nodata or has no CRS). Returns the path written.
    """
    with rasterio.open(labels_tif) as ds:
        crs, transform, shape = ds.crs, ds.transform, (ds.height, ds.width)
        data_type, bounds = ds.dtypes[0], tuple(ds.bounds)
    geometry = footprint(labels_tif, nodata_label)
    properties: dict[str, Any] = {
        **_datetimes(info),
        "created": _rfc3339(info.processed),
        **_projection(crs),
        "proj:shape": list(shape),
        "proj:transform": list(transform)[:6],
        "proj:bbox": list(bounds),
        "processing:software": {"geoseg-pipeline": __version__},
        "processing:datetime": _rfc3339(info.processed),
        "processing:lineage": _lineage(info),
    }
    band: dict[str, Any] = {"name": "class", "nodata": nodata_label, "data_type": data_type, "raster:sampling": "area"}
    if crs is not None and crs.is_projected and crs.linear_units_factor[1] == 1.0:
        band["raster:spatial_resolution"] = (abs(transform.a) + abs(transform.e)) / 2
    href = Path(os.path.relpath(labels_tif, out_dir)).as_posix()
    assets: dict[str, Any] = {"labels": {
        "href": f"./{href}", "type": COG_MEDIA_TYPE, "title": "Label map", "roles": ["data"], "bands": [band],
        "classification:classes": classes(legend, nodata_label), **_file_fields(labels_tif),
    }}
    for key, name, media_type, title in SIDE_ASSETS:
        if (out_dir / name).is_file():
            assets[key] = {"href": f"./{name}", "type": media_type, "title": title, "roles": ["metadata"],
                           **_file_fields(out_dir / name)}
    parent = f"../{COLLECTION_NAME}"
    links = [{"rel": rel, "href": parent, "type": "application/json"} for rel in ("root", "parent", "collection")]
    if info.source_href is not None:
        links.append({"rel": "derived_from", "href": info.source_href, "title": "source"})
    item: dict[str, Any] = {
        "type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": sorted(EXTENSIONS.values()),
        "id": item_id, "geometry": geometry,
    }
    if geometry is not None:
        item["bbox"] = geometry_bbox(geometry)
    item.update(properties=properties, links=links, assets=assets, collection=info.collection_id)
    path = out_dir / ITEM_NAME
    atomic_write_text(path, json.dumps(item, indent=2, ensure_ascii=False) + "\n")
    return path


def write_collection(out_root: Path, collection_id: str, items: Sequence[Path], legend: ClassLegend,
                     description: str, *, nodata_label: int, title: str | None = None,
                     license: str = "other") -> Path:
    """Write ``out_root/collection.json`` listing ``items`` (item.json paths below ``out_root``,
    of this run or of earlier ones) with their union bbox (the whole world when none has one)
    and their time range (open when there is none); ``license`` is an SPDX id or ``other``.

    Raises:
        StacError: an item.json cannot be read or lies outside ``out_root``.
    """
    bboxes: list[list[float]] = []
    times: list[datetime] = []
    links: list[dict[str, Any]] = [{"rel": "root", "href": f"./{COLLECTION_NAME}", "type": "application/json"}]
    for path in items:
        doc = _read_item(path)
        if "bbox" in doc:
            bboxes.append(doc["bbox"])
        times.extend(_item_times(path, doc["properties"]))
        rel = Path(os.path.relpath(path, out_root)).as_posix()
        if rel.startswith("../"):
            raise StacError(f"{path}: an item of the collection must lie below {out_root}")
        links.append({"rel": "item", "href": f"./{rel}", "type": "application/geo+json", "title": doc["id"]})
    interval = [_rfc3339(min(times)), _rfc3339(max(times))] if times else [None, None]
    class_list = classes(legend, nodata_label)
    collection: dict[str, Any] = {
        "type": "Collection", "stac_version": STAC_VERSION,
        "stac_extensions": sorted(EXTENSIONS[k] for k in ("classification", "processing")),
        "id": collection_id, **({"title": title} if title else {}), "description": description,
        "license": license,
        "providers": [{"name": "geoseg-pipeline", "roles": ["processor"],
                       "processing:software": {"geoseg-pipeline": __version__}}],
        "extent": {"spatial": {"bbox": [union_bbox(bboxes)]}, "temporal": {"interval": [interval]}},
        "summaries": {"classification:classes": class_list},
        "item_assets": {"labels": {"type": COG_MEDIA_TYPE, "title": "Label map", "roles": ["data"],
                                   "classification:classes": class_list}},
        "links": links,
    }
    path = out_root / COLLECTION_NAME
    atomic_write_text(path, json.dumps(collection, indent=2, ensure_ascii=False) + "\n")
    return path


def classes(legend: ClassLegend, nodata_label: int) -> list[dict[str, Any]]:
    """``classification:classes``: one entry per class (``name`` made of the characters the
    extension allows, the class name as given in ``title``, ``color_hint`` without ``#``), and
    the nodata label with ``nodata: true``."""
    out: list[dict[str, Any]] = []
    used: set[str] = set()
    for value, (title, colour) in enumerate(zip(legend.names, legend.colours, strict=True)):
        entry = {"value": value, "name": _class_name(title, f"class_{value}", used), "title": title,
                 "color_hint": colour.lstrip("#").lower()}
        if value == nodata_label:
            entry["nodata"] = True
        out.append(entry)
    if nodata_label >= len(legend.names):
        out.append({"value": nodata_label, "name": _class_name("nodata", "nodata", used), "title": "no data",
                    "nodata": True})
    return out


def footprint(labels_tif: Path, nodata_label: int, max_px: int = FOOTPRINT_PX) -> dict[str, Any] | None:
    """The pixels other than ``nodata_label`` as a GeoJSON (Multi)Polygon in EPSG:4326 (cut at
    the antimeridian as rasterio does), traced on a read at most ``max_px`` a side (an overview
    when one has that size); ``None`` when no pixel is valid or the map has no CRS."""
    with rasterio.open(labels_tif) as ds:
        if ds.crs is None:
            return None
        while True:
            rows, cols = read_shape(ds.height, ds.width, ds.overviews(1), max_px)
            valid = ds.read(1, out_shape=(rows, cols), resampling=Resampling.nearest) != nodata_label
            if not valid.any() and (rows, cols) != (ds.height, ds.width):
                valid = _any_valid(ds, nodata_label, rows, cols)
            if not valid.any():
                return None
            transform = ds.transform * Affine.scale(ds.width / cols, ds.height / rows)
            polygons = [geom["coordinates"] for geom, _ in shapes(valid.astype(np.uint8), mask=valid,
                                                                  transform=transform)]
            if sum(len(ring) for p in polygons for ring in p) <= MAX_VERTICES or max_px <= 16:
                break
            max_px //= 2
        step = max(abs(transform.a) * cols, abs(transform.e) * rows) / DENSIFY
        polygons = [[_densify(ring, step) for ring in p] for p in polygons]
        local = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                 else {"type": "MultiPolygon", "coordinates": polygons})
        geometry = transform_geom(ds.crs, CRS.from_epsg(4326), local, precision=9)
    plain: dict[str, Any] = json.loads(json.dumps(dict(geometry)))  # tuples as lists, as read back
    return plain


def _any_valid(ds: Any, nodata_label: int, rows: int, cols: int) -> np.ndarray:
    """The ``rows`` × ``cols`` cells that hold any valid pixel, from the full resolution block by
    block: only for a map whose overview shows none, where small patches of data may hide."""
    cells = np.zeros((rows, cols), bool)
    for _, window in ds.block_windows(1):
        r, c = np.nonzero(ds.read(1, window=window) != nodata_label)
        cells[(r + window.row_off) * rows // ds.height, (c + window.col_off) * cols // ds.width] = True
    return cells


def read_shape(height: int, width: int, factors: Sequence[int], max_px: int) -> tuple[int, int]:
    """The size to read a ``height`` × ``width`` band at so that it fits ``max_px`` a side: the
    full size when it fits, else the first overview (decimation ``factors``) that fits, else the
    full size divided evenly (GDAL then reads from the nearest overview)."""
    if max(height, width) <= max_px:
        return height, width
    for f in factors:
        rows, cols = -(-height // f), -(-width // f)
        if max(rows, cols) <= max_px:
            return rows, cols
    step = -(-max(height, width) // max_px)
    return -(-height // step), -(-width // step)


def geometry_bbox(geometry: dict[str, Any]) -> list[float]:
    """``[west, south, east, north]`` of a GeoJSON (Multi)Polygon in EPSG:4326, the smallest
    that holds it: ``west > east`` when it crosses the antimeridian (parts touching 180° and
    -180° once cut), as GeoJSON specifies."""
    parts = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    spans: list[tuple[float, float]] = []
    lats: list[float] = []
    for polygon in parts:
        lons, part_lats = zip(*polygon[0], strict=True)
        spans.append((min(lons), max(lons)))
        lats.extend(part_lats)
    west, east = _longitudes(spans)
    return [west, min(lats), east, max(lats)]


def union_bbox(bboxes: Sequence[Sequence[float]]) -> list[float]:
    """The smallest bbox that holds all ``bboxes`` (which may cross the antimeridian, ``west >
    east``); :data:`WORLD` when there is none."""
    if not bboxes:
        return list(WORLD)
    spans: list[tuple[float, float]] = []
    for b in bboxes:
        spans.extend([(b[0], 180.0), (-180.0, b[2])] if b[0] > b[2] else [(b[0], b[2])])
    west, east = _longitudes(spans)
    return [west, min(b[1] for b in bboxes), east, max(b[3] for b in bboxes)]


def _longitudes(spans: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """West and east of the shortest arc of longitude that holds every ``(min, max)`` span: the
    circle less its widest gap (across the antimeridian when that gap is inside [-180, 180])."""
    merged: list[list[float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    wrap_gap = merged[0][0] + 360.0 - merged[-1][1]
    inner = max(range(len(merged) - 1), key=lambda i: merged[i + 1][0] - merged[i][1], default=None)
    if inner is not None and merged[inner + 1][0] - merged[inner][1] > wrap_gap:
        return merged[inner + 1][0], merged[inner][1]
    return merged[0][0], merged[-1][1]


def _projection(crs: CRS | None) -> dict[str, Any]:
    if crs is None:
        return {"proj:code": None}
    authority = crs.to_authority()
    if authority is not None:
        return {"proj:code": ":".join(authority)}
    return {"proj:code": None, "proj:wkt2": crs.to_wkt(version="WKT2_2019")}


def _datetimes(info: StacInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if info.source_start is not None and info.source_end is not None:
        out.update(start_datetime=_rfc3339(info.source_start), end_datetime=_rfc3339(info.source_end))
    if info.source_datetime is not None:
        out["datetime"] = _rfc3339(info.source_datetime)
    else:
        out["datetime"] = None if out else _rfc3339(info.processed)
    return out


def _lineage(info: StacInfo) -> str:
    model = f"{info.model_name} (sha256:{info.model_hash})" if info.model_name else f"sha256:{info.model_hash}"
    source = f" of {info.source_href}" if info.source_href else ""
    return f"Semantic segmentation{source} by geoseg-pipeline {__version__} with the model {model}"


def _file_fields(path: Path) -> dict[str, Any]:
    """``file:size`` and ``file:checksum`` (a multihash: 0x12 sha2-256, 0x20 bytes, the digest)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"file:size": path.stat().st_size, "file:checksum": "1220" + digest.hexdigest()}


def _class_name(title: str, fallback: str, used: set[str]) -> str:
    base = _NAME_FORBIDDEN.sub("_", title).strip("_") or fallback
    name, n = base, 2
    while name in used:
        name, n = f"{base}_{n}", n + 1
    used.add(name)
    return name


def _densify(ring: Sequence[Sequence[float]], step: float) -> list[tuple[float, float]]:
    out = [(float(ring[0][0]), float(ring[0][1]))]
    for (x0, y0), (x1, y1) in itertools.pairwise(ring):
        pieces = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step))
        out.extend((x0 + (x1 - x0) * k / pieces, y0 + (y1 - y0) * k / pieces) for k in range(1, pieces + 1))
    return out


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _item_times(path: Path, properties: dict[str, Any]) -> list[datetime]:
    try:
        return [_parse_time(properties[k]) for k in ("datetime", "start_datetime", "end_datetime")
                if properties.get(k) is not None]
    except (TypeError, ValueError) as exc:
        raise StacError(f"{path}: not an RFC 3339 datetime: {exc}") from exc


def _read_item(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StacError(f"{path}: cannot read the STAC item: {exc}; write it again with write_item_stac") from exc
    if (not isinstance(doc, dict) or doc.get("type") != "Feature" or not isinstance(doc.get("id"), str)
            or not isinstance(doc.get("properties"), dict)):
        raise StacError(f"{path}: not a STAC item (a GeoJSON Feature with an id and properties)")
    return doc


__all__ = [
    "COLLECTION_NAME", "EXTENSIONS", "FOOTPRINT_PX", "ITEM_NAME", "MAX_VERTICES", "STAC_VERSION", "StacError",
    "StacInfo", "classes", "footprint", "geometry_bbox", "read_shape", "union_bbox", "write_collection",
    "write_item_stac",
]
