"""Turn the workflow's inputs (paths, globs, folders, ``s3://`` URIs, a manifest) into named items.

Rules (see ``docs/workflow.md``):

* a **file** (or object) is one item, named after its file name without extensions;
* a **Zarr store** (a folder named ``*.zarr`` or holding ``zarr.json`` / ``.zarray`` /
  ``.zgroup``) is one item, never looked into;
* any **other folder** (or an ``s3://`` prefix ending in ``/``) stands for the supported files
  and Zarr stores anywhere below it (the suffixes of :mod:`geoseg_pipeline.formats` for the
  job's kind, :func:`~geoseg_pipeline.formats.folder_suffixes`), in sorted order; names starting
  with ``.`` are skipped, symbolic links to folders are not followed;
* a **glob** (``*``, ``?``, ``[..]``, ``**``) matches files, stores and folders, each taken as
  above; a glob matching nothing is reported, not an error;
* a **literal path** that does not exist is still an item, so that it fails as an item with
  its reason; a literal ``s3://`` key is taken as an object without asking the store;
* a **manifest** (:func:`read_manifest`) lists one item per line, literally (no globs, no
  folder expansion), with optional metadata; a bad line becomes a failed item naming the
  manifest and the line;
* the same file named twice is one item (the first; metadata from a later mention is kept if
  the first had none).

Nothing is opened: only names and listings. Listing an object store can fail (unreachable,
no such bucket, access denied): that raises a :class:`~geoseg_pipeline.errors.SourceError`
naming the URI, before any work starts.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import posixpath
import stat
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import JobError, SourceError, SpecError
from ..formats import FORMATS, Kind, folder_suffixes
from ..spec.model import InputSpec
from ..storage import (
    SCHEMES,
    S3Config,
    glob_s3,
    is_s3,
    local_path,
    read_bytes,
    require_s3,
    split_s3,
    unknown_scheme,
    uri_scheme,
    walk_s3,
)
from .stac_items import StacItemRef, stac_items

_MULTI_SUFFIXES = (".nii.gz", ".ome.zarr", ".tar.gz")

#: Suffixes and marker files of directory stores (one item each, never looked into).
_STORE_SUFFIXES = tuple(dict.fromkeys(s for f in FORMATS if f.store for s in f.suffixes))
_STORE_MARKERS = frozenset(m for f in FORMATS for m in f.markers)

#: Manifest columns naming the item's location, and its output name.
URI_COLUMNS = ("uri", "path")
NAME_COLUMN = "item"


class Metadata(Mapping[str, str]):
    """An item's metadata (a manifest row's other columns): a read-only, hashable mapping."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._data: dict[str, str] = dict(data)

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))

    def __repr__(self) -> str:
        return f"Metadata({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Metadata, (self._data,))


@dataclass(frozen=True)
class Item:
    """One input: its output name, its path (or URI), metadata from a manifest, and, for an
    input that cannot be an item (a bad manifest line, an unknown URI scheme), why. A STAC item
    (``inputs.stac``) also carries its resolved assets (``stac``).

    An item with an ``error`` is never opened: the driver records it as failed with that reason.
    """

    name: str
    path: str
    metadata: Metadata = field(default_factory=Metadata)
    error: str | None = None
    stac: StacItemRef | None = None


@dataclass(frozen=True)
class Inputs:
    """What discovery found: the items in order (failed ones included), and one message per
    pattern or folder that matched nothing."""

    items: tuple[Item, ...]
    unmatched: tuple[str, ...]

    @property
    def failed(self) -> tuple[Item, ...]:
        """The items that cannot be processed (``error`` set)."""
        return tuple(i for i in self.items if i.error is not None)

    def locations(self) -> list[str]:
        """Where the items' data lie: their paths, and their STAC assets' hrefs."""
        return [i.path for i in self.items] + [b.href for i in self.items if i.stac is not None for b in i.stac.assets]


def item_name(path: str) -> str:
    """``/a/scene_01.tif`` -> ``scene_01``; ``ct.nii.gz`` -> ``ct``; ``mosaic.zarr`` -> ``mosaic``."""
    name = Path(path.rstrip("/")).name
    lower = name.lower()
    for suffix in _MULTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    stem = Path(name).stem
    return stem or name


# -- paths and globs --------------------------------------------------------------------------


