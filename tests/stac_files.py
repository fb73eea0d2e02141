"""Small STAC items for tests: band files (GeoTIFFs on their own grids) and item, collection and
catalog documents linking them with relative hrefs, as static catalogs are written."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine


@dataclass(frozen=True)
class Band:
    """One asset's file: ``data`` ``(bands, rows, cols)`` on ``transform`` / ``crs``."""

    data: np.ndarray
    transform: Affine
    crs: str = "EPSG:32633"
    nodata: float | None = 0
    declared: Mapping[str, Any] | None = None  # the asset's raster:bands entry


def write_band(path: Path, band: Band) -> Path:
    """A tiled GeoTIFF of ``band``."""
    count, rows, cols = band.data.shape
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=count, dtype=band.data.dtype,
                       crs=band.crs, transform=band.transform, nodata=band.nodata, tiled=True, blockxsize=16,
                       blockysize=16) as ds:
        ds.write(band.data)
    return path


def item_doc(item_id: str, assets: Mapping[str, str], bands: Mapping[str, Band] | None = None,
             properties: Mapping[str, Any] | None = None, bbox: Sequence[float] = (14.9, 46.9, 15.1, 47.1),
             self_href: str | None = None) -> dict[str, Any]:
    """An item document with ``assets`` (key -> href), per-asset ``raster:bands`` from ``bands``."""
    west, south, east, north = bbox
    doc: dict[str, Any] = {
        "type": "Feature", "stac_version": "1.1.0", "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                          [west, north], [west, south]]]},
        "bbox": list(bbox),
        "properties": {"datetime": "2024-06-01T10:00:00Z", **(properties or {})},
        "links": [{"rel": "self", "href": self_href}] if self_href else [],
        "assets": {},
    }
    for key, href in assets.items():
        asset: dict[str, Any] = {"href": href, "type": "image/tiff; application=geotiff"}
        band = (bands or {}).get(key)
        if band is not None and band.declared is not None:
            asset["raster:bands"] = [dict(band.declared)]
        doc["assets"][key] = asset
    return doc


def write_item(folder: Path, item_id: str, bands: Mapping[str, Band], properties: Mapping[str, Any] | None = None,
               bbox: Sequence[float] = (14.9, 46.9, 15.1, 47.1)) -> Path:
    """``folder/<id>/<id>.json`` with one GeoTIFF per asset beside it (relative hrefs)."""
    where = folder / item_id
    where.mkdir(parents=True, exist_ok=True)
    for key, band in bands.items():
        write_band(where / f"{key}.tif", band)
    doc = item_doc(item_id, {k: f"./{k}.tif" for k in bands}, bands, properties, bbox)
    path = where / f"{item_id}.json"
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def write_catalog(folder: Path, items: Sequence[Path], collection: bool = True,
                  extra_links: Sequence[str] = ()) -> Path:
    """``folder/catalog.json`` linking a collection (``collection.json``) that links the items
    (or the catalog linking the items itself), all with relative hrefs."""
    def rel(p: Path, base: Path) -> str:
        return "./" + str(p.relative_to(base))

    folder.mkdir(parents=True, exist_ok=True)
    links = [{"rel": "item", "href": rel(p, folder), "type": "application/geo+json"} for p in items]
    links += [{"rel": "item", "href": h} for h in extra_links]
    if collection:
        coll = {"type": "Collection", "stac_version": "1.1.0", "id": "scenes", "description": "test scenes",
                "license": "other", "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                               "temporal": {"interval": [[None, None]]}},
                "links": links}
        (folder / "collection.json").write_text(json.dumps(coll), encoding="utf-8")
        links = [{"rel": "child", "href": "./collection.json"}]
    catalog = {"type": "Catalog", "stac_version": "1.1.0", "id": "root", "description": "test catalog",
               "links": links}
    path = folder / "catalog.json"
    path.write_text(json.dumps(catalog), encoding="utf-8")
    return path


def ramp(shape: tuple[int, ...], dtype: Any = np.uint16, start: int = 1, seed: int = 0) -> np.ndarray:
    """Smooth-ish values with noise, never 0 (the nodata value)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape[-2:])
    base = start + 7 * rows + 3 * cols
    out = np.broadcast_to(base, shape) + rng.integers(0, 50, shape)
    return np.asarray(out).astype(dtype)


__all__ = ["Band", "item_doc", "ramp", "write_band", "write_catalog", "write_item"]
