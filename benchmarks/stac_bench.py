#!/usr/bin/env python
"""A STAC item read as it is against the same bands pre-stacked (issue 14's target: "for a
10980² Sentinel-2-like item (four 10 m bands, two 20 m bands, SCL): end-to-end time <= 1.1 x
geoseg on the same bands pre-stacked in one 10 m GeoTIFF, peak memory flat in scene size").

Per ``--sizes`` (default 5490 and 10980), side by side in one run (sizes and contenders
alternated within each repeat, the order rotated from one repeat to the next, medians of
``--repeats``), each contender a ``geoseg --no-progress run --force WORKFLOW`` subprocess:

* ``stacked``: one 6-band 10 m GeoTIFF (tiled 512, DEFLATE, predictor 2): B02, B03, B04, B08,
  and B11, B12 warped whole onto the 10 m grid with GDAL (bilinear), the SCL-masked pixels set
  to 0 (nodata): what a user builds with other tools today;
* ``stac``: the item itself: ``inputs.stac`` with assets ``[B02, B03, B04, B08, B11, B12]`` (four
  10 m files, two 20 m files warped by geoseg window by window) and ``inputs.mask: {asset: SCL,
  invalid: [0, 1, 3, 8, 9, 10]}`` (a 20 m file).

Both give the same model input, pixel for pixel (the bench checks that the two label maps are
equal). Common settings: roi 256, overlap 0.25, batch 8, block 512, ``resources.backend: local``
with 2 workers of 1 CPU; every band file tiled 512, DEFLATE, predictor 2.

* **Scene**: ``geoseg_pipeline.demo.scenes.write_landcover_scene(path, size, size, seed)`` (4-band
  uint16, 10 m, nodata triangle); B11 and B12 at 20 m are the 2 x 2 means of red and NIR (SWIR-like
  stand-ins); SCL at 20 m: vegetation everywhere, 0 where the scene is nodata, clouds (9) and
  shadows (3) over about 12 % of the scene (seeded discs).
* **Model**: a cheap TorchScript 1 x 1 convolution of the 6 bands to 10 classes (random weights,
  seeded), so the job is bound by reading and writing, the worst case for the STAC path; with
  ``--model unet`` a MONAI ``UNet(2, 6, 10, channels=(16, 32, 64, 128), strides=(2, 2, 2),
  num_res_units=2)`` instead.

Reported per size and contender: ``wall_s``, ``job_s`` (``summary.json``'s seconds), ``cpu_s`` of
the process tree, peak PSS; the ratio ``stac / stacked``; each contender's peak PSS growth from the
smallest to the largest size. Checks: at the largest size the wall ratio <= 1.1; the STAC path's
peak PSS growth at most 32 MiB more than the stacked path's.

About 12 min on a 2-core machine for the defaults with ``--repeats 2`` (plus about 2 min to
generate the data the first time)::

    .venv/bin/python benchmarks/stac_bench.py [--sizes 5490,10980] [--repeats 2] [--model conv|unet] \\
        [--report docs/bench/stac-2026-12-05.json] [--out bench-output/stac]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from bench_runs import Run, fail, fill_run, log, measured

SEED = 20261205
ROI, OVERLAP, BATCH, BLOCK, WORKERS, CLASSES = 256, 0.25, 8, 512, 2, 10
ASSETS = ("B02", "B03", "B04", "B08", "B11", "B12")
SCL_INVALID = (0, 1, 3, 8, 9, 10)
TIME_RATIO = 1.1
EXTRA_GROWTH_MIB = 32.0
CONTENDERS = ("stacked", "stac")
_TIFF = {"driver": "GTiff", "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
         "predictor": 2, "num_threads": "ALL_CPUS"}


def make_model(path: Path, unet: bool) -> Path:
    """The contenders' model (see the module doc), written once."""
    if path.exists():
        return path
    import torch

    torch.manual_seed(SEED)
    model: torch.nn.Module
    if unet:
        from monai.networks.nets import UNet

        model = UNet(2, len(ASSETS), CLASSES, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    else:
        model = torch.nn.Conv2d(len(ASSETS), CLASSES, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.jit.script(model.eval()).save(str(tmp))
    os.replace(tmp, path)
    return path


def _clouds(shape: tuple[int, int], rng: np.random.Generator, fraction: float = 0.12) -> tuple[np.ndarray, ...]:
    cloud = np.zeros(shape, bool)
    while cloud.mean() < fraction:
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        radius = int(rng.integers(shape[0] // 60 + 2, shape[0] // 15 + 3))
        r0, r1, c0, c1 = max(r - radius, 0), min(r + radius, shape[0]), max(c - radius, 0), min(c + radius, shape[1])
        rows, cols = np.ogrid[r0:r1, c0:c1]
        cloud[r0:r1, c0:c1] |= (rows - r) ** 2 + (cols - c) ** 2 < radius**2
    shadow = np.zeros(shape, bool)
    k = max(shape[0] // 100, 1)
    shadow[k:, k:] = cloud[:-k, :-k]
    return cloud, shadow & ~cloud


def make_item(folder: Path, size: int) -> Path:
    """The STAC item's band files and ``item.json`` in ``folder``, and ``stacked.tif`` beside
    them; written once (the item's JSON last)."""
    item = folder / "item.json"
    if item.exists():
        return item
    import rasterio
    from rasterio.warp import Resampling, reproject

    from geoseg_pipeline.demo.scenes import write_landcover_scene

    folder.mkdir(parents=True, exist_ok=True)
    log(f"generating the {size}² item in {folder}")
    t0 = time.perf_counter()
    scene = folder / "scene.tmp.tif"
    write_landcover_scene(scene, size, size, SEED + size)
    with rasterio.open(scene) as ds:
        bands, crs, t10 = ds.read(), ds.crs, ds.transform
    scene.unlink()
    half = size // 2
    t20 = t10 * t10.scale(2)
    nodata = (bands == 0).all(axis=0)

    def mean20(b: np.ndarray) -> np.ndarray:
        x = b[: 2 * half, : 2 * half].reshape(half, 2, half, 2).astype(np.float64)
        valid = (x > 0).sum(axis=(1, 3))
        out: np.ndarray = np.where(valid > 0, x.sum(axis=(1, 3)) / np.maximum(valid, 1), 0).round().astype(np.uint16)
        return out

    files = {"B02": (bands[0], t10), "B03": (bands[1], t10), "B04": (bands[2], t10), "B08": (bands[3], t10),
             "B11": (mean20(bands[2]), t20), "B12": (mean20(bands[3]), t20)}
    rng = np.random.default_rng([SEED, size])
    cloud, shadow = _clouds((half, half), rng)
    scl = np.full((half, half), 4, np.uint8)
    scl[nodata[: 2 * half : 2, : 2 * half : 2]] = 0
    scl[shadow], scl[cloud] = 3, 9
    for key, (data, transform) in files.items():
        with rasterio.open(folder / f"{key}.tif", "w", **_TIFF, width=data.shape[1], height=data.shape[0], count=1,
                           dtype="uint16", crs=crs, transform=transform, nodata=0) as ds:
            ds.write(data, 1)
    with rasterio.open(folder / "SCL.tif", "w", **_TIFF, width=half, height=half, count=1, dtype="uint8", crs=crs,
                       transform=t20) as ds:
        ds.write(scl, 1)
    # the same bands pre-stacked on the 10 m grid, as GDAL would: 20 m bands warped whole
    stack = np.zeros((len(ASSETS), size, size), np.uint16)
    for i, key in enumerate(ASSETS):
        data, transform = files[key]
        if transform == t10:
            stack[i] = data
        else:
            reproject(data, stack[i], src_transform=transform, src_crs=crs, dst_transform=t10, dst_crs=crs,
                      resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
    mask = np.zeros((size, size), np.uint8)
    reproject(scl, mask, src_transform=t20, src_crs=crs, dst_transform=t10, dst_crs=crs,
              resampling=Resampling.nearest)
    stack[:, np.isin(mask, SCL_INVALID)] = 0
    del mask
    with rasterio.open(folder / "stacked.tif", "w", **_TIFF, width=size, height=size, count=len(ASSETS),
                       dtype="uint16", crs=crs, transform=t10, nodata=0) as ds:
        ds.write(stack)
    doc = {"type": "Feature", "stac_version": "1.1.0", "id": f"S2_bench_{size}",
           "geometry": None, "properties": {"datetime": "2024-06-01T10:00:00Z", "eo:cloud_cover": 12.0},
           "links": [], "assets": {k: {"href": f"./{k}.tif"} for k in (*ASSETS, "SCL")}}
    tmp = item.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, item)
    log(f"  {time.perf_counter() - t0:.1f} s")
    return item


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out.resolve()
        self.geoseg = str(Path(sys.executable).parent / "geoseg")
        self.runs: list[Run] = []

    def prepare(self) -> None:
        unet = self.args.model == "unet"
        self.model = make_model(self.out / "models" / f"{'unet' if unet else 'conv'}{len(ASSETS)}x{CLASSES}.pt", unet)
        self.items = {s: make_item(self.out / "data" / f"item_{s}", s) for s in self.args.sizes}

    def workflow(self, size: int, contender: str) -> tuple[Path, Path]:
        out_dir = self.out / "runs" / f"{contender}_{size}"
        item = self.items[size]
        inputs: dict[str, Any] = (
            {"paths": [str(item.parent / "stacked.tif")]} if contender == "stacked" else
            {"stac": {"catalog": str(item), "assets": list(ASSETS)},
             "mask": {"asset": "SCL", "invalid": list(SCL_INVALID)}})
        wf = {"version": 1, "name": f"stac-{contender}-{size}", "inputs": inputs,
              "model": {"type": "torchscript", "path": str(self.model), "in_channels": len(ASSETS),
                        "num_classes": CLASSES},
              "tiling": {"roi_size": ROI, "overlap": OVERLAP, "batch_size": BATCH, "block_size": BLOCK},
              "output": {"directory": str(out_dir), "formats": ["cog"]},
              "resources": {"workers": WORKERS, "cpus_per_worker": 1, "backend": "local"}}
        path = self.out / "workflows" / f"{contender}_{size}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(wf, sort_keys=False), encoding="utf-8")
        return path, out_dir

    contenders: tuple[str, ...] = CONTENDERS

    def command(self, size: int, contender: str) -> tuple[list[str], Path]:
        """A contender's command line and output directory (its ``summary.json``)."""
        wf, out_dir = self.workflow(size, contender)
        return [self.geoseg, "--no-progress", "run", "--force", str(wf)], out_dir

    def run(self, size: int, contender: str, repeat: int) -> None:
        cmd, out_dir = self.command(size, contender)
        shutil.rmtree(out_dir, ignore_errors=True)
        kind = f"{contender}_{size}"
        load = os.getloadavg()[0]
        log_path = self.out / "logs" / f"{kind}_r{repeat}.log"
        wall, sampler, stdout, rc = measured(cmd, log_path, pss_every=self.args.pss_every)
        if rc != 0:
            fail(kind, rc, log_path, stdout)
        run = fill_run(Run(kind, repeat, 1, size * size, 0), wall, sampler)
        job = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        run.windows = int(job.get("windows_run") or 0)
        run.inner_s = float(job["seconds"])
        run.detail = {"contender": contender, "size": size, "loadavg_1m_before": load}
        self.runs.append(run)
        log(f"r{repeat} {size}² {contender}: wall {wall:.2f} s, job {run.inner_s:.2f} s, "
            f"peak PSS {run.peak_pss_mib:.0f} MiB, {run.windows} windows")

    def same_labels(self, size: int) -> bool:
        import rasterio

        maps = []
        for contender in self.contenders:
            folder = self.out / "runs" / f"{contender}_{size}"
            item = next(p for p in folder.iterdir() if p.is_dir())
            with rasterio.open(item / "labels.tif") as ds:
                maps.append(ds.read(1))
        return all(np.array_equal(maps[0], m) for m in maps[1:])

    def go(self) -> dict[str, Any]:
        started = time.time()
        self.prepare()
        names = list(self.contenders)
        for r in range(self.args.repeats):
            for i, size in enumerate(self.args.sizes):
                k = (r + i) % len(names)  # the order rotates between repeats and sizes
                for contender in names[k:] + names[:k]:
                    self.run(size, contender, r)
        equal = {s: self.same_labels(s) for s in self.args.sizes}
        return self.report(time.time() - started, equal)

    def medians(self, equal: dict[int, bool]) -> list[dict[str, Any]]:
        """Per size, each contender's medians over its repeats, and the ratios of every
        contender to the first (``<name>_over_<first>``)."""
        rows = []
        first = self.contenders[0]
        for size in self.args.sizes:
            row: dict[str, Any] = {"size": size, "labels_equal": equal[size]}
            for c in self.contenders:
                runs = [r for r in self.runs if r.detail["contender"] == c and r.detail["size"] == size]
                row[c] = {"wall_s": statistics.median(r.wall_s for r in runs),
                          "job_s": statistics.median(r.inner_s or 0.0 for r in runs),
                          "cpu_s": statistics.median(sum(v for _, v in r.cpu_by_process) for r in runs),
                          "peak_pss_mib": statistics.median(r.peak_pss_mib for r in runs),
                          "windows": runs[0].windows, "repeats": len(runs)}
            for c in self.contenders[1:]:
                row[f"{c}_over_{first}"] = {k: row[c][k] / row[first][k] for k in ("wall_s", "job_s", "cpu_s")}
            rows.append(row)
        return rows

    def report(self, elapsed: float, equal: dict[int, bool]) -> dict[str, Any]:
        medians = self.medians(equal)
        lo, hi = medians[0], medians[-1]
        growth = {c: hi[c]["peak_pss_mib"] - lo[c]["peak_pss_mib"] for c in CONTENDERS} if len(medians) > 1 else {}
        ratio = hi["stac_over_stacked"]["wall_s"]
        checks = [{"target": f"{hi['size']}²: stac wall / stacked wall <= {TIME_RATIO}", "value": round(ratio, 3),
                   "pass": ratio <= TIME_RATIO},
                  {"target": "the two label maps are equal", "value": equal, "pass": all(equal.values())}]
        if growth:
            extra = growth["stac"] - growth["stacked"]
            checks.append({"target": f"{lo['size']}² -> {hi['size']}²: stac peak PSS growth - stacked's <= "
                                     f"{EXTRA_GROWTH_MIB:.0f} MiB", "value": round(extra, 1),
                           "pass": extra <= EXTRA_GROWTH_MIB})
        from vector_bench import machine

        env = machine()
        env["loadavg_end"] = list(os.getloadavg())
        doc = {"benchmark": "stac_bench.py", "date": time.strftime("%Y-%m-%d"),
               "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": env,
               "config": {"sizes": self.args.sizes, "repeats": self.args.repeats, "roi": ROI, "overlap": OVERLAP,
                          "batch": BATCH, "block": BLOCK, "workers": WORKERS, "backend": "local",
                          "classes": CLASSES, "assets": ASSETS, "mask_invalid": SCL_INVALID,
                          "model": self.args.model},
               "elapsed_s": round(elapsed, 1), "medians": medians, "memory_growth_mib": growth, "checks": checks,
               "runs": [asdict(r) for r in self.runs]}
        lines = [f"# STAC item vs pre-stacked GeoTIFF: 6 bands (4 at 10 m, 2 at 20 m) + SCL, {CLASSES} classes, "
                 f"model {self.args.model}, medians of {self.args.repeats}", "",
                 "| size | contender | wall s | job s | CPU s | peak PSS MiB | stac / stacked (wall) |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        for row in medians:
            for c in CONTENDERS:
                m = row[c]
                extra = f"{row['stac_over_stacked']['wall_s']:.3f}" if c == "stac" else ""
                lines.append(f"| {row['size']}² | {c} | {m['wall_s']:.2f} | {m['job_s']:.2f} | {m['cpu_s']:.1f} | "
                             f"{m['peak_pss_mib']:.0f} | {extra} |")
        lines += ["", *(f"- {'PASS' if c['pass'] else 'FAIL'} {c['target']}: {c['value']}" for c in checks)]
        md = "\n".join(lines) + "\n"
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if self.args.report:
            self.args.report.parent.mkdir(parents=True, exist_ok=True)
            self.args.report.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(md)
        return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="5490,10980", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", choices=["conv", "unet"], default="conv")
    p.add_argument("--out", type=Path, default=Path("bench-output/stac"))
    p.add_argument("--report", type=Path, default=None)
    p.add_argument("--pss-every", type=float, default=1.0)
    Bench(p.parse_args()).go()


if __name__ == "__main__":
    main()
