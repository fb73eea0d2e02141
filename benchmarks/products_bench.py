#!/usr/bin/env python
"""What polygons and zonal statistics add to a raster job (issue 15's target: "On an 8192² map
with 10 classes: polygons + zonal statistics add <= 30 % to the job's time and nothing to its
peak memory's growth with image size").

Per ``--sizes`` (default 4096 and 8192), on the same generated scene, side by side in one run
(sizes and contenders alternated within each repeat, the contenders' order rotated from one
repeat to the next, medians of ``--repeats`` reported), each contender a ``geoseg --no-progress
run --force WORKFLOW`` subprocess writing to a fresh output folder:

* ``cog``: ``output.formats: [cog]``, the job without the new products;
* ``cog_parquet``: ``output.formats: [cog, geoparquet]`` (``labels.parquet``: one polygon per
  connected region, 4-connectivity);
* ``cog_parquet_zones``: the same plus ``statistics.zones: {path: districts.gpkg, id_field:
  NAME}`` (``zones.csv``, ``zones_summary.csv``).

Common settings: roi 256, overlap 0.25, batch 8, block 512, ``resources.backend: local`` with 2
workers of 1 CPU.

* **Scene**: ``geoseg_pipeline.demo.scenes.write_landcover_scene(path, size, size, seed)``: 4-band
  uint16, EPSG:32633, 10 m pixels, nodata in the top-right triangle (8 %); generated once and
  cached under ``--out``/data.
* **Model**: a cheap TorchScript nearest-prototype classifier of 10 classes, so that the label map
  looks like land cover (many regions of all sizes), not a constant map: the bands (/ 10000)
  averaged over a 7 × 7 neighbourhood (``avg_pool2d``, stride 1), then a 1 × 1 convolution whose
  logit for class k is ``(2 x·p_k - |p_k|²) / T`` (the negative squared distance to the
  prototype spectrum ``p_k``, up to a term common to all classes). The 10 prototypes lie on the
  scene generator's end-member segments (water: 2, vegetation: 3, bare soil: 2, built-up: 3),
  jittered by 2 % (seeded). ``torch.jit.script``, saved once.
* **Zones**: 60 districts (6 rows × 10 columns of quadrilaterals whose inner vertices are jittered
  by up to 30 % of a cell, seeded; the outer ones 1 % beyond the scene), so that every valid
  pixel is in exactly one district; reprojected vertex by vertex to EPSG:4326 and written as a
  GeoPackage with the field ``NAME`` (geopandas). geoseg reprojects them back to the scene's CRS.

Reported per size and contender: ``wall_s`` (the subprocess from launch to exit: start-up,
inference, the sinks, the COG's overviews), ``job_s`` (``summary.json``'s ``seconds``), ``cpu_s``
(CPU seconds of the process tree: what the products cost when the machine is busy), peak PSS
of the process tree (``bench_memory.MemorySampler``, as ``ceiling_bench.py``), the polygons
written (``labels.parquet`` rows) and the ``zones.csv`` / ``zones_summary.csv`` rows. Then the
ratios ``cog_parquet / cog`` and ``cog_parquet_zones / cog`` of the wall, job and CPU seconds, the
peak PSS each contender adds to ``cog``, and each contender's peak PSS growth from the smallest
to the largest size, with the growth it adds to ``cog``'s. Checks: at the largest size, the wall
ratios <= 1.3; the extra growth <= 32 MiB (a tolerance for the sampler: PSS is read exactly every
``--pss-every`` seconds; repeats of one contender differ by up to about 100 MiB).

The model is far cheaper than a real one, so the ratios are an upper bound: with a real model the
same extra work is a smaller share of the job. ``--model unet`` measures that: the same label map
(the prototype logits) with a MONAI ``UNet(2, 4, 10, channels=(16, 32, 64, 128), strides=(2, 2,
2), num_res_units=2)`` of random weights run on every window and added with weight zero, so the
job pays a small real segmentation network's compute and writes the same polygons and zones.

Run it on a quiet machine (each run's 1-minute load average is recorded) and no edits to the
package meanwhile (the commit and changed files at the start and end are recorded). About 7 min
on a 2-core machine for the defaults (8 min for ``--sizes 8192 --repeats 2 --model unet``), plus
some 15 s to generate the scenes the first time::

    .venv/bin/python benchmarks/products_bench.py [--sizes 4096,8192] [--repeats 3] [--model prototypes|unet] \\
        [--report docs/bench/products-2026-12-04.json] [--out bench-output/products]

Prints a Markdown table; writes the raw results (machine, configuration, every run, medians,
ratios, checks) as JSON to ``--report`` and to ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from bench_runs import Run, fail, fill_run, log, measured

SEED = 20261204
ROI = 256
OVERLAP = 0.25
BATCH = 8
BLOCK = 512
WORKERS = 2
CLASSES = 10
SMOOTH = 7  # the model's averaging window, pixels
TEMPERATURE = 0.01  # the model's logit scale (reflectance², argmax does not depend on it)
ZONE_GRID = (6, 10)  # district rows, columns
ZONE_JITTER = 0.3  # inner vertices move by up to this fraction of a cell
ZONE_MARGIN = 0.01  # the outer vertices lie this fraction of the scene beyond its edges
EXTRA_GROWTH_MIB = 32.0
TIME_RATIO = 1.3

# The scene generator's end-members (geoseg_pipeline.demo.scenes), reflectance x 10000, bands
# blue, green, red, NIR; per class: (first, second end-member, prototypes along the segment).
ENDMEMBERS = (
    ("water", (700, 600, 350, 180), (1000, 1150, 950, 600), ("clear", "turbid")),
    ("vegetation", (280, 520, 280, 2600), (500, 850, 600, 4000), ("forest", "mixed", "cropland")),
    ("bare_soil", (1250, 1650, 2200, 3000), (700, 950, 1250, 1700), ("dry", "moist")),
    ("built_up", (1650, 1700, 1750, 2000), (900, 950, 1000, 1150), ("concrete", "mixed", "dark_roofs")),
)
CONTENDERS: dict[str, dict[str, Any]] = {
    "cog": {"formats": ["cog"], "zones": False},
    "cog_parquet": {"formats": ["cog", "geoparquet"], "zones": False},
    "cog_parquet_zones": {"formats": ["cog", "geoparquet"], "zones": True},
}


# -- inputs ------------------------------------------------------------------------------------


def prototypes() -> tuple[list[str], np.ndarray]:
    """Class names and ``(CLASSES, 4)`` prototype spectra (reflectance, 0-1)."""
    rng = np.random.default_rng([SEED, 1])
    names, protos = [], []
    for klass, first, second, parts in ENDMEMBERS:
        a, b = np.array(first, np.float64), np.array(second, np.float64)
        for i, part in enumerate(parts):
            t = (i + 0.5) / len(parts)
            names.append(f"{klass}_{part}")
            protos.append((a + t * (b - a)) * (1.0 + 0.02 * rng.standard_normal(4)) / 10_000.0)
    assert len(names) == CLASSES
    return names, np.array(protos)


def make_model(path: Path, unet: bool = False) -> Path:
    """The nearest-prototype TorchScript model (see the module doc); written once. With ``unet``,
    the same map at the cost of a real segmentation network: a MONAI UNet (channels 16-32-64-128,
    strides 2, two residual units) runs on every window too and its logits are added with weight
    zero, so the label map, the polygons and the zones stay those of the cheap model."""
    if path.exists():
        return path
    import torch

    _, protos = prototypes()

    class Prototypes(torch.nn.Module):
        def __init__(self, weight: torch.Tensor, bias: torch.Tensor, smooth: int) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], 1)
            with torch.no_grad():
                self.conv.weight.copy_(weight[:, :, None, None])
                self.conv.bias.copy_(bias)
            self.smooth = smooth

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.avg_pool2d(x * 1e-4, self.smooth, stride=1, padding=self.smooth // 2,
                                               count_include_pad=False)
            return self.conv(x)

    class WithUnet(torch.nn.Module):
        def __init__(self, cheap: torch.nn.Module, net: torch.nn.Module) -> None:
            super().__init__()
            self.cheap, self.net = cheap, net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.cheap(x) + 0.0 * self.net(x * 1e-4)

    p = torch.tensor(protos, dtype=torch.float32)
    model: torch.nn.Module = Prototypes(2.0 * p / TEMPERATURE, -(p * p).sum(dim=1) / TEMPERATURE, SMOOTH).eval()
    if unet:
        from monai.networks.nets import UNet

        torch.manual_seed(SEED)
        net = UNet(2, 4, CLASSES, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
        model = WithUnet(model, net).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.jit.script(model).save(str(tmp))
    os.replace(tmp, path)
    return path


def ensure_scene(path: Path, size: int) -> Path:
    """The generated scene of ``size``², written once (to a temporary name, then renamed)."""
    if path.exists():
        return path
    from geoseg_pipeline.demo.scenes import write_landcover_scene

    log(f"generating the {size}² scene {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.tif")
    t0 = time.perf_counter()
    write_landcover_scene(tmp, size, size, SEED + size)
    os.replace(tmp, path)
    log(f"  {time.perf_counter() - t0:.1f} s")
    return path


def make_zones(path: Path, scene: Path) -> Path:
    """60 jittered quadrilaterals covering ``scene``, in EPSG:4326, field ``NAME`` (GeoPackage)."""
    if path.exists():
        return path
    import geopandas as gpd
    import rasterio
    import shapely
    from pyproj import Transformer

    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    rows, cols = ZONE_GRID
    mx, my = ZONE_MARGIN * (right - left), ZONE_MARGIN * (top - bottom)
    xs = np.linspace(left - mx, right + mx, cols + 1)
    ys = np.linspace(top + my, bottom - my, rows + 1)
    gx, gy = np.meshgrid(xs, ys)  # (rows + 1, cols + 1) vertices
    rng = np.random.default_rng([SEED, 2])
    jx = rng.uniform(-ZONE_JITTER, ZONE_JITTER, gx.shape) * (xs[1] - xs[0])
    jy = rng.uniform(-ZONE_JITTER, ZONE_JITTER, gy.shape) * (ys[0] - ys[1])
    # vertices on the outer edges move only along them; the corners stay
    gx = gx + jx * ~np.isin(np.arange(cols + 1), (0, cols))[None, :]
    gy = gy + jy * ~np.isin(np.arange(rows + 1), (0, rows))[:, None]
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(gx, gy)
    polygons, names = [], []
    for i in range(rows):
        for j in range(cols):
            ring = [(lon[i, j], lat[i, j]), (lon[i + 1, j], lat[i + 1, j]), (lon[i + 1, j + 1], lat[i + 1, j + 1]),
                    (lon[i, j + 1], lat[i, j + 1])]
            polygon = shapely.orient_polygons(shapely.Polygon(ring))
            assert polygon.is_valid, f"district {i},{j} is not a valid polygon"
            polygons.append(polygon)
            names.append(f"D{i + 1}-{j + 1:02d}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.gpkg")
    tmp.unlink(missing_ok=True)
    gpd.GeoDataFrame({"NAME": names}, geometry=polygons, crs="EPSG:4326").to_file(tmp, driver="GPKG",
                                                                                   layer="districts")
    os.replace(tmp, path)
    return path


def git_state() -> dict[str, Any]:
    """The package's commit and its uncommitted changes (the figures belong to that code)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    changed = git("status", "--porcelain", "--", "geoseg_pipeline").splitlines()
    return {"head": git("rev-parse", "HEAD"), "changed": changed}