class _Collector:
    """Items in order without duplicates, and the unmatched messages."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.index: dict[str, int] = {}
        self.unmatched: list[str] = []

    def add(self, item: Item) -> None:
        if item.error is None and (problem := _not_a_file(item.path)) is not None:
            item = replace(item, error=problem)
        key = _identity(item.path) if item.error is None else f"\0{item.error}"
        at = self.index.get(key)
        if at is None:
            self.index[key] = len(self.items)
            self.items.append(item)
        elif item.metadata and not self.items[at].metadata and item.error is None:
            self.items[at] = item

    def result(self) -> tuple[list[Item], list[str]]:
        return self.items, self.unmatched


def _not_a_file(path: str) -> str | None:
    """Why a local ``path`` cannot be an item's data: a named pipe, a device or a socket (reading
    a pipe waits for a writer that may never come); ``None`` for files, folders, URIs and paths
    that do not exist (those fail later with their own reason)."""
    if uri_scheme(path) is not None:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{path}: is {kind}, not a file or folder: geoseg reads files and folders only"


def _inside(path: str, folder: Path) -> bool:
    """Whether the local ``path`` lies in ``folder`` (both resolved)."""
    if uri_scheme(path) is not None:
        return False
    return Path(path).resolve().is_relative_to(folder)


def _identity(path: str) -> str:
    if uri_scheme(path) is not None:
        return path.rstrip("/")
    return str(Path(path).resolve()) if os.path.exists(path) else path


def _unsupported(path: str) -> str | None:
    scheme = unknown_scheme(path)
    if scheme is None:
        return None
    return f"{path}: unsupported URI scheme {scheme}://; use a local path or s3://bucket/key"


def _is_store(path: str, names: Iterable[str] = ()) -> bool:
    return path.rstrip("/").lower().endswith(_STORE_SUFFIXES) or any(n in _STORE_MARKERS for n in names)


def _wanted(name: str, suffixes: Sequence[str]) -> bool:
    lower = name.lower()
    return not name.startswith(".") and lower.endswith(tuple(s for s in suffixes if s not in _STORE_SUFFIXES))


def _walklocal_path(root: str) -> Iterator[tuple[str, list[str], list[str]]]:
    def fail(exc: OSError) -> None:
        raise SourceError(f"{exc.filename}: cannot list the folder: {exc.strerror}") from exc

    yield from os.walk(root, onerror=fail)


def _folder(root: str, walk: Iterator[tuple[str, list[str], list[str]]], suffixes: Sequence[str]) -> list[str]:
    """Items below a folder that is not a store: supported files and (when ``.zarr`` is among
    ``suffixes``) Zarr stores, which are never looked into; sorted."""
    stores = any(s in _STORE_SUFFIXES for s in suffixes)
    found: list[str] = []
    for folder, dirs, files in walk:
        if folder.rstrip("/") != root.rstrip("/") and _is_store(folder, files):
            found.extend([folder] if stores else [])
            dirs[:] = []
            continue
        for d in list(dirs):
            if d.startswith(".") or _is_store(d):
                dirs.remove(d)
                if stores and not d.startswith("."):
                    found.append(f"{folder.rstrip('/')}/{d}")
        dirs.sort()
        found.extend(f"{folder.rstrip('/')}/{f}" for f in files if _wanted(f, suffixes))
    return sorted(found)


def _dicom_hint(folder: str, look: int = 20) -> str:
    """A hint to ask for DICOM series where ``folder``'s first files are DICOM files (``.dcm``, or
    the ``DICM`` mark after the 128-byte preamble), which only ``inputs.format: dicom`` reads."""
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # the same files every time
        for name in sorted(files):
            if seen >= look:
                return ""
            seen += 1
            if name.lower().endswith(".dcm"):
                return _DICOM_HINT
            path = os.path.join(root, name)
            if not os.path.isfile(path):  # a pipe or a device is never opened (it may block)
                continue
            try:
                with open(path, "rb") as f:
                    if f.read(132)[128:] == b"DICM":
                        return _DICOM_HINT
            except OSError:
                continue
    return ""


_DICOM_HINT = "; it holds DICOM files: read them as series with --format dicom (inputs.format: dicom)"


def _expandlocal_path(pattern: str, suffixes: Sequence[str], out: _Collector) -> None:
    magic = glob.has_magic(pattern)
    matches = sorted(glob.glob(pattern, recursive=True)) if magic else [pattern]
    found: list[str] = []
    for m in matches:
        if os.path.isdir(m) and not _is_store(m, _names(m)):
            inside = _folder(m, _walklocal_path(m), suffixes)
            if not inside and not magic:
                out.unmatched.append(f"{m}: the folder holds no {', '.join(suffixes)} file or Zarr store"
                                     + _dicom_hint(m))
            found.extend(os.path.normpath(p) for p in inside)
        else:
            found.append(m)
    if magic and not found:
        out.unmatched.append(f"{pattern}: matches no file")
    for p in found:
        out.add(Item(item_name(p), p))


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _expand_s3(pattern: str, suffixes: Sequence[str], config: S3Config, out: _Collector) -> None:
    _, key = split_s3(pattern)
    magic = glob.has_magic(pattern)
    literal = [(pattern, not key or pattern.endswith("/"))]  # a prefix ends with "/"
    matches = glob_s3(pattern, config) if magic else literal
    found: list[str] = []
    for uri, is_prefix in matches:
        if not is_prefix or _is_store(uri):
            found.append(uri.rstrip("/"))
            continue
        inside = _s3_folder(uri, suffixes, config)
        if not inside and not magic:
            out.unmatched.append(f"{pattern}: the prefix holds no {', '.join(suffixes)} object or Zarr store")
        found.extend(inside)
    if magic and not found:
        out.unmatched.append(f"{pattern}: matches no object")
    for p in found:
        out.add(Item(item_name(p), p))


def _s3_folder(uri: str, suffixes: Sequence[str], config: S3Config) -> list[str]:
    walk = walk_s3(uri, config)
    first = next(walk, None)
    if first is None:
        return []
    if _is_store(uri, first[2]):  # a store without the .zarr suffix
        return [uri.rstrip("/")]

    def again() -> Iterator[tuple[str, list[str], list[str]]]:
        yield first
        yield from walk

    return _folder(first[0], again(), suffixes)


def expand_inputs(
    patterns: Sequence[str], *, suffixes: Sequence[str] | None = None, s3: S3Config | None = None
) -> tuple[list[Item], list[str]]:
    """Expand paths, folders, globs and ``s3://`` URIs in order, without duplicates.

    Args:
        patterns: as ``inputs.paths``.
        suffixes: what a folder expands to (default: every supported format,
            :func:`folder_suffixes`).
        s3: the object store's configuration, needed for ``s3://`` patterns (the driver reads the
            environment once; nothing here does).

    Returns:
        the items, and one message per pattern or folder that matched nothing (a literal path
        that does not exist is still returned as an item, so that it fails as an item with its
        reason; an unsupported URI scheme gives an item with ``error`` set).

    Raises:
        SourceError: an object store cannot be listed (unreachable, no bucket, access denied).
    """
    out = _Collector()
    wanted = tuple(suffixes) if suffixes is not None else folder_suffixes()
    for raw in patterns:
        problem = _unsupported(raw)
        if problem is not None:
            out.add(Item(item_name(raw), raw, error=problem))
        elif is_s3(raw):
            try:
                _expand_s3(raw, wanted, require_s3(raw, s3), out)
            except ValueError as exc:  # a malformed URI or glob
                out.add(Item(item_name(raw), raw, error=str(exc)))
        else:
            _expandlocal_path(local_path(raw), wanted, out)
    return out.result()


# -- manifests --------------------------------------------------------------------------------


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
    problem = _unsupported(manifest)
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
        problem = _bad_name(raw_name)
    if problem is None:
        return Item(raw_name or item_name(path), path, metadata)
    name = raw_name if raw_name and _bad_name(raw_name) is None else ""
    if not name and row.location and not _has_control(row.location):
        name = item_name(row.location)
    return Item(name or f"{item_name(manifest)}:{row.line}", path or row.location, metadata,
                error=f"{manifest}, line {row.line}: {problem}")


def _bad_location(location: str) -> str | None:
    if not location:
        return "no path or URI"
    if _has_control(location):
        return f"{location!r} is not a path or URI (control characters)"
    problem = _unsupported(location)
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


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c).startswith("C") for c in text)


def _bad_name(name: str) -> str | None:
    if name in (".", "..") or any(c in name for c in "/\\") or _has_control(name):
        return f"item name {name!r} cannot be a folder name (no '/', '\\', '.', '..' or control characters)"
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
    return local, _not_a_file(local)


# -- the workflow's inputs --------------------------------------------------------------------


def discover(inputs: InputSpec, kind: Kind | None = None, s3: S3Config | None = None,
             output: str | Path | None = None) -> Inputs:
    """Every item of a workflow: ``inputs.paths`` in order, then ``inputs.manifest``'s lines.

    Args:
        inputs: the validated (and path-resolved) input section.
        kind: ``"raster"`` or ``"volume"`` (the job's kind), for what folders expand to.
        s3: the object store's configuration, needed for ``s3://`` patterns (the driver reads the
            environment once; nothing here does).
        output: the job's output directory: nothing in it is an input (an output folder inside
            the input folder would otherwise give the last run's label maps as items).

    Raises:
        JobError: no item at all (the error lists what matched nothing).
        SpecError: the manifest cannot be read or has no location column.
        SourceError: an object store cannot be listed.
    """
    if inputs.stac is not None:
        return _stac_inputs(inputs, s3)
    if inputs.format == "dicom" or inputs.dicomweb is not None:  # one item per DICOM series
        from .dicom_discovery import dicom_items

        items, unmatched = dicom_items(inputs.paths, inputs.dicomweb)
    else:
        items, unmatched = expand_inputs(inputs.paths, suffixes=folder_suffixes(inputs.format, kind), s3=s3)
    out = _Collector()
    for item in items:
        out.add(item)
    found = list(out.items)
    if inputs.manifest is not None:
        listed = read_manifest(inputs.manifest, s3)
        if not listed:
            unmatched.append(f"{inputs.manifest}: the manifest lists no item")
        from_paths = {_identity(i.path): k for k, i in enumerate(found) if i.error is None}
        for item in listed:
            at = from_paths.get(_identity(item.path)) if item.error is None else None
            if at is not None and found[at].name == item.name:
                # a file the paths found too, under the same name: one item, with the line's columns
                found[at] = item if item.metadata else found[at]
                del from_paths[_identity(item.path)]
            else:
                found.append(item)  # every line is an item of its own, even a file listed twice
    if output is not None and uri_scheme(str(output)) is None and found:
        own = Path(output).resolve()
        kept = [i for i in found if i.error is not None or not _inside(i.path, own)]
        if len(kept) < len(found):
            unmatched.append(f"{len(found) - len(kept)} file(s) in the output directory {own} left out of the inputs")
        found = kept
    if not found:
        what = unmatched or ["inputs.paths and inputs.manifest name nothing"]
        raise JobError("no input items: " + "; ".join(what) + "; check inputs.paths and inputs.manifest")
    return Inputs(unique_names(found), tuple(unmatched))


def _stac_inputs(inputs: InputSpec, s3: S3Config | None) -> Inputs:
    """The items of ``inputs.stac`` (see :func:`~.stac_items.stac_items`), named by their ids.

    Raises:
        JobError: no item at all (the error says which document or filter gave none).
    """
    assert inputs.stac is not None
    found, unmatched = stac_items(inputs.stac, inputs.mask, s3)
    items = [Item(f.name, f.where, error=f.error or _bad_name(f.name), stac=f.ref) for f in found]
    if not items:
        raise JobError("no input items: " + "; ".join(unmatched) + "; check inputs.stac")
    return Inputs(unique_names(items), tuple(unmatched))


def unique_names(items: Sequence[Item]) -> tuple[Item, ...]:
    """Every item under a name of its own, so that each input has its own row in the summary
    and the ledger. Items that would share an output name are refused, all of them (none can
    claim the folder): each keeps its own reason, or gets one naming the others, under the name
    ``<name>#<k>``, which is no folder name and collides with nothing."""
    counts = Counter(i.name for i in items)
    seen: Counter[str] = Counter()
    out: list[Item] = []
    for item in items:
        if counts[item.name] == 1:
            out.append(item)
            continue
        seen[item.name] += 1
        paths = [i.path or "?" for i in items if i.name == item.name]
        k = seen[item.name]
        error = item.error or (f"{item.path}: output name {item.name!r} is shared by {len(paths)} inputs (this is "
                               f"#{k} of {', '.join(paths)}); rename them (the manifest's item column)")
        out.append(replace(item, name=f"{item.name}#{seen[item.name]}", error=error))
    return tuple(out)


__all__ = ["SCHEMES", "Inputs", "Item", "Metadata", "discover", "expand_inputs", "folder_suffixes", "item_name",
           "read_manifest", "unique_names"]
