"""Manifests (``inputs.manifest``): a CSV or text file listing one item per line, literally (no
globs, no folder expansion), with optional metadata; a bad line becomes a failed item naming the
manifest and the line (see :func:`read_manifest`)."""

from __future__ import annotations

import csv
import io
import os
import posixpath
from pathlib import Path
from typing import NamedTuple

from ..errors import SourceError, SpecError
from ..storage import S3Config, is_s3, local_path, read_bytes, require_s3, split_s3, uri_scheme
from .input_items import Item, Metadata, bad_item_name, has_control, item_name, not_a_file, unsupported_scheme

#: Manifest columns naming the item's location, and its output name.
URI_COLUMNS = ("uri", "path")
NAME_COLUMN = "item"


class _Row(NamedTuple):
    line: int
    location: str
    meta: dict[str, str]
    problem: str | None = None


def read_manifest(manifest: str, s3: S3Config | None = None) -> list[Item]:
    """The items a manifest lists, in order; bad lines become items with ``error`` set.

    A manifest is a **CSV file** (``.csv``) with a header row holding a ``uri`` or ``path``
    column and optionally ``item`` (the output name; default: from the file name) and any
    other columns, kept as the item's :attr:`Item.metadata`; or a **text file** (any other
    name): one path or URI per line, ``#`` comment lines and blank lines ignored. Relative
    paths are relative to the manifest's folder (or prefix, for a manifest in ``s3://``).
    Each line is one item, taken literally: no globs, no folder expansion.

    A bad line (no location, control characters, an unsupported URI scheme, a local file that
    does not exist, a bad ``item`` name, a CSV row with the wrong number of fields) becomes a
    failed item whose error names the manifest and the line.

    Raises:
        SpecError: the manifest cannot be read, is not UTF-8, or a CSV lacks a header with
            one ``uri`` or ``path`` column.
    """
    text = _read_text(manifest, s3)
    base = manifest.rsplit("/", 1)[0] if is_s3(manifest) else str(Path(local_path(manifest)).parent)
    rows = _csv_rows(manifest, text) if manifest.lower().endswith(".csv") else _text_rows(text)
    return [_manifest_item(manifest, base, row) for row in rows]


def _spec_error(manifest: str, message: str) -> SpecError:
    return SpecError(f"inputs.manifest: {manifest}: {message}", [("inputs.manifest", f"{manifest}: {message}")])


def _read_text(manifest: str, s3: S3Config | None) -> str:
    problem = unsupported_scheme(manifest)
    if problem is not None:
        raise _spec_error(manifest, problem.split(": ", 1)[1])
    try:
        if is_s3(manifest):
            data = read_bytes(manifest, require_s3(manifest, s3))
        else:
            data = Path(local_path(manifest)).read_bytes()
    except SourceError as exc:
        raise _spec_error(manifest, f"cannot read the manifest: {str(exc).removeprefix(manifest + ': ')}") from exc
    except OSError as exc:
        raise _spec_error(manifest, f"cannot read the manifest: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _spec_error(manifest, f"not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc


def _text_rows(text: str) -> list[_Row]:
    rows: list[_Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            rows.append(_Row(number, entry, {}))
    return rows


def _csv_rows(manifest: str, text: str) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            return []
        columns = [c.strip() for c in header]
        lower = [c.lower() for c in columns]
        where = [c for c in URI_COLUMNS if c in lower]
        if len(where) != 1 or len(set(lower)) != len(lower):
            raise _spec_error(manifest, f"the header {columns} must name each column once, with one location "
                                        "column, 'uri' or 'path'")
        uri_at = lower.index(where[0])
        rows: list[_Row] = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(columns):
                rows.append(_Row(reader.line_num, "", {},
                                 f"{len(fields)} fields where the header has {len(columns)}"))
                continue
            meta = {c: v for i, (c, v) in enumerate(zip(columns, fields, strict=True)) if i != uri_at}
            rows.append(_Row(reader.line_num, fields[uri_at].strip(), meta))
    except csv.Error as exc:
        raise _spec_error(manifest, f"line {reader.line_num}: not valid CSV: {exc}") from exc
    return rows


def _manifest_item(manifest: str, base: str, row: _Row) -> Item:
    """One manifest line as an item (failed, with the line named, when it cannot be one)."""
    raw_name = next((v for k, v in row.meta.items() if k.lower() == NAME_COLUMN), "").strip()
    metadata = Metadata((k, v) for k, v in row.meta.items() if k.lower() != NAME_COLUMN)
    path = ""
    problem = row.problem or _bad_location(row.location)
    if problem is None:
        path, problem = _join(base, row.location)
    if problem is None and raw_name:
        problem = bad_item_name(raw_name)
    if problem is None:
        return Item(raw_name or item_name(path), path, metadata)
    name = raw_name if raw_name and bad_item_name(raw_name) is None else ""
    if not name and row.location and not has_control(row.location):
        name = item_name(row.location)
    return Item(name or f"{item_name(manifest)}:{row.line}", path or row.location, metadata,
                error=f"{manifest}, line {row.line}: {problem}")


def _bad_location(location: str) -> str | None:
    if not location:
        return "no path or URI"
    if has_control(location):
        return f"{location!r} is not a path or URI (control characters)"
    problem = unsupported_scheme(location)
    if problem is not None:
        return problem
    if is_s3(location):
        try:
            _, key = split_s3(location)
        except ValueError as exc:
            return str(exc)
        if not key or key.endswith("/"):
            return f"{location}: names a bucket or prefix, not an object or a store"
    return None


def _join(base: str, location: str) -> tuple[str, str | None]:
    """The entry's path or URI, and a problem (a local file that does not exist)."""
    if is_s3(location):
        return location, None
    if is_s3(base):
        if uri_scheme(location) is not None or location.startswith("/"):
            return location, f"{location}: a manifest in an object store lists s3:// URIs or relative keys"
        bucket, key = split_s3(base + "/")
        joined = posixpath.normpath(posixpath.join(key, location))
        if joined.startswith(".."):
            return location, f"{location}: leaves the bucket"
        return f"s3://{bucket}/{joined}", None
    path = Path(local_path(location)).expanduser()
    local = os.path.normpath(path if path.is_absolute() else Path(base) / path)
    if not os.path.exists(local):
        return local, f"{local}: no such file or directory"
    return local, not_a_file(local)


__all__ = ["NAME_COLUMN", "URI_COLUMNS", "read_manifest"]
