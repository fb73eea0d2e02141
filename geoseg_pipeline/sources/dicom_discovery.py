"""What a folder of DICOM files expands to (``inputs.format: dicom``): one item per image
series, named by where it lies; series that are not one clean volume are items that fail with
their reason; files that are not images (SR, RTSTRUCT, presentation states, DICOMDIR, SEG, ...)
or not DICOM at all are listed and skipped."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..errors import SourceError
from .dicom_series import DicomSeries, FolderScan, is_series_path, scan_folder, split_series_path
from .dicomweb import from_spec, search_series, series_item_path
from .discovery import Item

log = logging.getLogger("geoseg")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "series"


def _base_name(root: str, home: str) -> str:
    rel = os.path.relpath(home, root)
    name = os.path.basename(os.path.abspath(root)) if rel == "." else rel.replace(os.sep, "_")
    return _safe(name)


def _names(root: str, scan: FolderScan) -> dict[str, str]:
    """Output names of the series (and refused series) found under ``root``: their folder
    relative to ``root``, with the series number (or the UID's end) where a folder holds several."""
    # a refused file or folder (a damaged header, images without a series) is named by its path
    homes = [split_series_path(p) if is_series_path(p) else (p, p)
             for p in [*(s.path for s in scan.series), *(r.path for r in scan.refused)]]
    per_home = Counter(home for home, _ in homes)
    numbers = {s.uid: s.info.get("SeriesNumber", "") for s in scan.series}
    names = {}
    for home, uid in homes:
        name = _base_name(root, home)
        if per_home[home] > 1:
            number = numbers.get(uid, "")
            name = f"{name}_s{_safe(number)}" if number else f"{name}_{uid.rsplit('.', 1)[-1]}"
        names[uid] = name
    counts = Counter(names.values())
    return {uid: (n if counts[n] == 1 else f"{n}_{uid.rsplit('.', 1)[-1]}") for uid, n in names.items()}


def web_items(spec: Any) -> tuple[list[Item], list[str]]:
    """The series a DICOMweb server finds for the workflow's query (QIDO-RS), one item each,
    named ``<Modality>_<SeriesNumber>_<the end of the SeriesInstanceUID>`` (no patient data in
    folder names).

    Raises:
        SourceError: the server cannot be reached or refuses the search (the message names it).
    """
    config = from_spec(spec)
    assert config is not None
    found = search_series(config, spec.query)
    items = []
    for s in found:
        name = _safe(f"{s['Modality'] or 'series'}_{s['SeriesNumber'] or 'x'}_{s['series'].rsplit('.', 1)[-1][-10:]}")
        items.append(Item(name, series_item_path(config.url, s["study"], s["series"])))
    messages = [] if items else [f"{config.url}: the DICOMweb server finds no series for {dict(spec.query)}"]
    log.info("%s: %d series found with QIDO-RS %s", config.url, len(items), dict(spec.query))
    return items, messages


def dicom_items(patterns: Sequence[str], dicomweb: Any = None) -> tuple[list[Item], list[str]]:
    """Expand folders (and globs of folders) of DICOM files into series items, then (with
    ``dicomweb``, the workflow's ``inputs.dicomweb``) the series its server finds.

    Returns:
        the items (refused series with ``error`` set), and one message per folder holding no
        image series and per file skipped (not an image, or not DICOM).

    Raises:
        SourceError: the DICOMweb server cannot be reached or refuses the search.
    """
    items: list[Item] = []
    messages: list[str] = []
    seen: set[str] = set()
    for raw in patterns:
        matches = sorted(glob.glob(raw, recursive=True)) if glob.has_magic(raw) else [raw]
        if not matches:
            messages.append(f"{raw}: matches no folder")
        for root in matches:
            try:
                scan = scan_folder(root)
            except SourceError as exc:
                items.append(Item(_safe(os.path.basename(root.rstrip(os.sep))), root, error=str(exc)))
                continue
            names = _names(root, scan)
            for s in scan.series:
                if s.path not in seen:
                    seen.add(s.path)
                    items.append(Item(names[s.uid], s.path))
            for bad in scan.refused:
                if bad.path not in seen:
                    seen.add(bad.path)
                    name = names[split_series_path(bad.path)[1] if is_series_path(bad.path) else bad.path]
                    items.append(Item(name, bad.path, error=f"{bad.path}: {bad.reason}"))
            for skip in scan.skipped:
                messages.append(f"{skip.path}: skipped, {skip.reason}")
            if not scan.series and not scan.refused:
                messages.append(f"{root}: the folder holds no DICOM image series")
            log.info("%s: %d DICOM series, %d refused, %d file(s) skipped", root, len(scan.series),
                     len(scan.refused), len(scan.skipped))
    if dicomweb is not None:
        web, web_messages = web_items(dicomweb)
        items += web
        messages += web_messages
    return items, messages


def describe(series: DicomSeries) -> str:
    """One line about a series for logs: modality, description, slices."""
    info = series.info
    return (f"{info.get('Modality', '?')} {info.get('SeriesDescription', '')!r} "
            f"{series.shape[0]}x{series.shape[1]}x{series.shape[2]}")


__all__ = ["describe", "dicom_items"]
