"""Validating STAC documents offline: the STAC 1.1.0, GeoJSON and extension schemas shipped in
``tests/data/stac-schemas`` (see its README) in a ``referencing`` registry, so that nothing is
fetched and an unresolvable ``$ref`` fails."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema.validators import validator_for
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent / "data" / "stac-schemas"
ITEM_SCHEMA = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
COLLECTION_SCHEMA = "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json"


@functools.cache
def shipped() -> dict[str, Any]:
    """Every shipped schema under the URL its path spells."""
    return {f"https://{p.relative_to(SCHEMAS).as_posix()}": json.loads(p.read_text("utf-8"))
            for p in sorted(SCHEMAS.rglob("*.json"))}


@functools.cache
def registry() -> Registry[Any]:
    """The shipped schemas and the JSON Schema meta-schemas (jsonschema-specifications, offline);
    nothing is retrieved."""
    registry: Registry[Any] = SPECIFICATIONS.with_resources(
        (url, Resource.from_contents(c)) for url, c in shipped().items())
    return registry


def errors(doc: dict[str, Any]) -> list[str]:
    """Schema errors of a STAC item or collection against its core schema and each extension it
    names; an unresolvable ``$ref`` raises."""
    core = ITEM_SCHEMA if doc["type"] == "Feature" else COLLECTION_SCHEMA
    out = []
    for url in [core, *doc.get("stac_extensions", [])]:
        schema = registry().contents(url)
        cls = validator_for(schema)  # the draft the schema declares (all draft-07 today)
        validator = cls(schema, registry=registry(), format_checker=cls.FORMAT_CHECKER)
        out += [f"{url}: {e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
    return out


def assert_valid(path: Path) -> dict[str, Any]:
    """The document, valid; its times RFC 3339 in UTC (jsonschema checks ``format: date-time``
    only when rfc3339-validator is installed)."""
    doc: dict[str, Any] = json.loads(path.read_text("utf-8"))
    assert errors(doc) == []
    if doc["type"] == "Feature":
        keys = ("datetime", "start_datetime", "end_datetime", "created", "processing:datetime")
        times = [doc["properties"].get(k) for k in keys]
    else:
        times = doc["extent"]["temporal"]["interval"][0]
    for t in filter(None, times):
        assert t.endswith("Z") and datetime.fromisoformat(t[:-1] + "+00:00").tzinfo is not None, t
    return doc


__all__ = ["COLLECTION_SCHEMA", "ITEM_SCHEMA", "SCHEMAS", "assert_valid", "errors", "registry", "shipped"]
