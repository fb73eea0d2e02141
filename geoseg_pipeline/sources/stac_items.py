"""STAC items as input items: the documents read (catalogs and collections followed through
their links, item collections, single items, STAC-GeoParquet), the workflow's filters applied,
each item's listed assets resolved to the bands the model reads.

What comes out is plain data (:class:`StacItemRef`, small and picklable: the actors receive it
with every task); nothing here reads pixels. A document that cannot be read, a broken link, an
item without a listed asset: each becomes a failed item naming the item (or the link) and the
problem, and the rest of the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlparse

from ..errors import SourceError
from ..spec.stac import MaskSpec, StacSpec, parse_interval, split_asset
from ..storage import S3Config, is_s3, local_path, read_bytes, require_s3, uri_scheme

log = logging.getLogger("geoseg")

#: Suffixes of STAC-GeoParquet files (every other document is JSON).
PARQUET_SUFFIXES = (".parquet", ".geoparquet")

#: Links followed from a catalog or collection.
_FOLLOWED = ("child", "item")


@dataclass(frozen=True)
class AssetBand:
    """One band the model reads: a band of one asset of the item.

    Attributes:
        key: the asset key (``B04``).
        href: the asset's absolute location (a path or URI).
        band: the 1-based band in the asset's file.
        scale, offset: from the asset's ``raster:bands`` (``bands``) entry; applied when the
            workflow asks (``inputs.stac.scale_offset``).
        nodata: the asset's declared nodata for that band (``None``: the file's own).
    """

    key: str
    href: str
    band: int = 1
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


@dataclass(frozen=True)
class QualityMask:
    """The item's quality band and which of its values (or bit flags) mark invalid pixels."""

    band: AssetBand
    invalid: tuple[int, ...] | None = None
    bits: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StacItemRef:
    """One STAC item as the engine reads it.

    Attributes:
        id: the item's id (the output folder's name).
        href: where the item is: its own document, or ``<document>#<id>`` inside a collection
            of items.
        bands: the model's bands in channel order.
        grid: ``finest``, an asset key, or a pixel size (see :class:`~..spec.stac.StacSpec`).
        resampling: GDAL resampling for assets on another grid.
        scale_offset: apply each band's scale and offset.
        mask: the quality band, if any.
        datetime, start_datetime, end_datetime: the item's acquisition time (ISO 8601), for the
            output's STAC item.
        self_href: the item document's absolute location, when it has one of its own (the
            output's ``derived_from`` link).
        digest: a hash of the item's JSON (its metadata changing makes it a new input).
    """

    id: str
    href: str
    bands: tuple[AssetBand, ...]
    grid: str | float = "finest"
    resampling: str = "bilinear"
    scale_offset: bool = False
    mask: QualityMask | None = None
    datetime: str | None = None
    start_datetime: str | None = None
    end_datetime: str | None = None
    self_href: str | None = None
    digest: str = ""

    @property
    def assets(self) -> tuple[AssetBand, ...]:
        """Every band read: the model's, then the mask's."""
        return self.bands + ((self.mask.band,) if self.mask is not None else ())


@dataclass(frozen=True)
class Found:
    """One item a document gave, or why a document or link gave nothing."""

    ref: StacItemRef | None
    name: str
    where: str
    error: str | None = None


# -- reading documents ------------------------------------------------------------------------


def _read_text(href: str, s3: S3Config | None) -> str:
    """A document's text, local or ``s3://``.

    Raises:
        SourceError: it cannot be read.
    """
    try:
        if is_s3(href):
            data = read_bytes(href, require_s3(href, s3))
        else:
            with open(local_path(href), "rb") as fh:
                data = fh.read()
    except SourceError:
        raise
    except OSError as exc:
        raise SourceError(f"{href}: cannot read: {exc.strerror or exc}") from exc
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        raise SourceError(f"{href}: is a GeoTIFF, not a STAC document: inputs.stac (and --assets) take STAC items, "
                          "item collections and catalogs; give a raster as an input path, without --assets")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{href}: not UTF-8 text, so no STAC document (JSON): {exc}") from exc


