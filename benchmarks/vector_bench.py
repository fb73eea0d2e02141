#!/usr/bin/env python
"""Polygon outputs (issue 15 item 1): geoseg's block-by-block ``GeoParquetSink`` against the
whole-map polygonize users write today, side by side in one run, on the same generated label maps.

The map: a ``--size``² uint8 land-cover label map of 6 classes with nodata 255, made reproducibly
with numpy and computable block by block (every pixel is a function of its row and column and of
small seeded coarse grids): a 1024-pixel class grid, 35 % of its 128-pixel cells and 10 % of its
16-pixel cells overwritten by other classes, all three grids warped by smooth sines (so that region
edges are staircases that cross the 512-pixel blocks anywhere), 0.2 % single-pixel speckle, and
nodata in the bottom-right corner beyond ``row + col > 1.8 size`` and in 2 % of the 128-pixel
cells. Regions range from one pixel to large ones spanning many blocks (same-class neighbours of
the coarse grid merge).

Contenders, each run in a fresh subprocess (``python vector_bench.py _child ...``):

* ``ours``: ``GeoParquetSink(out, grid, legend, 255, row_area_m2=...)`` fed the map in 512 × 512
  blocks, row-major, each block generated when it is written (the map never exists whole), then
  ``commit()``.
* ``reference``: the same map built whole in memory (the same block function into one array),
  ``rasterio.features.shapes(labels, mask=labels != 255, transform=grid.transform)``, shapely
  geometries, a GeoDataFrame with the same fields (class_index, class_name, pixels, area_m2,
  area_ha), ``to_parquet(compression="zstd", write_covering_bbox=True)`` (ours writes zstd and a
  bbox covering column too).

Grid: 10 m pixels, ``Affine(10, 0, 600000, 0, -10, 5000000)``, EPSG:32632; connectivity 4.

Reported per size (medians of ``--repeats``; sizes and contenders alternate within a repeat):

* ``work_s``: seconds of the contender's own work, timed in the child after its imports and
  excluding the generation of the map (per block for ours, whole for the reference);
  ``wall_s``: the subprocess from launch to exit (imports and generation included).
* ``peak_rss_mib``: the child's peak resident set (``VmHWM`` of ``/proc/self/status``, read when the
  output is written and before any check; ``ru_maxrss`` of ``getrusage(RUSAGE_SELF)`` is recorded
  too: it also counts the parent's RSS at the ``exec``); ``import_rss_mib``: the same right after
  the imports, before any work; ``setup_rss_mib``: after the sink's constructor (ours: it loads the
  vector extra it writes with: shapely and pyarrow) or after the whole map was built (the reference).
* ``features``: the number of polygons; asserted equal for both contenders, as is a digest of the
  sorted (class, pixel count) pairs of all features (read back from the written files after the
  peak was taken).
* ratios ours / reference of ``work_s``, ``wall_s`` and ``peak_rss_mib``.

Run it (about 3-4 min on a quiet 2-core machine for the defaults)::

    .venv/bin/python benchmarks/vector_bench.py [--sizes 2048,4096,8192] [--repeats 3] \\
        [--report docs/bench/vector-2026-12-04.json] [--reference-sizes 2048,4096,8192]

``--reference-sizes`` limits the sizes at which the reference runs (by default all of them).
Prints a table and writes the raw results (machine, configuration, every run, medians, ratios)
as JSON to ``--report``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BLOCK = 512
CLASSES = 6
NODATA = 255
NAMES = ("water", "forest", "grassland", "cropland", "built-up", "bare")
COLOURS = ("#1f77b4", "#2ca02c", "#bcbd22", "#ff7f0e", "#d62728", "#8c564b")
TRANSFORM = (10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)
EPSG = 32632
PIXEL_M2 = 100.0
SEED = 20261204
CELLS = (1024, 128, 16)  # the coarse grids' cell sides, pixels
WARP = 24  # the sines' amplitude bound (pixels): the grids are offset by it to stay non-negative
RESULT_TAG = "VECTOR_BENCH "


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the map ---------------------------------------------------------------------------------


class LabelMap:
    """The generated map of side ``size``: any block from its row and column ranges alone."""

    def __init__(self, size: int) -> None:
        rng = np.random.default_rng([SEED, size])
        n = [(size + 2 * WARP) // c + 2 for c in CELLS]
        self.size = size
        self.big = rng.integers(0, CLASSES, (n[0], n[0])).astype(np.uint8)
        self.mid = rng.integers(0, CLASSES, (n[1], n[1])).astype(np.uint8)
        self.mid_on = rng.random((n[1], n[1])) < 0.35
        self.mid_nodata = rng.random((n[1], n[1])) < 0.02
        self.small = rng.integers(0, CLASSES, (n[2], n[2])).astype(np.uint8)
        self.small_on = rng.random((n[2], n[2])) < 0.10

    def block(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        r = np.arange(r0, r0 + h, dtype=np.int64)[:, None]
        c = np.arange(c0, c0 + w, dtype=np.int64)[None, :]
        # smooth warps (|dr|, |dc| <= 20 < WARP): staircase edges instead of straight ones
        dr = np.rint(12 * np.sin(c / 37.0) + 8 * np.sin((r + c) / 53.0)).astype(np.int64)
        dc = np.rint(12 * np.sin(r / 41.0) + 8 * np.sin((r - c) / 61.0)).astype(np.int64)
        rr, cc = r + dr + WARP, c + dc + WARP
        labels = self.big[rr // CELLS[0], cc // CELLS[0]]
        mi, mj = rr // CELLS[1], cc // CELLS[1]
        labels = np.where(self.mid_on[mi, mj], self.mid[mi, mj], labels)
        si, sj = rr // CELLS[2], cc // CELLS[2]
        labels = np.where(self.small_on[si, sj], self.small[si, sj], labels)
        # speckle: a hash of the pixel's position, 0.2 % of pixels get a class of their own
        mask32 = np.uint64(0xFFFFFFFF)
        h32 = (((r.astype(np.uint64) * np.uint64(73856093)) ^ (c.astype(np.uint64) * np.uint64(19349663)))
               * np.uint64(2654435761)) & mask32
        h32 = ((h32 ^ (h32 >> np.uint64(13))) * np.uint64(1274126177)) & mask32
        labels = np.where(h32 < np.uint64(0.002 * 2**32), (h32 % np.uint64(CLASSES)).astype(np.uint8), labels)
        nodata = self.mid_nodata[mi, mj] | (r + c > int(1.8 * self.size))
        return np.where(nodata, np.uint8(NODATA), labels).astype(np.uint8)

    def windows(self) -> list[tuple[int, int, int, int]]:
        return [(r0, c0, min(BLOCK, self.size - r0), min(BLOCK, self.size - c0))
                for r0 in range(0, self.size, BLOCK) for c0 in range(0, self.size, BLOCK)]

    def whole(self) -> np.ndarray:
        out = np.empty((self.size, self.size), np.uint8)
        for r0, c0, h, w in self.windows():
            out[r0:r0 + h, c0:c0 + w] = self.block(r0, c0, h, w)
        return out


# -- the child: one measurement ----------------------------------------------------------------


def _vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _digest(class_index: np.ndarray, pixels: np.ndarray) -> str:
    order = np.lexsort((pixels, class_index))
    pairs = np.stack([class_index[order].astype(np.int64), pixels[order].astype(np.int64)], axis=1)
    return hashlib.sha1(np.ascontiguousarray(pairs).tobytes()).hexdigest()[:16]


def child_main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="vector_bench.py _child")
    p.add_argument("who", choices=("ours", "reference"))
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    result = _ours(args.size, args.out) if args.who == "ours" else _reference(args.size, args.out)
    print(RESULT_TAG + json.dumps(result), flush=True)


def _ours(size: int, out: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from affine import Affine
    from rasterio.crs import CRS

    from geoseg_pipeline.geometry import Grid, Window
    from geoseg_pipeline.sinks import ClassLegend
    from geoseg_pipeline.sinks.vector import GeoParquetSink

    import_rss = _vm_hwm_mib()
    t0 = time.perf_counter()
    grid = Grid((size, size), Affine(*TRANSFORM), CRS.from_epsg(EPSG).to_wkt())
    legend = ClassLegend(NAMES, COLOURS)
    sink = GeoParquetSink(out, grid, legend, NODATA, row_area_m2=np.full(size, PIXEL_M2))
    setup_rss = _vm_hwm_mib()  # the sink's constructor loads shapely and pyarrow
    labels_map = LabelMap(size)
    gen_s = 0.0
    for r0, c0, h, w in labels_map.windows():
        g0 = time.perf_counter()
        block = labels_map.block(r0, c0, h, w)
        gen_s += time.perf_counter() - g0
        sink.write(Window((r0, c0), (h, w)), block)
    path = sink.commit()
    total_s = time.perf_counter() - t0
    peak, maxrss = _vm_hwm_mib(), _maxrss_mib()
    table = pq.read_table(path, columns=["class_index", "pixels"])
    ci, px = table["class_index"].to_numpy(), table["pixels"].to_numpy()
    return {"work_s": total_s - gen_s, "gen_s": gen_s, "peak_rss_mib": peak, "ru_maxrss_mib": maxrss,
            "import_rss_mib": import_rss, "setup_rss_mib": setup_rss, "features": int(sink.features), "rows": len(ci),
            "digest": _digest(ci, px), "file_mib": path.stat().st_size / 2**20}


def _reference(size: int, out: Path) -> dict[str, Any]:
    import geopandas as gpd
    import pyarrow.parquet as pq
    import shapely
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.features import shapes
    from shapely.geometry import shape

    import_rss = _vm_hwm_mib()
    t0 = time.perf_counter()
    labels = LabelMap(size).whole()
    gen_s = time.perf_counter() - t0
    setup_rss = _vm_hwm_mib()  # the map in memory
    transform = Affine(*TRANSFORM)
    geoms, values = [], []
    for geom, value in shapes(labels, mask=labels != NODATA, transform=transform):
        geoms.append(shape(geom))
        values.append(int(value))
    class_index = np.array(values, np.int32)
    geometry = np.array(geoms, dtype=object)
    area = shapely.area(geometry)
    gdf = gpd.GeoDataFrame({
        "class_index": class_index,
        "class_name": np.array(NAMES, dtype=object)[class_index],
        "pixels": np.rint(area / PIXEL_M2).astype(np.int64),
        "area_m2": area,
        "area_ha": area / 10_000.0,
    }, geometry=geometry, crs=CRS.from_epsg(EPSG).to_wkt())
    out.mkdir(parents=True, exist_ok=True)
    path = out / "labels.parquet"
    gdf.to_parquet(path, compression="zstd", write_covering_bbox=True)
    total_s = time.perf_counter() - t0
    peak, maxrss = _vm_hwm_mib(), _maxrss_mib()
    table = pq.read_table(path, columns=["class_index", "pixels"])
    ci, px = table["class_index"].to_numpy(), table["pixels"].to_numpy()
    nodata = float((labels == NODATA).mean())
    shares = np.bincount(labels.ravel(), minlength=256)[:CLASSES] / labels.size
    return {"work_s": total_s - gen_s, "gen_s": gen_s, "peak_rss_mib": peak, "ru_maxrss_mib": maxrss,
            "import_rss_mib": import_rss, "setup_rss_mib": setup_rss, "features": len(gdf), "rows": len(ci),
            "digest": _digest(ci, px), "file_mib": path.stat().st_size / 2**20, "nodata_share": nodata,
            "class_shares": [round(float(s), 4) for s in shares]}


# -- the parent ------------------------------------------------------------------------------


def measure(who: str, size: int, work: Path, repeat: int) -> dict[str, Any]:
    out = work / f"{who}-{size}-r{repeat}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", who, "--size", str(size), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{who} at {size}² failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith(RESULT_TAG))
    shutil.rmtree(out, ignore_errors=True)
    return {"who": who, "size": size, "repeat": repeat, "wall_s": wall, **json.loads(line[len(RESULT_TAG):])}


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    import rasterio

    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {name: v(name) for name in ("shapely", "pyarrow", "rasterio", "geopandas", "numpy", "scipy",
                                                "pyproj", "geoseg-pipeline")} | {"gdal": rasterio.__gdal_version__},
        "loadavg_start": list(os.getloadavg()),
    }


def summarize(runs: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"size": size, "pixels": size * size}
        for who in ("ours", "reference"):
            mine = [r for r in runs if r["size"] == size and r["who"] == who]
            if not mine:
                continue
            row[who] = {k: statistics.median(r[k] for r in mine)
                        for k in ("work_s", "wall_s", "gen_s", "peak_rss_mib", "ru_maxrss_mib", "import_rss_mib",
                                  "setup_rss_mib", "file_mib")}
            row[who]["features"] = mine[0]["features"]
            row[who]["repeats"] = len(mine)
        if "ours" in row and "reference" in row:
            o, r = row["ours"], row["reference"]
            row["ratio_work_s"] = o["work_s"] / r["work_s"]
            row["ratio_wall_s"] = o["wall_s"] / r["wall_s"]
            row["ratio_peak_rss"] = o["peak_rss_mib"] / r["peak_rss_mib"]
            row["ratio_peak_rss_above_imports"] = ((o["peak_rss_mib"] - o["import_rss_mib"])
                                                   / (r["peak_rss_mib"] - r["import_rss_mib"]))
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| size | features | ours work s | ref work s | work ours/ref | ours wall s | ref wall s | "
            "wall ours/ref | ours peak RSS MiB | ref peak RSS MiB | RSS ours/ref |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def f(x: Any, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    for row in rows:
        o, r = row.get("ours", {}), row.get("reference", {})
        lines.append(
            f"| {row['size']}² | {o.get('features', r.get('features'))} | {f(o.get('work_s'), '.2f')} | "
            f"{f(r.get('work_s'), '.2f')} | {f(row.get('ratio_work_s'), '.2f')} | {f(o.get('wall_s'), '.2f')} | "
            f"{f(r.get('wall_s'), '.2f')} | {f(row.get('ratio_wall_s'), '.2f')} | {f(o.get('peak_rss_mib'), '.0f')} | "
            f"{f(r.get('peak_rss_mib'), '.0f')} | {f(row.get('ratio_peak_rss'), '.2f')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2048,4096,8192", help="map sides, comma-separated")
    ap.add_argument("--reference-sizes", default=None, help="sizes at which the reference runs (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report", type=Path, default=None, help="write the raw results here (JSON)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ref_sizes = set(sizes if args.reference_sizes is None else (int(s) for s in args.reference_sizes.split(",")))
    work = args.work or Path(tempfile.mkdtemp(prefix="vector-bench-"))
    env = machine()
    started = time.time()
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for size in sizes:
            order = ["ours", "reference"] if (rep + sizes.index(size)) % 2 == 0 else ["reference", "ours"]
            for who in order:
                if who == "reference" and size not in ref_sizes:
                    continue
                run = measure(who, size, work, rep)
                runs.append(run)
                log(f"r{rep} {size}² {who}: work {run['work_s']:.2f} s (+ gen {run['gen_s']:.2f}), "
                    f"wall {run['wall_s']:.2f} s, peak RSS {run['peak_rss_mib']:.0f} MiB, "
                    f"{run['features']} features")
    for size in sizes:  # same polygons from both, every repeat
        mine = [r for r in runs if r["size"] == size]
        counts = {(r["features"], r["rows"], r["digest"]) for r in mine}
        assert len(counts) == 1, f"{size}²: the contenders disagree: {counts}"
    rows = summarize(runs, sizes)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    env["loadavg_end"] = list(os.getloadavg())
    report = {
        "benchmark": "vector_bench.py",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": env,
        "config": {"sizes": sizes, "reference_sizes": sorted(ref_sizes), "repeats": args.repeats, "block": BLOCK,
                   "classes": CLASSES, "nodata": NODATA, "connectivity": 4, "transform": TRANSFORM,
                   "crs": f"EPSG:{EPSG}", "seed": SEED, "map_cells": CELLS, "speckle": 0.002},
        "maps": {str(r["size"]): {k: r[k] for k in ("nodata_share", "class_shares")}
                 for r in runs if r["who"] == "reference" and r["repeat"] == 0},
        "elapsed_s": round(time.time() - started, 1),
        "medians": rows,
        "runs": runs,
        "notes": [
            "work_s: the contender's own seconds in its child process, after imports, excluding the map's "
            "generation; wall_s: the subprocess launch to exit.",
            "peak_rss_mib: VmHWM of the child read right after the output was written; import_rss_mib: the same "
            "after the imports; setup_rss_mib: after the sink's constructor (ours) or the whole map's generation "
            "(reference). ru_maxrss_mib is getrusage(RUSAGE_SELF) at the same moment as peak_rss_mib.",
            "features and the digest of sorted (class_index, pixels) pairs are asserted equal for both contenders.",
        ],
    }
    print(table(rows))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        log(f"wrote {args.report}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2:])
    else:
        main()
