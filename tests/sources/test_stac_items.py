"""STAC documents to input items: every kind of document (catalog and collection followed
through links, item collection, single item, STAC-GeoParquet, local and s3://), hrefs resolved
relative to their document, the workflow's filters, asset references, and the problems a user
meets (a missing asset, a broken link, a filter that keeps nothing, a bad spec)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from stac_files import Band, item_doc, ramp, write_catalog, write_item

from geoseg_pipeline.errors import JobError, SpecError
from geoseg_pipeline.ledger import stac_fingerprint
from geoseg_pipeline.sources.discovery import discover
from geoseg_pipeline.sources.stac_items import absolute_href, rejects, stac_items
from geoseg_pipeline.spec import InputSpec, parse_workflow
from geoseg_pipeline.spec.stac import MaskSpec, StacSpec, parse_interval, split_asset
from geoseg_pipeline.storage import S3Config

T10 = Affine(10, 0, 500000, 0, -10, 5200000)
BUCKET = "stac-archive"


def _bands() -> dict[str, Band]:
    return {"B02": Band(ramp((1, 20, 30)), T10, declared={"nodata": 0, "scale": 0.0001, "offset": -0.1}),
            "visual": Band(ramp((3, 20, 30), np.uint8, seed=3), T10),
            "SCL": Band(np.full((1, 10, 15), 4, np.uint8), Affine(20, 0, 500000, 0, -20, 5200000), nodata=None)}


def _spec(catalog: str | list[str], **kw: Any) -> StacSpec:
    return StacSpec(catalog=catalog, assets=kw.pop("assets", ("B02", "visual:3")), **kw)


def test_asset_refs_and_intervals() -> None:
    assert split_asset("B04") == ("B04", 1)
    assert split_asset("visual:3") == ("visual", 3)
    for bad in ("", "x:0", ":2", " B04"):
        with pytest.raises(ValueError, match="not an asset key"):
            split_asset(bad)
    start, end = parse_interval("2024-06-01")
    assert (start.isoformat(), end.isoformat()) == ("2024-06-01T00:00:00+00:00", "2024-06-01T23:59:59.999999+00:00")
    assert parse_interval("../2024-01-01T00:00:00Z")[0] is None
    assert parse_interval("2024-01-01/..")[1] is None
    with pytest.raises(ValueError, match="ends before it starts"):
        parse_interval("2024-02-01/2024-01-01")


@pytest.mark.parametrize(("stac", "mask", "message"), [
    ({"catalog": [], "assets": ["B04"]}, None, "names no STAC document"),
    ({"catalog": "c.json", "assets": []}, None, "at least 1 item"),
    ({"catalog": "c.json", "assets": ["B04", "B04"]}, None, "lists ['B04'] more than once"),
    ({"catalog": "c.json", "assets": ["B04"], "grid": -10}, None, "pixel size must be positive"),
    ({"catalog": "c.json", "assets": ["B04"], "datetime": "June"}, None, "not an ISO 8601"),
    ({"catalog": "c.json", "assets": ["B04"], "bbox": [10, 50, 11, 40]}, None, "west, south, east, north"),
    ({"catalog": "c.json", "assets": ["B04"], "bbox": [10, 50]}, None, "inputs.stac.bbox: must be four numbers "
     "[west, south, east, north] in degrees, got 2: [10, 50]"),
    ({"catalog": "c.json", "assets": ["B04"], "intersects": {"type": "Point"}}, None, "not a GeoJSON geometry"),
    ({"catalog": "c.json", "assets": ["B04"], "resampling": "lanczos"}, None, "resampling"),
    ({"catalog": "c.json", "assets": ["B04"]}, {"asset": "SCL"}, "either invalid"),
    ({"catalog": "c.json", "assets": ["B04"]}, {"asset": "QA", "bits": [64]}, "less than or equal to 63"),
    ({"catalog": "c.json", "assets": ["B04"]}, {"asset": "SCL", "invalid": []}, "is empty"),
], ids=lambda v: str(v)[:40])
def test_bad_stac_sections_are_refused(tmp_path: Path, stac: dict[str, Any], mask: Any, message: str) -> None:
    inputs: dict[str, Any] = {"stac": stac, **({"mask": mask} if mask else {})}
    wf = {"inputs": inputs, "model": {"type": "builtin", "name": "landcover-demo"}, "output": {"directory": "out"}}
    with pytest.raises(SpecError, match=None) as err:
        parse_workflow(wf, tmp_path)
    assert message in str(err.value)


def test_stac_excludes_paths_and_mask_needs_stac() -> None:
    with pytest.raises(ValueError, match="leave paths out"):
        InputSpec(paths=("a.tif",), stac={"catalog": "c.json", "assets": ["B04"]})
    with pytest.raises(ValueError, match=r"it needs inputs\.stac"):
        InputSpec(paths=("a.tif",), mask={"asset": "SCL", "invalid": [9]})
    with pytest.raises(ValueError, match="format must be auto or stac"):
        InputSpec(format="geotiff", stac={"catalog": "c.json", "assets": ["B04"]})


def test_relative_hrefs_resolve_against_their_document() -> None:
    assert absolute_href("./B04.tif", "/data/items/a/a.json") == "/data/items/a/B04.tif"
    assert absolute_href("../b/B04.tif", "/data/items/a/a.json") == "/data/items/b/B04.tif"
    assert absolute_href("B04.tif", "s3://bucket/items/a/a.json") == "s3://bucket/items/a/B04.tif"
    assert absolute_href("/abs/B04.tif", "/data/a.json") == "/abs/B04.tif"
    assert absolute_href("file:///abs/B04.tif", "/data/a.json") == "/abs/B04.tif"
    assert absolute_href("s3://other/B04.tif", "/data/a.json") == "s3://other/B04.tif"


def test_catalog_collection_items_and_workflow_paths(tmp_path: Path) -> None:
    items = [write_item(tmp_path / "cat" / "items", f"it{i}", _bands()) for i in range(3)]
    catalog = write_catalog(tmp_path / "cat", items)
    wf = {"inputs": {"stac": {"catalog": "cat/catalog.json", "assets": ["B02", "visual:3"]},
                     "mask": {"asset": "SCL", "invalid": [0, 9]}},
          "model": {"type": "builtin", "name": "landcover-demo"}, "output": {"directory": "out"}}
    spec = parse_workflow(wf, tmp_path)
    assert spec.inputs.stac is not None and spec.inputs.stac.catalog == (str(catalog),)
    found = discover(spec.inputs, "raster")
    assert [i.name for i in found.items] == ["it0", "it1", "it2"]
    first = found.items[0]
    assert first.path == str(items[0]) and first.error is None and first.stac is not None
    ref = first.stac
    assert [(b.key, b.band, b.href) for b in ref.bands] == [
        ("B02", 1, str(items[0].parent / "B02.tif")), ("visual", 3, str(items[0].parent / "visual.tif"))]
    assert (ref.bands[0].scale, ref.bands[0].offset, ref.bands[0].nodata) == (0.0001, -0.1, 0.0)
    assert ref.mask is not None and ref.mask.band.key == "SCL" and ref.mask.invalid == (0, 9)
    assert ref.self_href == str(items[0]) and ref.datetime == "2024-06-01T10:00:00Z"


def test_item_collection_single_item_and_geoparquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from stac_geoparquet.arrow import parse_stac_items_to_arrow

    write_item(tmp_path / "files", "seed", _bands())  # the band files, shared by every document below
    docs = [item_doc(f"fc{i}", {"B02": "./seed/B02.tif", "visual": "./seed/visual.tif"},
                     properties={"datetime": f"2024-0{i + 1}-01T00:00:00Z"}) for i in range(2)]
    fc = tmp_path / "files" / "search.json"
    fc.write_text(json.dumps({"type": "FeatureCollection", "features": docs}), encoding="utf-8")
    found, unmatched = stac_items(_spec(str(fc)))
    assert [(f.name, f.where, f.error) for f in found] == [("fc0", f"{fc}#fc0", None), ("fc1", f"{fc}#fc1", None)]
    assert found[0].ref is not None and found[0].ref.bands[0].href == str(tmp_path / "files" / "seed" / "B02.tif")
    assert found[0].ref.self_href is None  # no document of its own: no derived_from link to make
    # one item document
    single = tmp_path / "files" / "seed" / "seed.json"
    found, _ = stac_items(_spec(str(single)))
    assert [f.name for f in found] == ["seed"] and found[0].ref is not None
    assert found[0].ref.self_href == str(single)
    # STAC-GeoParquet, written by stac-geoparquet itself, with absolute hrefs
    absolute = [item_doc(f"gp{i}", {"B02": str(tmp_path / "files/seed/B02.tif"),
                                    "visual": str(tmp_path / "files/seed/visual.tif")}) for i in range(3)]
    table = parse_stac_items_to_arrow(absolute).read_all()
    parquet = tmp_path / "items.parquet"
    pq.write_table(table, parquet)
    found, unmatched = stac_items(_spec(str(parquet)))
    assert [f.name for f in found] == ["gp0", "gp1", "gp2"] and not unmatched
    assert found[2].ref is not None and found[2].ref.bands[1].href == str(tmp_path / "files/seed/visual.tif")


def test_filters(tmp_path: Path) -> None:
    base = item_doc("x", {"B02": "B02.tif"}, bbox=(10.0, 50.0, 11.0, 51.0),
                    properties={"datetime": "2024-06-15T10:00:00Z", "eo:cloud_cover": 30.0, "platform": "sentinel-2a"})
    keep = {"datetime": "2024-06-01/2024-06-30", "bbox": (10.5, 50.5, 12, 52), "max_cloud_cover": 30,
            "properties": {"platform": "sentinel-2a"},
            "intersects": {"type": "Point", "coordinates": [10.2, 50.2]}}
    assert rejects(_spec("c.json", **keep), base) is None
    for change, reason in [
        ({"datetime": "2024-07-01/.."}, "its datetime is outside 2024-07-01/.."),
        ({"datetime": "../2024-06-14"}, "outside"),
        ({"bbox": (12.0, 50.0, 13.0, 51.0)}, "it lies outside bbox"),
        ({"intersects": {"type": "Point", "coordinates": [0, 0]}}, "does not intersect"),
        ({"max_cloud_cover": 29.9}, "its eo:cloud_cover 30.0 is above 29.9"),
        ({"properties": {"platform": "sentinel-2b"}}, "its platform is 'sentinel-2a', not 'sentinel-2b'"),
    ]:
        assert reason in (rejects(_spec("c.json", **{**keep, **change}), base) or ""), change
    ranged = {**base, "properties": {"start_datetime": "2024-01-01T00:00:00Z", "end_datetime": "2024-12-31T00:00:00Z"}}
    assert rejects(_spec("c.json", datetime="2024-06-01"), ranged) is None
    assert rejects(_spec("c.json", datetime="2025-01-01/.."), ranged) is not None
    assert rejects(_spec("c.json", max_cloud_cover=50), ranged) == "it has no eo:cloud_cover"


def test_missing_assets_broken_links_and_empty_results(tmp_path: Path) -> None:
    good = write_item(tmp_path / "cat", "good", _bands())
    lacking = write_item(tmp_path / "cat", "lacking", {k: v for k, v in _bands().items() if k != "visual"})
    catalog = write_catalog(tmp_path / "cat", [good, lacking], extra_links=["./nowhere/missing.json"])
    found, _ = stac_items(_spec(str(catalog)), MaskSpec(asset="SCL", invalid=(9,)))
    by_name = {f.name: f for f in found}
    assert by_name["good"].error is None
    assert by_name["lacking"].ref is None
    assert "item 'lacking' has no asset 'visual' (listed in inputs.stac.assets); its assets: B02, SCL" \
        in str(by_name["lacking"].error)
    assert "broken item link in" in str(by_name["missing"].error) and "missing.json" in str(by_name["missing"].error)
    found, _ = stac_items(_spec(str(catalog)), MaskSpec(asset="QA_PIXEL", bits=(3,)))
    assert "has no asset 'QA_PIXEL' (inputs.mask.asset)" in str({f.name: f for f in found}["good"].error)
    found, _ = stac_items(_spec(str(catalog), grid="SCL"))
    assert "inputs.stac.grid names asset 'SCL', which is not one of" in str(found[0].error)
    # a document that is not there, or not STAC, fails as an entry; nothing at all is a job error
    found, _ = stac_items(_spec(str(tmp_path / "none.json")))
    assert len(found) == 1 and "cannot read" in str(found[0].error)
    (tmp_path / "odd.json").write_text('{"type": "Thing"}', encoding="utf-8")
    found, _ = stac_items(_spec(str(tmp_path / "odd.json")))
    assert "not a STAC document: type is 'Thing'" in str(found[0].error)
    empty = write_catalog(tmp_path / "empty", [])
    with pytest.raises(JobError, match=r"catalog.json: no STAC item found; check inputs.stac"):
        discover(InputSpec(stac={"catalog": str(empty), "assets": ["B02"]}), "raster")


def test_fingerprint_follows_assets_and_the_item_document(tmp_path: Path) -> None:
    path = write_item(tmp_path / "cat", "it", _bands())
    ref = stac_items(_spec(str(path)), MaskSpec(asset="SCL", invalid=(9,)))[0][0].ref
    assert ref is not None
    before = stac_fingerprint(ref)
    assert stac_fingerprint(ref) == before
    scl = path.parent / "SCL.tif"
    scl.write_bytes(scl.read_bytes() + b"\0")  # the mask changed: a new input
    assert stac_fingerprint(ref) != before
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["properties"]["eo:cloud_cover"] = 3
    path.write_text(json.dumps(doc), encoding="utf-8")
    changed = stac_items(_spec(str(path)), MaskSpec(asset="SCL", invalid=(9,)))[0][0].ref
    assert changed is not None and changed.digest != ref.digest


@pytest.mark.usefixtures("clean_aws_environment")
def test_catalog_on_s3(tmp_path: Path, s3_env: Any, endpoint: str) -> None:
    items = [write_item(tmp_path / "cat", f"s{i}", _bands()) for i in range(2)]
    write_catalog(tmp_path / "cat", items)
    for file in (tmp_path / "cat").rglob("*"):
        if file.is_file():
            s3_env.upload_file(str(file), BUCKET, f"stac/{file.relative_to(tmp_path / 'cat')}")
    config = S3Config.from_env()
    found, unmatched = stac_items(_spec(f"s3://{BUCKET}/stac/catalog.json"), s3=config)
    assert [f.name for f in found] == ["s0", "s1"] and not unmatched
    ref = found[0].ref
    assert ref is not None and ref.bands[0].href == f"s3://{BUCKET}/stac/s0/B02.tif"
    assert stac_fingerprint(ref, config).startswith("stac:2:")
