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

import glob
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from ..errors import JobError, SourceError
from ..formats import FORMATS, Kind, folder_suffixes
from ..spec.model import InputSpec
from ..storage import (
    SCHEMES,
    S3Config,
    glob_s3,
    is_s3,
    local_path,
    require_s3,
    split_s3,
    uri_scheme,
    walk_s3,
)
from .input_items import Inputs, Item, Metadata, bad_item_name, item_name, not_a_file, unsupported_scheme
from .manifest import read_manifest
from .stac_items import stac_items

#: Suffixes and marker files of directory stores (one item each, never looked into).
_STORE_SUFFIXES = tuple(dict.fromkeys(s for f in FORMATS if f.store for s in f.suffixes))
_STORE_MARKERS = frozenset(m for f in FORMATS for m in f.markers)


# -- paths and globs --------------------------------------------------------------------------


class _Collector:
    """Items in order without duplicates, and the unmatched messages."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.index: dict[str, int] = {}
        self.unmatched: list[str] = []

    def add(self, item: Item) -> None:
        if item.error is None and (problem := not_a_file(item.path)) is not None:
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


def _inside(path: str, folder: Path) -> bool:
    """Whether the local ``path`` lies in ``folder`` (both resolved)."""
    if uri_scheme(path) is not None:
        return False
    return Path(path).resolve().is_relative_to(folder)


def _identity(path: str) -> str:
    if uri_scheme(path) is not None:
        return path.rstrip("/")
    return str(Path(path).resolve()) if os.path.exists(path) else path


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
    """A hint to ask for DICOM series where ``folder``'s first files are DICOM files (``.dcm``, the
    ``DICM`` mark after the 128-byte preamble, or a bare data set without either, as the series
    reader takes them), which only ``inputs.format: dicom`` reads."""
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
                    head = f.read(132)
            except OSError:
                continue
            if head[128:] == b"DICM":
                return _DICOM_HINT
            if _bare_dicom(head) and _bare_dicom_data_set(path):
                return _DICOM_HINT
    return ""


def _bare_dicom_data_set(path: str, limit: int = 1 << 16) -> bool:
    """Whether the first ``limit`` bytes of ``path`` parse as a DICOM data set with a SOP class
    (pydicom, only for a file whose first bytes look like one; no hint without pydicom)."""
    try:
        import pydicom
    except ImportError:
        return False
    import io
    import warnings

    try:
        with open(path, "rb") as f:
            head = io.BytesIO(f.read(limit))
        with warnings.catch_warnings():  # pydicom's notes on a file that is not DICOM
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(head, force=True, stop_before_pixels=True)
            return "SOPClassUID" in ds
    except Exception:  # pydicom raises many unrelated types for what is not DICOM
        return False


def _bare_dicom(head: bytes) -> bool:
    """Whether ``head`` may start a DICOM data set written without its preamble: the first tag
    in group 0002 or 0008 (little endian), then an explicit VR (two capitals) or an implicit
    VR's short length."""
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    vr = head[4:6]
    return (vr.isalpha() and vr.isupper()) or int.from_bytes(head[4:8], "little") < 1 << 16


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
        problem = unsupported_scheme(raw)
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
    items = [Item(f.name, f.where, error=f.error or bad_item_name(f.name), stac=f.ref) for f in found]
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