# -- the runs ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out.resolve()
        self.geoseg = str(Path(sys.executable).parent / "geoseg")
        self.runs: list[Run] = []
        self.names, _ = prototypes()

    def prepare(self) -> None:
        data = self.out / "data"
        unet = self.args.model == "unet"
        self.model = make_model(self.out / "models" / f"prototypes{CLASSES}{'_unet' if unet else ''}.pt", unet)
        self.scenes = {s: ensure_scene(data / f"scene_{s}.tif", s) for s in self.args.sizes}
        self.zones = {s: make_zones(data / f"districts_{s}.gpkg", self.scenes[s]) for s in self.args.sizes}

    def workflow(self, size: int, contender: str) -> tuple[Path, Path]:
        spec = CONTENDERS[contender]
        out_dir = self.out / "runs" / f"{contender}_{size}"
        wf: dict[str, Any] = {
            "version": 1, "name": f"products-{contender}-{size}",
            "inputs": {"paths": [str(self.scenes[size])]},
            "model": {"type": "torchscript", "path": str(self.model), "in_channels": 4, "num_classes": CLASSES},
            "tiling": {"roi_size": ROI, "overlap": OVERLAP, "batch_size": BATCH, "block_size": BLOCK},
            "output": {"directory": str(out_dir), "formats": list(spec["formats"])},
            "resources": {"workers": WORKERS, "cpus_per_worker": 1, "backend": "local"},
            "classes": [{"name": n} for n in self.names],
        }
        if spec["zones"]:
            wf["statistics"] = {"zones": {"path": str(self.zones[size]), "id_field": "NAME"}}
        path = self.out / "workflows" / f"{contender}_{size}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(wf, sort_keys=False))
        return path, out_dir

    def run(self, size: int, contender: str, repeat: int) -> Run:
        wf, out_dir = self.workflow(size, contender)
        shutil.rmtree(out_dir, ignore_errors=True)
        kind = f"{contender}_{size}"
        load = os.getloadavg()[0]
        log_path = self.out / "logs" / f"{kind}_r{repeat}.log"
        cmd = [self.geoseg, "--no-progress", "run", "--force", str(wf)]
        wall, sampler, stdout, rc = measured(cmd, log_path, pss_every=self.args.pss_every)
        if rc != 0:
            fail(kind, rc, log_path, stdout)
        run = fill_run(Run(kind, repeat, 1, size * size, 0), wall, sampler)
        job = json.loads((out_dir / "summary.json").read_text())
        if job.get("items_failed") or job.get("items_ok") != 1:
            raise SystemExit(f"{kind}: the item did not run (ok), see {out_dir / 'summary.json'}")
        run.windows = int(job.get("windows_run") or 0)
        run.inner_s = float(job["seconds"])
        run.detail = {"contender": contender, "size": size, "loadavg_1m_before": load,
                      **{k: job.get(k) for k in ("windows_per_second", "inference_seconds", "driver_cpu_seconds",
                                                  "driver_cpu_ms_per_window")}}
        item = next(p for p in out_dir.iterdir() if p.is_dir())
        parquet = item / "labels.parquet"
        if parquet.exists():
            import pyarrow.parquet as pq

            run.detail["polygons"] = pq.read_metadata(parquet).num_rows
            run.detail["parquet_mib"] = parquet.stat().st_size / 2**20
        for name, where in (("zones_rows", item / "zones.csv"), ("zones_summary_rows", out_dir / "zones_summary.csv")):
            if where.exists():
                with open(where, encoding="utf-8") as f:
                    run.detail[name] = sum(1 for _ in f) - 1
        if run.detail.get("zones_rows") is not None:
            import csv

            with open(item / "zones.csv", encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
            run.detail["zones_hit"] = len({r["zone"] for r in rows if int(r["pixels"])})
            # every valid pixel lies in exactly one district: the zones' pixels add up to the map's
            valid = json.loads((item / "stats.json").read_text())["valid_pixels"]
            run.detail["zone_pixels_minus_valid"] = sum(int(r["pixels"]) for r in rows) - int(valid)
        log(f"r{repeat} {size}² {contender}: wall {wall:.2f} s, job {run.inner_s:.2f} s, "
            f"peak PSS {run.peak_pss_mib:.0f} MiB"
            + (f", {run.detail['polygons']} polygons" if "polygons" in run.detail else "")
            + (f", {run.detail['zones_rows']} zone rows" if "zones_rows" in run.detail else ""))
        self.runs.append(run)
        return run

    def go(self) -> dict[str, Any]:
        started = time.time()
        self.git_start = git_state()
        self.prepare()
        names = list(CONTENDERS)
        for r in range(self.args.repeats):
            for i, size in enumerate(self.args.sizes):
                k = (r + i) % len(names)
                for contender in names[k:] + names[:k]:
                    self.run(size, contender, r)
        return self.report(time.time() - started)

    # -- the report ----------------------------------------------------------------------------

    def report(self, elapsed: float) -> dict[str, Any]:
        sizes = self.args.sizes

        def mine(size: int, contender: str) -> list[Run]:
            return [r for r in self.runs if r.detail["contender"] == contender and r.detail["size"] == size]

        medians: list[dict[str, Any]] = []
        for size in sizes:
            row: dict[str, Any] = {"size": size, "pixels": size * size}
            for c in CONTENDERS:
                runs = mine(size, c)
                if not runs:
                    continue
                row[c] = {
                    "wall_s": statistics.median(r.wall_s for r in runs),
                    "job_s": statistics.median(r.inner_s or 0.0 for r in runs),
                    "cpu_s": statistics.median(sum(c for _, c in r.cpu_by_process) for r in runs),
                    "peak_pss_mib": statistics.median(r.peak_pss_mib for r in runs),
                    "windows": runs[0].windows,
                    "repeats": len(runs),
                }
                for k in ("polygons", "parquet_mib", "zones_rows", "zones_summary_rows", "zones_hit",
                          "zone_pixels_minus_valid"):
                    values = sorted({r.detail[k] for r in runs if k in r.detail})
                    if values:  # one value, unless the outputs differ between repeats
                        row[c][k] = values[0] if len(values) == 1 else values
            base = row.get("cog")
            if base:
                for c in ("cog_parquet", "cog_parquet_zones"):
                    if c in row:
                        row[f"{c}_over_cog"] = {
                            "wall_s": row[c]["wall_s"] / base["wall_s"],
                            "job_s": row[c]["job_s"] / base["job_s"],
                            "cpu_s": row[c]["cpu_s"] / base["cpu_s"],
                            "added_wall_s": row[c]["wall_s"] - base["wall_s"],
                            "added_peak_pss_mib": row[c]["peak_pss_mib"] - base["peak_pss_mib"],
                        }
            medians.append(row)
        growth: dict[str, Any] = {}
        lo, hi = medians[0], medians[-1]
        if len(medians) > 1:
            for c in CONTENDERS:
                if c in lo and c in hi:
                    growth[c] = {"from": lo["size"], "to": hi["size"],
                                 "growth_mib": hi[c]["peak_pss_mib"] - lo[c]["peak_pss_mib"],
                                 "ratio": hi[c]["peak_pss_mib"] / lo[c]["peak_pss_mib"]}
            for c in ("cog_parquet", "cog_parquet_zones"):
                if c in growth and "cog" in growth:
                    growth[c]["extra_growth_mib_vs_cog"] = growth[c]["growth_mib"] - growth["cog"]["growth_mib"]
        checks = []
        for c in ("cog_parquet", "cog_parquet_zones"):
            ratio = hi.get(f"{c}_over_cog", {}).get("wall_s")
            if ratio is not None:
                checks.append({"target": f"{hi['size']}²: {c} wall / cog wall <= {TIME_RATIO}",
                               "value": round(ratio, 3), "pass": ratio <= TIME_RATIO})
            extra = growth.get(c, {}).get("extra_growth_mib_vs_cog")
            if extra is not None:
                checks.append({"target": f"{lo['size']}² -> {hi['size']}²: {c} peak PSS growth - cog's <= "
                                         f"{EXTRA_GROWTH_MIB:.0f} MiB", "value": round(extra, 1),
                               "pass": extra <= EXTRA_GROWTH_MIB})
        from vector_bench import machine

        env = machine()
        try:
            from importlib.metadata import version

            env["versions"]["torch"] = version("torch")
        except Exception:  # informational only
            pass
        env["loadavg_end"] = list(os.getloadavg())
        doc = {
            "benchmark": "products_bench.py",
            "date": time.strftime("%Y-%m-%d"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": env,
            "code": {"start": self.git_start, "end": git_state()},
            "config": {"sizes": sizes, "repeats": self.args.repeats, "roi": ROI, "overlap": OVERLAP, "batch": BATCH,
                       "block": BLOCK, "workers": WORKERS, "backend": "local", "classes": CLASSES,
                       "class_names": self.names, "model": f"nearest prototype, {SMOOTH}x{SMOOTH} mean, 1x1 conv"
                       + (" + 0 x MONAI UNet 16-32-64-128 (2 residual units)" if self.args.model == "unet" else ""),
                       "zones": {"count": ZONE_GRID[0] * ZONE_GRID[1], "grid": ZONE_GRID, "jitter": ZONE_JITTER,
                                 "crs": "EPSG:4326", "id_field": "NAME"},
                       "scene_seed": f"{SEED} + size", "pss_every_s": self.args.pss_every,
                       "contenders": CONTENDERS},
            "elapsed_s": round(elapsed, 1),
            "medians": medians,
            "memory_growth": growth,
            "checks": checks,
            "runs": [asdict(r) for r in self.runs],
            "notes": [
                "wall_s: the geoseg subprocess from launch to exit; job_s: summary.json's seconds; cpu_s: user + "
                "system CPU seconds of the process tree (bench_memory's last sample of each process), less "
                "sensitive than the wall time to other work on the machine.",
                "peak_pss_mib: peak PSS summed over the process tree (bench_memory.MemorySampler, exact PSS every "
                "pss_every_s seconds, RSS-tracked in between, sampled every 0.2 s).",
                "polygons: rows of labels.parquet; zones_rows: rows of the item's zones.csv (zone x class); "
                "zones_hit: districts with a valid pixel; zone_pixels_minus_valid: the pixels of zones.csv minus "
                "stats.json's valid pixels (0 when every valid pixel counts for exactly one district).",
                "Contender order rotates from one repeat to the next and between sizes.",
                "code: the commit and uncommitted changes of geoseg_pipeline at the start and the end of the run.",
            ],
        }
        md = self.markdown(doc)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (self.out / "results.md").write_text(md, encoding="utf-8")
        if self.args.report:
            self.args.report.parent.mkdir(parents=True, exist_ok=True)
            self.args.report.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            log(f"wrote {self.args.report}")
        print(md)
        return doc

    def markdown(self, doc: dict[str, Any]) -> str:
        def f(v: float | None, nd: int = 2) -> str:
            return "" if v is None else f"{v:.{nd}f}"

        lines = [f"# Products benchmark: 4-band uint16 scenes, {CLASSES} classes, roi {ROI}, overlap {OVERLAP}, "
                 f"block {BLOCK}, local backend, {WORKERS} workers, medians of {self.args.repeats}", "",
                 "| size | contender | wall s | × cog | job s | × cog | CPU s | × cog | peak PSS MiB | + cog MiB | "
                 "polygons | zone rows |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in doc["medians"]:
            for c in CONTENDERS:
                if c not in row:
                    continue
                m, over = row[c], row.get(f"{c}_over_cog", {})
                lines.append(f"| {row['size']}² | {c} | {f(m['wall_s'])} | {f(over.get('wall_s'), 3)} | "
                             f"{f(m['job_s'])} | {f(over.get('job_s'), 3)} | {f(m['cpu_s'], 1)} | "
                             f"{f(over.get('cpu_s'), 3)} | {f(m['peak_pss_mib'], 0)} | "
                             f"{f(over.get('added_peak_pss_mib'), 0)} | {m.get('polygons', '')} | "
                             f"{m.get('zones_rows', '')} |")
        if doc["memory_growth"]:
            lines += ["", "| contender | peak PSS growth MiB | × | growth beyond cog's MiB |", "|---|---:|---:|---:|"]
            for c, g in doc["memory_growth"].items():
                lines.append(f"| {c} ({g['from']}² -> {g['to']}²) | {f(g['growth_mib'], 0)} | {f(g['ratio'], 3)} | "
                             f"{f(g.get('extra_growth_mib_vs_cog'), 0)} |")
        lines += ["", "| target | value | met |", "|---|---:|---|"]
        for c in doc["checks"]:
            lines.append(f"| {c['target']} | {c['value']} | {'yes' if c['pass'] else 'NO'} |")
        lines += ["", f"Total {doc['elapsed_s'] / 60:.1f} min. Every repeat is in the JSON."]
        return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="products_bench.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="4096,8192", help="scene sides, comma-separated (ascending)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", choices=("prototypes", "unet"), default="prototypes",
                   help="prototypes: next to no model time (the worst case); unet: the same map at the cost of a "
                        "MONAI UNet 16-32-64-128 on every window")
    p.add_argument("--report", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--out", type=Path, default=Path("bench-output/products"),
                   help="scenes, model, zones (cached), workflows, outputs, logs, results")
    p.add_argument("--pss-every", type=float, default=2.0, help="seconds between exact PSS reads")
    args = p.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    Bench(parse_args(argv)).go()
    return 0


if __name__ == "__main__":
    sys.exit(main())
