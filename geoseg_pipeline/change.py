"""Change between two label maps of the same classes (``geoseg change``): a change COG whose value
is ``from x classes + to`` (colour table; nodata where either map's pixel is nodata, or where
a reprojected AFTER does not cover BEFORE), ``transitions.csv``
(pixels, m², ha per (from, to)) and ``net_change.csv`` (per class), streamed strip by strip.

Maps on different grids are refused with the reason unless ``reproject`` (AFTER read through a
nearest-neighbour ``WarpedVRT`` onto BEFORE's grid). Areas as the statistics compute them: planar
from the transform, geodesic per row for geographic CRSs.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window as RioWindow

from .errors import InputDataError, chained_reason, first_line
from .geometry import Grid, Window
from .report.landcover import write_change_report
from .sinks.cog import CogLabelSink
from .sinks.legend import ClassLegend, default_colours
from .statistics.area import pixel_areas

#: Rows read and written at a time (a COG block's height).
STRIP = 512

#: The nodata of a map without one: no value equals it.
NO_NODATA = float("nan")


@dataclass(frozen=True)
class ChangeResult:
    """What one change run wrote, and its transition counts ``(classes, classes)``."""

    change_map: Path
    transitions: Path
    net_change: Path
    counts: np.ndarray
    classes: tuple[str, ...]
    report: Path | None = None


def class_names(path: Path, ds: rasterio.DatasetReader) -> tuple[str, ...]:
    """The class list a geoseg label map records (``GEOSEG_CLASSES``, else ``class_<i>`` band tags).

    Raises:
        InputDataError: the map records none.
    """
    tags = ds.tags()
    if tags.get("GEOSEG_CLASSES"):
        return tuple(tags["GEOSEG_CLASSES"].split(","))
    band = ds.tags(1)
    names = [band[f"class_{i}"] for i in range(len(band)) if f"class_{i}" in band]
    if not names:
        raise InputDataError(f"{path}: no class list (GEOSEG_CLASSES or class_<i> band tags): not a label map")
    return tuple(names)


def _check_same_grid(before: Path, b: rasterio.DatasetReader, after: Path, a: rasterio.DatasetReader) -> str | None:
    if b.crs != a.crs:
        return f"CRS {b.crs} vs {a.crs}"
    if (b.width, b.height) != (a.width, a.height):
        return f"size {b.width} x {b.height} vs {a.width} x {a.height}"
    if not b.transform.almost_equals(a.transform, precision=1e-9 * max(abs(b.transform.a), 1e-12)):
        return f"transform {tuple(b.transform)[:6]} vs {tuple(a.transform)[:6]}"
    return None


def change_maps(before: Path, after: Path, out_dir: Path, reproject: bool = False) -> ChangeResult:
    """Write ``out_dir/change.tif``, ``transitions.csv`` and ``net_change.csv`` for two maps.

    Raises:
        InputDataError: different class lists, or different grids without ``reproject``.
    """
    with _open_map(before) as b, _open_map(after) as a0:
        names = class_names(before, b)
        other = class_names(after, a0)
        if names != other:
            raise InputDataError(f"{after}: its classes {list(other)} differ from {before}'s {list(names)}")
        problem = _check_same_grid(before, b, after, a0)
        if problem and not reproject:
            raise InputDataError(f"{before} and {after} lie on different grids ({problem}); pass --reproject to "
                                 f"resample the second onto the first's grid (nearest)")
        k = len(names)
        if k * k > 65535:
            raise InputDataError(f"{before}: {k} classes make {k * k} transitions, more than a uint16 map holds")
        # A map without a nodata value has none: every value must be a class (NaN equals none).
        nodata_b = b.nodata if b.nodata is not None else NO_NODATA
        nodata_a = a0.nodata if a0.nodata is not None else NO_NODATA
        # What the warp leaves uncovered is nodata: the after map's own nodata value, or, for a
        # map without one, where the warp's alpha band is 0 (no value of the map can stand for it).
        alpha = bool(problem) and a0.nodata is None
        a = WarpedVRT(a0, crs=b.crs, transform=b.transform, width=b.width, height=b.height,
                      resampling=Resampling.nearest, nodata=a0.nodata, add_alpha=alpha) if problem else a0
        grid = Grid((b.height, b.width), b.transform, b.crs.to_wkt() if b.crs else None)
        change_nodata = 255 if k * k <= 255 else 65535
        legend = ClassLegend(tuple(f"{f} -> {t}" for f in names for t in names), _change_colours(k))
        fresh = not out_dir.exists()
        sink = CogLabelSink(out_dir, grid, legend, change_nodata)
        areas = pixel_areas(grid)
        counts = np.zeros((k, k), np.int64)
        area = np.zeros((k, k), np.float64)

        def count(code: np.ndarray, invalid: np.ndarray, r0: int) -> None:
            h = code.shape[0]
            if areas.method == "geodesic" and areas.row_area_m2 is not None:  # the area varies by row
                valid = ~invalid
                rows = np.broadcast_to(np.arange(h)[:, None], (h, b.width))[valid]
                per_row = np.bincount(rows * (k * k) + code[valid], minlength=h * k * k).reshape(h, k * k)
                counts[...] += per_row.sum(axis=0).reshape(k, k)
                area[...] += (per_row * areas.row_area_m2[r0 : r0 + h, None]).sum(axis=0).reshape(k, k)
            else:
                strip = _count_codes(code, k * k).reshape(k, k)
                counts[...] += strip
                if areas.row_area_m2 is not None:
                    area[...] += strip * float(areas.row_area_m2[0])

        def read(r0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            win = RioWindow(0, r0, b.width, min(STRIP, b.height - r0))
            if not alpha:
                return _read(before, b, win), _read(after, a, win), None
            after_and_alpha = _read(after, a, win, (1, 2))
            return _read(before, b, win), after_and_alpha[0], after_and_alpha[1] == 0

        # The next strip is read (GDAL lets go of the GIL) and the last one counted (numpy, for
        # most of its time) on threads of their own while this one is coded and written; one
        # strip at most waits for each.
        helpers = ThreadPoolExecutor(2, thread_name_prefix="geoseg-change")
        counting: Future[None] | None = None
        try:
            dtype = np.dtype(sink.dtype)
            reading = helpers.submit(read, 0)
            for r0 in range(0, b.height, STRIP):
                h = min(STRIP, b.height - r0)
                raw_b, raw_a, uncovered = reading.result()
                if r0 + STRIP < b.height:
                    reading = helpers.submit(read, r0 + STRIP)
                _check_classes(before, raw_b, nodata_b, k, r0)
                _check_classes(after, raw_a, nodata_a, k, r0)  # uncovered pixels read 0, a class
                code, invalid = _code(raw_b, raw_a, nodata_b, nodata_a, k, dtype)
                if uncovered is not None and uncovered.any():
                    invalid |= uncovered
                    code[uncovered] = np.iinfo(dtype).max
                if counting is not None:
                    counting.result()
                counting = helpers.submit(count, code, invalid, r0)
                sink.write(Window((r0, 0), (h, b.width)), code)
            if counting is not None:
                counting.result()
            path = sink.commit()
        except BaseException:
            sink.abort()
            if fresh and out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()  # nothing half-written left behind
            raise
        finally:
            helpers.shutdown(wait=True, cancel_futures=True)
            if a is not a0:
                a.close()
    change = out_dir / "change.tif"
    os.replace(path, change)
    aux = path.with_name(path.name + ".aux.xml")
    if aux.exists():
        os.replace(aux, change.with_name("change.tif.aux.xml"))
    has_area = areas.row_area_m2 is not None
    transitions = out_dir / "transitions.csv"
    with open(transitions, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["from_class", "to_class", "from_index", "to_index", "pixels", "area_m2", "area_ha"])
        for i in range(k):
            for j in range(k):
                m2 = float(area[i, j]) if has_area else None
                w.writerow([names[i], names[j], i, j, int(counts[i, j]), _num(m2), _num(m2 / 1e4 if m2 else m2)])
    net = out_dir / "net_change.csv"
    with open(net, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "index", "before_pixels", "after_pixels", "net_pixels", "net_area_m2", "net_area_ha"])
        for i in range(k):
            before_px, after_px = int(counts[i].sum()), int(counts[:, i].sum())
            m2 = float(area[:, i].sum() - area[i].sum()) if has_area else None
            w.writerow([names[i], i, before_px, after_px, after_px - before_px, _num(m2),
                        _num(m2 / 1e4 if m2 is not None else None)])
    report = write_change_report(out_dir, change, names, counts, area if has_area else None,
                                 f"Change: {before} → {after}")
    return ChangeResult(change, transitions, net, counts, names, report)


@dataclass(frozen=True)
class ChangeRuns:
    """What :func:`change_runs` did: the items changed, those it could not change (item:
    reason), and the items of one folder only (item: which)."""

    done: dict[str, ChangeResult]
    failed: dict[str, str]
    unmatched: dict[str, str] = field(default_factory=dict)


def change_runs(before: Path, after: Path, out_dir: Path, reproject: bool = False) -> ChangeRuns:
    """Two label maps, or two run output folders matched by item (``<item>/labels.tif`` in
    both): the change of each into ``out_dir`` (``out_dir/<item>/`` for folders). An item that
    cannot be compared (a damaged map, other classes) is reported in ``failed``, one in a single
    folder in ``unmatched``; the others are still compared.

    Raises:
        InputDataError: a path does not exist; not two maps or two folders; the folders share no
            item; two maps given as files that cannot be compared (see :func:`change_maps`).
    """
    for path in (before, after):
        if not path.exists():
            raise InputDataError(f"{path}: no such file or folder")
    if before.is_file() and after.is_file():
        return ChangeRuns({before.stem: change_maps(before, after, out_dir, reproject)}, {})
    if not (before.is_dir() and after.is_dir()):
        raise InputDataError(f"{before} and {after}: give two label maps or two output folders of runs, "
                             "not one of each")
    in_before = {p.parent.name for p in before.glob("*/labels.tif")}
    in_after = {p.parent.name for p in after.glob("*/labels.tif")}
    items = sorted(in_before & in_after)
    if not items:
        raise InputDataError(f"{before} and {after} share no item (<item>/labels.tif in both)")
    unmatched = {i: f"only in {before if i in in_before else after}" for i in sorted(in_before ^ in_after)}
    failed = {}
    done = {}
    for i in items:
        try:
            done[i] = change_maps(before / i / "labels.tif", after / i / "labels.tif", out_dir / i, reproject)
        except (InputDataError, OSError) as exc:
            failed[i] = str(exc)
    return ChangeRuns(done, failed, unmatched)


@contextmanager
def _open_map(path: Path) -> Iterator[rasterio.DatasetReader]:
    """``path`` opened as a one-band integer label map.

    Raises:
        InputDataError: it cannot be opened, has more than one band or non-integer values.
    """
    try:
        ds = rasterio.open(path)
    except RasterioError as exc:
        raise InputDataError(f"{path}: cannot be read as a label map: {first_line(exc)}") from None
    with ds:
        if ds.count != 1:
            raise InputDataError(f"{path}: has {ds.count} bands; a label map has one")
        if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
            raise InputDataError(f"{path}: holds {ds.dtypes[0]} values; a label map holds class indices (integers)")
        yield ds


def _read(path: Path, ds: rasterio.DatasetReader | WarpedVRT, window: RioWindow,
          bands: int | tuple[int, ...] = 1) -> np.ndarray:
    try:
        data: np.ndarray = ds.read(bands, window=window)
    except RasterioError as exc:
        raise InputDataError(f"{path}: cannot read rows {window.row_off}..{window.row_off + window.height - 1} "
                             f"(damaged or truncated?): {chained_reason(exc)}") from None
    return data


def _check_classes(path: Path, labels: np.ndarray, nodata: float, k: int, r0: int) -> None:
    """Refuse label values that are neither a class (``0..k-1``) nor the map's nodata.

    Two reductions decide for most strips (every value a class; an unsigned map whose nodata is
    its type's largest value); the element-wise test runs only where they cannot.

    Raises:
        InputDataError: naming the first such value and where it lies.
    """
    lo, hi = labels.min(), labels.max()
    if lo >= 0 and hi < k:
        return
    info = np.iinfo(labels.dtype)
    # Where nodata is an unsigned type's largest value, ``labels - k`` wraps class values to the
    # top of the type and nodata to ``nodata - k``: anything below that is neither.
    if info.min == 0 and nodata == info.max and k <= nodata and (labels - labels.dtype.type(k)).min() >= nodata - k:
        return
    outside = (labels < 0) | (labels >= k) if info.min < 0 else labels >= k
    if nodata == nodata:  # not NaN
        outside &= labels != nodata
    if outside.any():
        row, col = (int(v[0]) for v in np.nonzero(outside))
        value = f"{path}: value {int(labels[row, col])} at row {r0 + row}, col {col}"
        classes = f"its {k} classes (0..{k - 1})"
        raise InputDataError(f"{value} is neither one of {classes} nor its nodata ({nodata:g})" if nodata == nodata
                             else f"{value} is not one of {classes}, and the map has no nodata value")


def _code(before: np.ndarray, after: np.ndarray, nodata_b: float, nodata_a: float, k: int,
          dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The change codes ``from * k + to`` of a strip of checked labels, in ``dtype``, the type's
    largest value where either map has nodata; and that nodata mask."""
    invalid = np.maximum(before, after) >= k  # a nodata value of k or more is not a class already
    if nodata_b < k:  # a class value, or below 0 (signed maps)
        invalid |= before == nodata_b
    if nodata_a < k:
        invalid |= after == nodata_a
    code = before.astype(dtype) * dtype.type(k)  # values outside the type only where invalid
    code += after.astype(dtype, copy=False)
    code |= np.negative(invalid.view(np.uint8).astype(dtype, copy=False))  # 0 or all bits set
    return code, invalid


def _count_codes(code: np.ndarray, bins: int) -> np.ndarray:
    """``np.bincount(code)[:bins]``; a uint8 map is counted two pixels at a time (pairs of bytes
    read as one uint16, both bytes' counts summed), which halves the cast to indices that
    dominates counting."""
    flat = code.ravel()
    if flat.dtype != np.uint8:
        counted: np.ndarray = np.bincount(flat, minlength=bins)[:bins]
        return counted
    pairs = np.bincount(flat[: flat.size & ~1].view(np.uint16), minlength=65536).reshape(256, 256)
    counts: np.ndarray = pairs.sum(axis=0) + pairs.sum(axis=1)
    if flat.size & 1:
        counts[flat[-1]] += 1
    return counts[:bins]


def _change_colours(k: int) -> tuple[str, ...]:
    """Unchanged pixels in a light grey, each change in a distinct colour."""
    distinct = iter(default_colours(k * k))
    return tuple("#e0e0e0" if f == t else next(distinct) for f in range(k) for t in range(k))


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


__all__ = ["ChangeResult", "ChangeRuns", "change_maps", "change_runs", "class_names"]