def _read_json(href: str, s3: S3Config | None) -> dict[str, Any]:
    text = _read_text(href, s3)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SourceError(f"{href}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SourceError(f"{href}: not a STAC document (a JSON object with a type)")
    return doc


def absolute_href(href: str, base: str) -> str:
    """``href`` resolved against the document at ``base`` (a path or URI), as STAC says relative
    hrefs are."""
    if uri_scheme(href) is not None or posixpath.isabs(href):
        return local_path(href) if uri_scheme(href) == "file" else href
    if is_s3(base):  # urljoin knows only the schemes of the web
        bucket, _, key = base[len("s3://"):].partition("/")
        return f"s3://{bucket}/" + posixpath.normpath(posixpath.join(posixpath.dirname(key), href)).lstrip("/")
    if uri_scheme(base) is not None and uri_scheme(base) != "file":
        return urljoin(base, href)
    return posixpath.normpath(posixpath.join(posixpath.dirname(local_path(base)), href))


def _parquet_items(href: str, s3: S3Config | None) -> list[dict[str, Any]]:
    """The items of a STAC-GeoParquet file (stac-geoparquet's own reader)."""
    import io

    import pyarrow.parquet as pq
    from stac_geoparquet.arrow import stac_table_to_items

    try:
        if is_s3(href):
            table = pq.read_table(io.BytesIO(read_bytes(href, require_s3(href, s3))))
        else:
            table = pq.read_table(local_path(href))
        return [dict(item) for item in stac_table_to_items(table)]
    except SourceError:
        raise
    except Exception as exc:  # pyarrow and stac-geoparquet raise many types for a bad file
        raise SourceError(f"{href}: cannot read as STAC-GeoParquet: {exc}") from exc


def _walk(href: str, s3: S3Config | None, seen: set[str]) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """``(item document, where, problem)`` for every item below ``href``: a catalog's or
    collection's links followed (once each), a collection of items' features, an item itself."""
    if href in seen:
        return
    seen.add(href)
    if urlparse(href).path.lower().endswith(PARQUET_SUFFIXES):
        for i, doc in enumerate(_parquet_items(href, s3)):
            yield doc, f"{href}#{doc.get('id', i)}", None
        return
    doc = _read_json(href, s3)
    kind = doc.get("type")
    if kind == "Feature":
        yield doc, href, None
    elif kind == "FeatureCollection":
        for i, feature in enumerate(doc.get("features") or []):
            ok = isinstance(feature, dict)
            yield (feature if ok else None), f"{href}#{feature.get('id', i) if ok else i}", \
                None if ok else f"{href}: feature {i} is not a JSON object"
    elif kind in ("Catalog", "Collection"):
        for link in doc.get("links") or []:
            if not isinstance(link, dict) or link.get("rel") not in _FOLLOWED or not link.get("href"):
                continue
            target = absolute_href(str(link["href"]), href)
            try:
                yield from _walk(target, s3, seen)
            except SourceError as exc:
                yield None, target, f"broken {link['rel']} link in {href}: {exc}"
    else:
        raise SourceError(f"{href}: not a STAC document: type is {kind!r} (expected Catalog, Collection, "
                          "FeatureCollection or Feature)")


# -- filters ----------------------------------------------------------------------------------


def _when(props: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """The item's time span (one instant, or start/end)."""
    def parse(value: Any) -> datetime | None:
        if not value:
            return None
        start, _ = parse_interval(str(value))
        return start

    instant = parse(props.get("datetime"))
    if instant is not None:
        return instant, instant
    return parse(props.get("start_datetime")), parse(props.get("end_datetime"))


def rejects(spec: StacSpec, doc: Mapping[str, Any]) -> str | None:
    """Why the workflow's filters leave the item out (``None``: it is kept)."""
    props = doc.get("properties") or {}
    if spec.datetime is not None:
        lo, hi = parse_interval(spec.datetime)
        start, end = _when(props)
        if start is None and end is None:
            return "it has no datetime"
        if (hi is not None and start is not None and start > hi) or (lo is not None and end is not None and end < lo):
            return f"its datetime is outside {spec.datetime}"
    if spec.bbox is not None or spec.intersects is not None:
        from shapely.geometry import box, shape

        geometry = doc.get("geometry")
        if not geometry and not doc.get("bbox"):
            return "it has no geometry"
        footprint = shape(geometry) if geometry else box(*doc["bbox"][:2], *doc["bbox"][-2:])
        if spec.bbox is not None and not footprint.intersects(box(*spec.bbox)):
            return "it lies outside bbox"
        if spec.intersects is not None and not footprint.intersects(shape(spec.intersects)):
            return "it does not intersect the intersects geometry"
    if spec.max_cloud_cover is not None:
        cover = props.get("eo:cloud_cover")
        if not isinstance(cover, int | float):
            return "it has no eo:cloud_cover"
        if cover > spec.max_cloud_cover:
            return f"its eo:cloud_cover {cover} is above {spec.max_cloud_cover}"
    for key, wanted in spec.properties.items():
        if props.get(key) != wanted:
            return f"its {key} is {props.get(key)!r}, not {wanted!r}"
    return None


# -- items ------------------------------------------------------------------------------------


def _band_meta(asset: Mapping[str, Any], band: int) -> Mapping[str, Any]:
    """The asset's per-band metadata: STAC 1.1 ``bands``, else the raster extension's
    ``raster:bands``; empty when it has none for that band."""
    for key in ("bands", "raster:bands"):
        entries = asset.get(key)
        if isinstance(entries, list) and len(entries) >= band and isinstance(entries[band - 1], dict):
            entry: Mapping[str, Any] = entries[band - 1]
            return {k.removeprefix("raster:"): v for k, v in entry.items()}
    return {}


def _asset_band(doc: Mapping[str, Any], base: str, ref: str, what: str) -> AssetBand:
    """The band ``ref`` (``KEY`` or ``KEY:BAND``) of the item.

    Raises:
        SourceError: the item has no such asset, or it has no href.
    """
    key, band = split_asset(ref)
    assets = doc.get("assets") or {}
    asset = assets.get(key)
    if not isinstance(asset, dict):
        have = ", ".join(sorted(assets)) or "none"
        raise SourceError(f"item {doc.get('id')!r} has no asset {key!r} ({what}); its assets: {have}")
    href = asset.get("href")
    if not isinstance(href, str) or not href:
        raise SourceError(f"item {doc.get('id')!r}: asset {key!r} has no href")
    meta = _band_meta(asset, band)
    nodata = meta.get("nodata")
    if isinstance(nodata, str):  # STAC writes "nan", "inf", "-inf" as strings
        nodata = float(nodata)
    return AssetBand(key, absolute_href(href, base), band, float(meta.get("scale", 1.0) or 1.0),
                     float(meta.get("offset", 0.0) or 0.0), None if nodata is None else float(nodata))


def item_ref(doc: Mapping[str, Any], where: str, base: str, spec: StacSpec, mask: MaskSpec | None) -> StacItemRef:
    """One item document as the engine reads it.

    Args:
        doc: the item's JSON.
        where: where it is (its own document, or ``<document>#<id>``).
        base: the document its relative hrefs are relative to.
        spec, mask: the workflow's STAC settings and quality mask.

    Raises:
        SourceError: a listed asset (or the mask's, or the grid's) is missing.
    """
    bands = tuple(_asset_band(doc, base, ref, "listed in inputs.stac.assets") for ref in spec.assets)
    quality = None
    if mask is not None:
        quality = QualityMask(_asset_band(doc, base, mask.asset, "inputs.mask.asset"), mask.invalid, mask.bits)
    if spec.grid_asset is not None and spec.grid_asset not in {b.key for b in bands}:
        raise SourceError(f"item {doc.get('id')!r}: inputs.stac.grid names asset {spec.grid_asset!r}, "
                          f"which is not one of inputs.stac.assets {list(spec.assets)}")
    props = doc.get("properties") or {}
    own = None
    for link in doc.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "self" and link.get("href"):
            own = absolute_href(str(link["href"]), base)
    if own is None and "#" not in where:
        own = where
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return StacItemRef(str(doc.get("id")), where, bands, spec.grid, spec.resampling, spec.scale_offset, quality,
                       _text(props.get("datetime")), _text(props.get("start_datetime")),
                       _text(props.get("end_datetime")), own, digest)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def stac_items(spec: StacSpec, mask: MaskSpec | None = None,
               s3: S3Config | None = None) -> tuple[list[Found], list[str]]:
    """Every item the workflow's STAC documents give and its filters keep, in document order
    (each id once), and a message per document or filter that gave nothing.

    A document named in the workflow that cannot be read gives a failed entry, like a broken
    link below it.
    """
    found: list[Found] = []
    unmatched: list[str] = []
    ids: set[str] = set()
    for href in spec.catalog:
        seen: set[str] = set()
        given = kept = 0
        try:
            walked = list(_walk(href, s3, seen))
        except SourceError as exc:
            found.append(Found(None, _link_name(href), href, str(exc)))
            continue
        for doc, where, problem in walked:
            if doc is None:
                found.append(Found(None, _link_name(where), where, problem))
                continue
            given += 1
            item_id = doc.get("id")
            if not isinstance(item_id, str) or not item_id:
                found.append(Found(None, _link_name(where), where, f"{where}: the item has no id"))
                continue
            reason = rejects(spec, doc)
            if reason is not None:
                log.debug("%s: left out: %s", where, reason)
                continue
            if item_id in ids:
                continue
            ids.add(item_id)
            kept += 1
            base = where.partition("#")[0]
            try:
                found.append(Found(item_ref(doc, where, base, spec, mask), item_id, where))
            except SourceError as exc:
                found.append(Found(None, item_id, where, f"{where}: {exc}"))
        if not given:
            unmatched.append(f"{href}: no STAC item found")
        elif not kept:
            unmatched.append(f"{href}: none of its {given} item(s) passes the filters ({_filters(spec)})")
    return found, unmatched


def _filters(spec: StacSpec) -> str:
    parts = []
    if spec.datetime is not None:
        parts.append(f"datetime {spec.datetime}")
    if spec.bbox is not None:
        parts.append(f"bbox {list(spec.bbox)}")
    if spec.intersects is not None:
        parts.append("intersects")
    if spec.max_cloud_cover is not None:
        parts.append(f"max_cloud_cover {spec.max_cloud_cover}")
    parts += [f"{k} = {v!r}" for k, v in spec.properties.items()]
    return ", ".join(parts) or "no filter"


def _link_name(where: str) -> str:
    """An output name for a link or feature that gave no item (its file name)."""
    tail = where.rpartition("#")[2] if "#" in where else posixpath.basename(urlparse(where).path)
    return posixpath.splitext(tail)[0] or tail or "stac"


__all__ = ["PARQUET_SUFFIXES", "AssetBand", "Found", "QualityMask", "StacItemRef", "absolute_href", "item_ref",
           "rejects", "stac_items"]
