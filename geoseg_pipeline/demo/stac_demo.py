"""``geoseg demo stac``: a small static STAC catalog of Sentinel-2-like items, segmented as it is.

Each item's bands are separate GeoTIFFs, as Sentinel-2 L2A delivers them: B02, B03, B04 at
10 m, B8A (narrow NIR) at 20 m, and a 20 m scene classification (SCL) with clouds, their
shadows and a no-data edge. Clouds are bright in every band, so a run without the mask would
label them; the workflow masks them (SCL 0, 1, 3, 8, 9, 10). A third, cloudier item lies
outside the workflow's cloud-cover filter. The catalog links a collection that links the
items, all with relative hrefs, like a catalog written by pystac or stactools.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml

from ..runtime import JobResult, run_job
from ..spec import load_workflow

log = logging.getLogger("geoseg")

#: (item id, scene height, width, seed, datetime, cloud seed, cloud fraction wanted)
STAC_SCENES = (("S2_33UUP_20240601", 512, 640, 2001, "2024-06-01T10:10:31Z", 11, 0.08),
               ("S2_33UUP_20240616", 512, 640, 2002, "2024-06-16T10:10:29Z", 12, 0.15),
               ("S2_33UUP_20240621", 512, 640, 2003, "2024-06-21T10:10:31Z", 13, 0.7))
#: SCL classes that are not land: no data, saturated, cloud shadow, cloud medium/high, cirrus
SCL_INVALID = (0, 1, 3, 8, 9, 10)
#: SCL values the demo writes for its classes (water, vegetation, bare soil, built-up)
_SCL_OF_CLASS = np.array([6, 4, 5, 5], np.uint8)
_BANDS_10M = (("B02", 0), ("B03", 1), ("B04", 2))
_PROFILE = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
            "predictor": 2}


def stac_workflow() -> dict[str, Any]:
    """The demo workflow (``workflows/landcover-stac-demo.yaml``), relative to the demo folder."""
    from .scenes import LANDCOVER_CLASS_COLOURS, LANDCOVER_CLASS_NAMES

    return {
        "version": 1,
        "name": "landcover-stac-demo",
        "inputs": {"stac": {"catalog": "data-stac/catalog.json", "assets": ["B02", "B03", "B04", "B8A"],
                            "datetime": "2024-06-01/2024-06-30", "max_cloud_cover": 50},
                   "mask": {"asset": "SCL", "invalid": list(SCL_INVALID)}},
        "model": {"type": "builtin", "name": "landcover-demo", "in_channels": 4, "num_classes": 4},
        "tiling": {"roi_size": [256, 256], "overlap": 0.25, "blend": "gaussian", "batch_size": 8},
        "output": {"directory": "stac"},
        "classes": [
            {"name": n, "colour": c} for n, c in zip(LANDCOVER_CLASS_NAMES, LANDCOVER_CLASS_COLOURS, strict=True)
        ],
    }


def _clouds(shape: tuple[int, int], seed: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Cloud and shadow masks: round blobs until ``fraction`` of the pixels is cloud; each cloud's
    shadow lies south-east of it."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    cloud = np.zeros(shape, bool)
    while cloud.mean() < fraction:
        r, c, radius = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(8, max(9, shape[0] // 5))
        cloud |= (rows - r) ** 2 + (cols - c) ** 2 < radius**2
    shadow = np.zeros(shape, bool)
    shadow[6:, 9:] = cloud[:-6, :-9]
    return cloud, shadow & ~cloud


def write_item(folder: Path, item_id: str, height: int, width: int, seed: int, when: str, cloud_seed: int,
               fraction: float) -> Path:
    """One Sentinel-2-like item: its band files and ``<id>.json`` in ``folder/<id>/``."""
    from .scenes import write_landcover_scene

    where = folder / item_id
    where.mkdir(parents=True, exist_ok=True)
    scene, reference = where / "scene.tmp.tif", where.parent / f"{item_id}_reference.tif"
    write_landcover_scene(scene, height, width, seed, labels_path=reference)
    with rasterio.open(scene) as ds:
        bands, profile = ds.read(), ds.profile
    scene.unlink()
    with rasterio.open(reference) as ds:
        labels = ds.read(1)
    cloud, shadow = _clouds((height // 2, width // 2), cloud_seed, fraction)
    cloud10 = np.repeat(np.repeat(cloud, 2, 0), 2, 1)
    nodata = (bands == 0).all(axis=0)
    bands[:, cloud10 & ~nodata] = np.uint16(7000)  # bright in every band
    transform = profile["transform"]
    common = {**_PROFILE, "crs": profile["crs"], "nodata": 0}
    for key, b in _BANDS_10M:
        with rasterio.open(where / f"{key}.tif", "w", **common, width=width, height=height, count=1,
                           dtype="uint16", transform=transform) as ds:
            ds.write(bands[b], 1)
    t20 = transform * transform.scale(2)
    nir = bands[3].reshape(height // 2, 2, width // 2, 2).astype(np.float64)
    valid = (nir > 0).sum(axis=(1, 3))
    b8a = np.where(valid > 0, nir.sum(axis=(1, 3)) / np.maximum(valid, 1), 0).round().astype(np.uint16)
    with rasterio.open(where / "B8A.tif", "w", **common, width=width // 2, height=height // 2, count=1,
                       dtype="uint16", transform=t20) as ds:
        ds.write(b8a, 1)
    # scene classification at 20 m: the class at each 2 x 2 block's top-left pixel
    scl = _SCL_OF_CLASS[np.minimum(labels[::2, ::2], 3)]
    scl[labels[::2, ::2] == 255] = 0
    scl[shadow] = 3
    scl[cloud] = 9
    with rasterio.open(where / "SCL.tif", "w", **{**common, "nodata": None}, width=width // 2, height=height // 2,
                       count=1, dtype="uint8", transform=t20) as ds:
        ds.write(scl, 1)
    cover = round(100.0 * float(np.isin(scl, (8, 9, 10)).mean()), 2)
    return _item_json(where, item_id, when, cover, profile["crs"], transform, (height, width))


def _item_json(where: Path, item_id: str, when: str, cover: float, crs: Any, transform: Any,
               shape: tuple[int, int]) -> Path:
    from rasterio.warp import transform_bounds

    h, w = shape
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * w, top + transform.e * h
    west, south, east, north = transform_bounds(crs, "EPSG:4326", left, bottom, right, top)
    band = {"data_type": "uint16", "nodata": 0, "scale": 0.0001, "offset": 0.0}
    assets: dict[str, Any] = {}
    for key, gsd in (("B02", 10), ("B03", 10), ("B04", 10), ("B8A", 20), ("SCL", 20)):
        assets[key] = {"href": f"./{key}.tif", "type": "image/tiff; application=geotiff", "gsd": gsd,
                       "roles": ["data"] if key != "SCL" else ["data", "cloud"],
                       "raster:bands": [band if key != "SCL" else {"data_type": "uint8"}]}
    doc = {
        "type": "Feature", "stac_version": "1.1.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v2.0.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                          [west, south]]]},
        "bbox": [west, south, east, north],
        "properties": {"datetime": when, "platform": "sentinel-2a", "eo:cloud_cover": cover},
        "links": [{"rel": "self", "href": f"./{item_id}.json"}, {"rel": "root", "href": "../catalog.json"},
                  {"rel": "parent", "href": "../collection.json"}, {"rel": "collection", "href": "../collection.json"}],
        "assets": assets, "collection": "sentinel-2-demo",
    }
    path = where / f"{item_id}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def write_catalog(folder: Path) -> Path:
    """The demo catalog in ``folder`` (``catalog.json`` -> ``collection.json`` -> items), once."""
    catalog = folder / "catalog.json"
    if catalog.exists():
        return catalog
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for item_id, h, w, seed, when, cloud_seed, fraction in STAC_SCENES:
        log.info("generating demo STAC item %s (%d x %d, bands in separate files)", item_id, h, w)
        items.append(write_item(folder, item_id, h, w, seed, when, cloud_seed, fraction))
    collection = {
        "type": "Collection", "stac_version": "1.1.0", "id": "sentinel-2-demo",
        "description": "Sentinel-2-like demo scenes generated by geoseg", "license": "other",
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["2024-06-01T00:00:00Z", "2024-06-30T23:59:59Z"]]}},
        "links": [{"rel": "root", "href": "./catalog.json"}, {"rel": "parent", "href": "./catalog.json"},
                  *({"rel": "item", "href": f"./{p.parent.name}/{p.name}"} for p in items)],
    }
    (folder / "collection.json").write_text(json.dumps(collection, indent=2) + "\n", encoding="utf-8")
    root = {"type": "Catalog", "stac_version": "1.1.0", "id": "demo", "description": "geoseg demo catalog",
            "links": [{"rel": "root", "href": "./catalog.json"}, {"rel": "child", "href": "./collection.json"}]}
    tmp = catalog.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(root, indent=2) + "\n", encoding="utf-8")
    tmp.replace(catalog)  # last: a catalog that exists is complete
    return catalog


def run_stac_demo(out_dir: Path, address: str | None = None, progress: bool | None = None) -> JobResult:
    """Generate the demo catalog under ``out_dir/data-stac`` (once), write its workflow and run it
    into ``out_dir/stac``."""
    write_catalog(out_dir / "data-stac")
    workflow = out_dir / "landcover-stac-demo.yaml"
    workflow.write_text(yaml.safe_dump(stac_workflow(), sort_keys=False), encoding="utf-8")
    return run_job(load_workflow(workflow), address=address, progress=progress)


__all__ = ["SCL_INVALID", "STAC_SCENES", "run_stac_demo", "stac_workflow", "write_catalog"]
