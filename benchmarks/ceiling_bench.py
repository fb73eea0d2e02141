"""How close is geoseg to its I/O floor? (issue 11: feed a GPU)

On the same generated 8192² × 4-band uint16 scene(s) (``landcover_bench_scenes``: tiled 512,
DEFLATE), side by side in one run, contenders alternated within each repeat, medians reported:

* ``floor_1`` / ``floor_2``: the I/O floor of one / two scenes: read every tile-task region of
  geoseg's plan with rasterio, write a uint8 tiled GeoTIFF block by block, make it a COG; one
  process, sequential (what any tool must do to read the input and write the labels).
* ``zero_local``: ``geoseg run`` with a zero-cost TorchScript model (returns zeros of 10
  classes), one scene, ``resources.backend: local``, ``--workers`` workers.
* ``zero_ray_2``: the same model on both scenes, ``resources.backend: ray`` (its own local Ray).
* ``monai_zero``: the same zero model through MONAI's ``sliding_window_inference`` (the scene
  read whole, gaussian blend, argmax, a GeoTIFF written: ``landcover_bench.py _baseline``), torch
  threads = workers: what the field's reference does with the same model, on the same cores.
* ``unet_local``: the land-cover benchmark's MONAI UNet through geoseg, one scene, local;
  ``unet_model_only``: its forward passes alone over the scene's windows held in memory, batches
  of 8, torch threads = workers (``landcover_bench.py _model_only``).

Reported per contender: wall seconds (median), ratio to the matching floor, windows/s (geoseg's
inference phase), driver CPU ms per window and bytes from the workers per pixel (geoseg's
``summary.json``), peak PSS of the process tree. ``--quick``: 1024² scenes, one repeat.

    .venv/bin/python benchmarks/ceiling_bench.py [--out DIR] [--size N] [--repeats R] [--report docs/bench/x.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from bench_memory import ray_daemons_running
from bench_runs import RESULT_TAG, Run, fail, fill_run, log, measured, result_line, thread_env
from landcover_bench import BATCH, MEAN, OVERLAP, ROI, STD, make_model
from landcover_bench_scenes import ensure_scene

CLASSES = 10
BLOCK = 512

TARGETS = {  # contender: (what, op, threshold)
    "zero_local": ("wall / floor_1", "<=", 1.3),
    "zero_ray_2": ("wall / floor_2", "<=", 1.6),
}


def floor_main(argv: Sequence[str]) -> int:
    """The I/O floor: read every task region, write the uint8 labels, make the COG."""
    import numpy as np
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    from geoseg_pipeline.tiling import plan_tiles

    p = argparse.ArgumentParser(prog="ceiling_bench.py _floor")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("scenes", nargs="+")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, scene in enumerate(args.scenes):
        with rasterio.open(scene) as src:
            plan = plan_tiles((src.height, src.width), (ROI, ROI), OVERLAP, (BLOCK, BLOCK))
            profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8",
                           crs=src.crs, transform=src.transform, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                           compress="zstd", zstd_level=1, nodata=255)
            staging = args.work / f"floor{i}.gtiff"
            with rasterio.open(staging, "w", **profile) as dst:
                for task in plan.tasks():
                    r = task.region
                    r0, c0 = max(r.start[0], 0), max(r.start[1], 0)
                    r1, c1 = min(r.stop[0], src.height), min(r.stop[1], src.width)
                    src.read(window=Window(c0, r0, c1 - c0, r1 - r0))
                for index in plan.blocks():
                    bw = plan.block_window(index)
                    dst.write(np.zeros(bw.size, np.uint8), 1,
                              window=Window(bw.start[1], bw.start[0], bw.size[1], bw.size[0]))
        rio_copy(staging, args.work / f"floor{i}.tif", driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=str(BLOCK),
                 OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER")
        staging.unlink()
    print(RESULT_TAG + json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    return 0


def zero_model(path: Path) -> Path:
    """A TorchScript model that costs nothing: zeros of ``CLASSES`` classes."""
    if path.exists():
        return path
    import torch

    class Zero(torch.nn.Module):
        def __init__(self, classes: int) -> None:
            super().__init__()
            self.classes = classes

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros((x.shape[0], self.classes, x.shape[2], x.shape[3]), dtype=x.dtype, device=x.device)

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Zero(CLASSES)).save(str(path))
    return path


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out.resolve()
        self.geoseg = str(Path(sys.executable).parent / "geoseg")
        self.runs: list[Run] = []

    def prepare(self) -> None:
        data = self.out / "data"
        data.mkdir(parents=True, exist_ok=True)
        log(f"scenes of {self.args.size}² (generated once)")
        self.scenes = [ensure_scene(data / f"scene{i}_{self.args.size}.tif", self.args.size, seed=100 + i)
                       for i in range(2)]
        self.zero = zero_model(self.out / "models" / "zero.pt")
        self.unet = None if self.args.skip_unet else make_model(self.out / "models" / "unet.pt")

    def workflow(self, name: str, scenes: list[Path], model: Path, backend: str) -> tuple[Path, Path]:
        out_dir = self.out / "runs" / name
        wf: dict[str, Any] = {
            "name": name, "inputs": {"paths": [str(s) for s in scenes]},
            "model": {"type": "torchscript", "path": str(model)},
            "tiling": {"roi_size": ROI, "overlap": OVERLAP, "batch_size": BATCH, "block_size": BLOCK},
            "output": {"directory": str(out_dir), "formats": ["cog"]},
            "resources": {"workers": self.args.workers, "cpus_per_worker": 1, "backend": backend},
        }
        if model == self.unet:
            wf["preprocessing"] = {"normalize": {"mean": list(MEAN), "std": list(STD)}}
        path = self.out / "workflows" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(wf))
        return path, out_dir

    def run(self, kind: str, repeat: int, cmd: list[str], pixels: int, env: dict[str, str] | None = None,
            summary: Path | None = None) -> Run:
        log(f"{kind} (repeat {repeat + 1})")
        log_path = self.out / "logs" / f"{kind}_r{repeat}.log"
        if summary is not None and summary.parent.exists():
            import shutil

            shutil.rmtree(summary.parent)
        wall, sampler, stdout, rc = measured(cmd, log_path, env=env, pss_every=self.args.pss_every)
        if rc != 0:
            fail(kind, rc, log_path, stdout)
        run = fill_run(Run(kind, repeat, 0, pixels, 0), wall, sampler)
        if summary is not None:
            job = json.loads(summary.read_text())
            run.windows = int(job["windows_run"])
            run.inner_s = float(job["seconds"])
            keys = ("windows_per_second", "inference_seconds", "driver_cpu_ms_per_window", "driver_cpu_seconds",
                    "bytes_from_workers", "backend")
            run.detail = {k: job.get(k) for k in keys}
            sent = job.get("bytes_from_workers")
            run.detail["bytes_per_pixel"] = sent / pixels if sent else None
        else:
            run.detail = result_line(stdout)
        self.runs.append(run)
        return run

    def go(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.prepare()
        script = str(Path(__file__).resolve())
        lc = str(Path(__file__).resolve().parent / "landcover_bench.py")
        px = self.args.size ** 2
        w = self.args.workers
        for r in range(self.args.repeats):
            self.run("floor_1", r, [sys.executable, script, "_floor", "--work", str(self.out / "floor"),
                                    str(self.scenes[0])], px)
            wf, out = self.workflow("zero_local", self.scenes[:1], self.zero, "local")
            self.run("zero_local", r, [self.geoseg, "--no-progress", "run", str(wf)], px, summary=out / "summary.json")
            self.run("monai_zero", r, [sys.executable, lc, "_baseline", "--model", str(self.zero), "--out",
                                       str(self.out / "monai_zero"), "--threads", str(w), str(self.scenes[0])],
                     px, env=thread_env(w))
            self.run("floor_2", r, [sys.executable, script, "_floor", "--work", str(self.out / "floor"),
                                    *map(str, self.scenes)], 2 * px)
            wf, out = self.workflow("zero_ray_2", self.scenes, self.zero, "ray")
            self.run("zero_ray_2", r, [self.geoseg, "--no-progress", "run", str(wf)], 2 * px,
                     summary=out / "summary.json")
            if self.unet is not None:
                wf, out = self.workflow("unet_local", self.scenes[:1], self.unet, "local")
                self.run("unet_local", r, [self.geoseg, "--no-progress", "run", str(wf)], px,
                         summary=out / "summary.json")
                self.run("unet_model_only", r, [sys.executable, lc, "_model_only", "--model", str(self.unet),
                                                "--threads", str(w), str(self.scenes[0])], px, env=thread_env(w))
        return self.report(time.perf_counter() - t0)

    def report(self, total_s: float) -> dict[str, Any]:
        def med(kind: str, get: Any) -> float | None:
            vals = [v for r in self.runs if r.kind == kind and (v := get(r)) is not None]
            return statistics.median(vals) if vals else None

        floors = {"floor_1": med("floor_1", lambda r: r.wall_s), "floor_2": med("floor_2", lambda r: r.wall_s)}
        rows = []
        for kind in dict.fromkeys(r.kind for r in self.runs):
            wall = med(kind, lambda r: r.wall_s)
            floor = floors["floor_2" if kind.endswith("_2") else "floor_1"]
            rows.append({
                "contender": kind, "wall_s": wall,
                "x_floor": round(wall / floor, 3) if wall and floor and not kind.startswith("floor") else None,
                "windows_per_s": med(kind, lambda r: r.detail.get("windows_per_second")
                                     or r.detail.get("windows_per_s")),
                "driver_cpu_ms_per_window": med(kind, lambda r: r.detail.get("driver_cpu_ms_per_window")),
                "bytes_per_pixel": med(kind, lambda r: r.detail.get("bytes_per_pixel")),
                "peak_pss_mib": med(kind, lambda r: r.peak_pss_mib),
            })
        by = {row["contender"]: row for row in rows}
        checks = []
        for kind, (what, op, limit) in TARGETS.items():
            value = by.get(kind, {}).get("x_floor")
            checks.append({"target": f"{kind}: {what} {op} {limit}", "value": value,
                           "pass": None if value is None else value <= limit})
        for kind in ("zero_local", "zero_ray_2", "unet_local"):
            if kind in by:
                bpp, cpu = by[kind]["bytes_per_pixel"], by[kind]["driver_cpu_ms_per_window"]
                checks.append({"target": f"{kind}: bytes to the driver per pixel <= 2", "value": bpp,
                               "pass": None if bpp is None else bpp <= 2})
                checks.append({"target": f"{kind}: driver CPU per window <= 0.3 ms", "value": cpu,
                               "pass": None if cpu is None else cpu <= 0.3})
        if "unet_local" in by and "unet_model_only" in by:
            ratio = by["unet_local"]["windows_per_s"] / by["unet_model_only"]["windows_per_s"]
            checks.append({"target": "unet: geoseg windows/s >= 0.85 x model-only", "value": round(ratio, 3),
                           "pass": ratio >= 0.85})
        doc = {"args": {k: str(v) for k, v in vars(self.args).items()}, "total_s": round(total_s, 1),
               "rows": rows, "checks": checks, "runs": [asdict(r) for r in self.runs]}
        (self.out / "results.json").write_text(json.dumps(doc, indent=1))
        md = self.markdown(doc)
        (self.out / "results.md").write_text(md)
        if self.args.report:
            self.args.report.write_text(md)
            self.args.report.with_suffix(".json").write_text(json.dumps(doc, indent=1))
        print(md)
        return doc

    def markdown(self, doc: dict[str, Any]) -> str:
        a = self.args
        lines = [f"# Ceiling benchmark: {a.size}² × 4-band uint16, roi {ROI}, overlap {OVERLAP}, block {BLOCK}, "
                 f"{a.workers} workers, {CLASSES} classes (zero model), medians of {a.repeats}", "",
                 "| contender | wall s | × floor | windows/s | driver CPU ms/window | bytes/pixel to driver | "
                 "peak PSS MiB |", "|---|---:|---:|---:|---:|---:|---:|"]

        def f(v: float | None, nd: int = 2) -> str:
            return "" if v is None else f"{v:.{nd}f}"

        for row in doc["rows"]:
            lines.append(f"| {row['contender']} | {f(row['wall_s'])} | {f(row['x_floor'])} | "
                         f"{f(row['windows_per_s'], 1)} | {f(row['driver_cpu_ms_per_window'], 3)} | "
                         f"{f(row['bytes_per_pixel'], 3)} | {f(row['peak_pss_mib'], 0)} |")
        lines += ["", "| target | value | met |", "|---|---:|---|"]
        for c in doc["checks"]:
            met = "yes" if c["pass"] else "NO" if c["pass"] is False else ""
            lines.append(f"| {c['target']} | {c['value']} | {met} |")
        lines += ["", f"Total {doc['total_s'] / 60:.1f} min. Every repeat is in the JSON."]
        return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ceiling_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench-output/ceiling"))
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-unet", action="store_true")
    p.add_argument("--quick", action="store_true", help="1024² scenes, one repeat")
    p.add_argument("--pss-every", type=float, default=2.0)
    p.add_argument("--report", type=Path, help="also write the Markdown (and .json beside it) here")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.repeats = 1024, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_floor":
        return floor_main(argv[1:])
    args = parse_args(argv)
    if ray_daemons_running():
        raise SystemExit("another Ray is running: stop it first (ray stop)")
    Bench(args).go()
    return 0


if __name__ == "__main__":
    sys.exit(main())
