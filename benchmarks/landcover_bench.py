#!/usr/bin/env python
"""Side-by-side benchmark of the 2D raster path: a plain MONAI baseline, the model alone, and
``geoseg run``, on the same scenes, with the same TorchScript model and the same tiling
(roi 256, overlap 0.25, gaussian blend, batch 8).

Three contenders:

* **baseline** -- what a user would otherwise write: read the whole raster with rasterio,
  normalize, MONAI ``sliding_window_inference``, argmax, write a GeoTIFF; one process looping
  over the scenes, torch threads = ``--threads`` (default: all cores);
* **model-only** -- the forward passes alone over the windows of one scene already in memory
  (extracted on MONAI's grid with ``dense_patch_slices``), batches of 8: the throughput limit;
* **geoseg** -- ``geoseg run WORKFLOW`` with ``--workers`` actors of one CPU each, starting its
  own local Ray.

Each contender runs in a fresh subprocess. While it runs, a sampler thread sums, every 0.2 s,
the memory of the subprocess and all its descendants plus every process whose command line
mentions ``ray`` that appeared after the run began (Ray daemons can be re-parented): PSS from
``/proc/PID/smaps_rollup`` (Ray's shared-memory object store is mapped by several processes,
PSS counts each shared page once overall), with RSS as a fallback and for reference. The peak
of that sum is the run's peak memory.

Run ``python benchmarks/landcover_bench.py --help``; see ``benchmarks/README.md``.
Linux only (``/proc``). Needs numpy, rasterio, torch, monai and pyyaml (the package's own deps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from bench_memory import ray_daemons_running
from bench_report import markdown
from bench_runs import RESULT_TAG, Run, fail, fill_run, geoseg_phases, log, measured, result_line, thread_env
from landcover_bench_scenes import BANDS, BLOCK, CLASSES, ensure_scene

ROI = 256
OVERLAP = 0.25
BATCH = 8
SAMPLE_EVERY = 0.2  # seconds between memory samples

# The per-band mean/std: the normalization used by BOTH the baseline and geoseg (workflow
# preprocessing.normalize), for the scenes' SPECTRA.
MEAN = (975.0, 1200.0, 1160.0, 2100.0)
STD = (550.0, 550.0, 650.0, 1200.0)



# ------------------------------------------------------------------------------------------
# MONAI's sliding-window grid (for window counts, without importing monai in this process)
# ------------------------------------------------------------------------------------------


def axis_window_count(n: int, roi: int = ROI, overlap: float = OVERLAP) -> int:
    """Windows along one axis, as ``monai.data.utils.dense_patch_slices`` with MONAI's interval."""
    n = max(n, roi)
    interval = roi if n == roi else max(int(roi * (1 - overlap)), 1)
    num = math.ceil(n / interval)
    return next((d + 1 for d in range(num) if d * interval + roi >= n), 1)


def window_count(height: int, width: int) -> int:
    """Windows MONAI's ``sliding_window_inference`` runs over a ``height x width`` image."""
    return axis_window_count(height) * axis_window_count(width)


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------


def make_model(path: Path, seed: int = 0) -> Path:
    """The MONAI UNet, fixed seed, eval mode, scripted and saved; reused when present."""
    if path.exists():
        return path
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    net = UNet(
        spatial_dims=2, in_channels=BANDS, out_channels=CLASSES, channels=(16, 32, 64, 128),
        strides=(2, 2, 2), num_res_units=2,
    ).eval()
    tmp = path.with_name(path.name + ".tmp")
    torch.jit.script(net).save(str(tmp))
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------
# Subprocess modes: the baseline and model-only (run as ``landcover_bench.py _baseline ...``)
# ------------------------------------------------------------------------------------------


def _emit(result: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


def baseline_main(argv: Sequence[str]) -> int:
    """Whole-raster read -> MONAI sliding_window_inference -> argmax -> GeoTIFF, per scene."""
    p = argparse.ArgumentParser(prog="landcover_bench.py _baseline")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("scenes", nargs="+")
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    import rasterio
    import torch
    from monai.inferers import sliding_window_inference

    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model, map_location="cpu").eval()
    mean = np.asarray(MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(STD, dtype=np.float32)[:, None, None]
    args.out.mkdir(parents=True, exist_ok=True)
    t_ready = time.perf_counter()
    per_scene = []
    for scene in args.scenes:
        t0 = time.perf_counter()
        with rasterio.open(scene) as src:
            data = src.read()
            profile = src.profile
        x = (data.astype(np.float32) - mean) / std
        del data
        with torch.inference_mode():
            logits = sliding_window_inference(
                torch.from_numpy(x)[None], roi_size=(ROI, ROI), sw_batch_size=BATCH, predictor=model,
                overlap=OVERLAP, mode="gaussian",
            )
            labels = torch.argmax(logits, dim=1)[0].to(torch.uint8).numpy()
        del x, logits
        profile.update(count=1, dtype="uint8", nodata=None, compress="deflate", predictor=1, tiled=True,
                       blockxsize=BLOCK, blockysize=BLOCK)
        out = args.out / f"{Path(scene).stem}_labels.tif"
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(labels, 1)
        per_scene.append({"scene": Path(scene).name, "seconds": time.perf_counter() - t0})
    t_end = time.perf_counter()
    _emit({
        "startup_s": t_ready - t_start, "scenes_s": t_end - t_ready, "per_scene": per_scene,
        "threads": torch.get_num_threads(),
    })
    return 0


def model_only_main(argv: Sequence[str]) -> int:
    """Forward passes alone over MONAI's windows of one scene, pre-extracted into memory."""
    p = argparse.ArgumentParser(prog="landcover_bench.py _model_only")
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (TorchScript profiling runs)")
    p.add_argument("scene")
    args = p.parse_args(argv)

    import rasterio
    import torch
    from monai.data.utils import dense_patch_slices

    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model, map_location="cpu").eval()
    with rasterio.open(args.scene) as src:
        data = src.read()
    mean = np.asarray(MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(STD, dtype=np.float32)[:, None, None]
    x = (data.astype(np.float32) - mean) / std
    interval = tuple(max(int(ROI * (1 - OVERLAP)), 1) if n != ROI else ROI for n in x.shape[1:])
    slices = dense_patch_slices(x.shape[1:], (ROI, ROI), interval)
    windows = np.ascontiguousarray(np.stack([x[(slice(None), *s)] for s in slices]))
    del data, x
    n = len(windows)
    with torch.inference_mode():
        for b in range(args.warmup):
            model(torch.from_numpy(windows[(b * BATCH) % n : (b * BATCH) % n + BATCH]))
        t0 = time.perf_counter()
        for b in range(0, n, BATCH):
            model(torch.from_numpy(windows[b : b + BATCH]))
        seconds = time.perf_counter() - t0
    _emit({"windows": n, "seconds": seconds, "windows_per_s": n / seconds,
           "threads": torch.get_num_threads()})
    return 0


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out.resolve()
        self.data = self.out / "data"
        self.runs_dir = self.out / "runs"
        self.logs = self.out / "logs"
        self.py = sys.executable
        self.script = str(Path(__file__).resolve())
        geoseg = Path(sys.executable).parent / "geoseg"
        self.geoseg = str(geoseg) if geoseg.exists() else (shutil.which("geoseg") or "")
        if not self.geoseg:
            raise SystemExit("cannot find the geoseg console script (install the package into this venv)")
        self.runs: list[Run] = []
        self.agreement: dict[str, Any] = {}

    # -- setup ---------------------------------------------------------------------------

    def prepare(self) -> None:
        a = self.args
        for d in (self.data, self.runs_dir, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.model = make_model(self.out / "unet_2d.pt")
        self.small = [ensure_scene(self.data / f"scene_{i:02d}_{a.size}.tif", a.size, 1000 + i)
                      for i in range(a.scenes)]
        self.big = ensure_scene(self.data / f"big_{a.big}.tif", a.big, 5000) if a.big else None

    def workflow(self, name: str, scenes: list[Path], out_dir: Path) -> Path:
        import yaml

        a = self.args
        cpus = os.cpu_count() or 1
        data = {
            "version": 1,
            "name": f"bench-{name}",
            "inputs": {"paths": [str(p) for p in scenes]},
            "model": {"type": "torchscript", "path": str(self.model), "in_channels": BANDS,
                      "num_classes": CLASSES},
            "preprocessing": {"normalize": {"mean": list(MEAN), "std": list(STD)}},
            "tiling": {"roi_size": ROI, "overlap": OVERLAP, "blend": "gaussian", "batch_size": BATCH},
            "output": {"directory": str(out_dir), "formats": ["cog"]},
            # more actors than CPUs would leave some unscheduled: share the CPUs then
            "resources": {"workers": a.workers, "cpus_per_worker": min(1.0, cpus / a.workers)},
        }
        path = self.out / "workflows" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    # -- contenders ------------------------------------------------------------------------

    def run_baseline(self, kind: str, repeat: int, scenes: list[Path]) -> Run:
        out_dir = self.runs_dir / kind
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [self.py, self.script, "_baseline", "--model", str(self.model), "--out", str(out_dir),
               "--threads", str(self.args.threads), *map(str, scenes)]
        log_path = self.logs / f"{kind}_r{repeat}.log"
        wall, s, stdout, rc = measured(cmd, log_path, env=thread_env(self.args.threads),
                                       pss_every=self.args.pss_every)
        if rc != 0:
            fail(kind, rc, log_path, stdout)
        res = result_line(stdout)
        run = fill_run(self._new(kind, repeat, scenes), wall, s)
        run.inner_s = res["scenes_s"]
        run.detail = res
        return run

    def run_geoseg(self, kind: str, repeat: int, scenes: list[Path]) -> Run:
        out_dir = self.runs_dir / kind
        shutil.rmtree(out_dir, ignore_errors=True)
        wf = self.workflow(kind, scenes, out_dir)
        cmd = [self.geoseg, "--no-progress", "run", str(wf)]
        log_path = self.logs / f"{kind}_r{repeat}.log"
        wall, s, stdout, rc = measured(cmd, log_path, pss_every=self.args.pss_every)
        if rc != 0:
            fail(f"geoseg ({kind})", rc, log_path, stdout)
        run = fill_run(self._new(kind, repeat, scenes), wall, s)
        m = re.search(r"(\d+) item\(s\) done, (\d+) failed in ([\d.]+) s", stdout)
        if m:
            run.inner_s = float(m.group(3))
            run.detail = {"items_ok": int(m.group(1)), "items_failed": int(m.group(2))}
        phases = geoseg_phases(log_path, getattr(s, "launched", time.time() - wall))
        phases["exit"] = wall
        run.detail["phases"] = phases
        # geoseg's own record of its inference phase (first task submitted -> last result
        # stitched), more precise than the 1 s log timestamps
        job = json.loads((out_dir / "summary.json").read_text())
        span = float(job.get("inference_seconds") or 0.0)
        run.detail["inference_phase_s"] = span
        run.detail["steady_windows_per_s"] = run.windows / span if span > 0 else None
        return run

    def run_model_only(self, repeat: int, scene: Path, threads: int, kind: str = "model_only") -> Run:
        cmd = [self.py, self.script, "_model_only", "--model", str(self.model), "--threads",
               str(threads), str(scene)]
        log_path = self.logs / f"{kind}_r{repeat}.log"
        wall, s, stdout, rc = measured(cmd, log_path, env=thread_env(threads),
                                       pss_every=self.args.pss_every)
        if rc != 0:
            fail(kind, rc, log_path, stdout)
        res = result_line(stdout)
        run = fill_run(self._new(kind, repeat, [scene]), wall, s)
        run.inner_s = res["seconds"]
        run.windows = res["windows"]
        run.detail = res
        return run

    def _new(self, kind: str, repeat: int, scenes: list[Path]) -> Run:
        import rasterio

        pixels = windows = 0
        for p in scenes:
            with rasterio.open(p) as src:
                pixels += src.width * src.height
                windows += window_count(src.height, src.width)
        return Run(kind, repeat, len(scenes), pixels, windows)

    # -- correctness by-product -------------------------------------------------------------

    def compare(self, name: str, baseline: Path, geoseg: Path) -> dict[str, Any]:
        """Fraction of equal labels, block by block (never a whole big raster in memory)."""
        import rasterio

        equal = total = 0
        hist = np.zeros(256, dtype=np.int64)
        with rasterio.open(baseline) as a, rasterio.open(geoseg) as b:
            if (a.height, a.width) != (b.height, b.width):
                return {"scene": name, "error": f"shapes differ: {a.shape} vs {b.shape}"}
            for _, win in a.block_windows(1):
                la, lb = a.read(1, window=win), b.read(1, window=win)
                equal += int((la == lb).sum())
                total += la.size
                hist += np.bincount(la.ravel(), minlength=256)[:256]
        shares = {str(k): round(float(v) / total, 4) for k, v in enumerate(hist) if v}
        return {"scene": name, "agreement": equal / total, "pixels": total,
                "baseline_class_shares": shares}

    # -- the schedule -------------------------------------------------------------------------

    def go(self) -> dict[str, Any]:
        a = self.args
        self.prepare()
        log(f"model {self.model}; {len(self.small)} scene(s) of {a.size}^2"
            + (f", big {a.big}^2" if self.big else "") + f"; {a.repeats} repeat(s); "
            f"geoseg workers {a.workers}, baseline threads {a.threads}")
        steps: list[tuple[str, Callable[[int], Run]]] = [
            ("model_only", lambda r: self.run_model_only(r, self.small[0], self.args.threads)),
            # informational: one torch thread, the rate of one geoseg actor
            ("model_only_1t", lambda r: self.run_model_only(r, self.small[0], 1, "model_only_1t")),
            ("baseline_small", lambda r: self.run_baseline("baseline_small", r, self.small)),
            ("geoseg_small", lambda r: self.run_geoseg("geoseg_small", r, self.small)),
            ("geoseg_one", lambda r: self.run_geoseg("geoseg_one", r, self.small[:1])),
        ]
        if self.big is not None:
            big = self.big
            steps += [
                ("baseline_big", lambda r: self.run_baseline("baseline_big", r, [big])),
                ("geoseg_big", lambda r: self.run_geoseg("geoseg_big", r, [big])),
            ]
        t_all = time.perf_counter()
        for r in range(a.repeats):
            for kind, fn in steps:
                log(f"repeat {r + 1}/{a.repeats}: {kind} ...")
                run = fn(r)
                self.runs.append(run)
                log(f"  {kind}: {run.wall_s:.1f} s wall, peak PSS {run.peak_pss_mib:.0f} MiB "
                    f"(RSS sum {run.peak_rss_sum_mib:.0f} MiB, {run.peak_processes} processes)")
            if r == 0:
                stem = self.small[0].stem
                self.agreement["small"] = self.compare(
                    stem, self.runs_dir / "baseline_small" / f"{stem}_labels.tif",
                    self.runs_dir / "geoseg_small" / stem / "labels.tif")
                if self.big is not None:
                    bs = self.big.stem
                    self.agreement["big"] = self.compare(
                        bs, self.runs_dir / "baseline_big" / f"{bs}_labels.tif",
                        self.runs_dir / "geoseg_big" / bs / "labels.tif")
                for k, v in self.agreement.items():
                    log(f"  agreement geoseg vs baseline ({k}, {v['scene']}): "
                        f"{v.get('agreement', float('nan')):.6f}")
        total = time.perf_counter() - t_all
        return self.report(total)

    # -- report ---------------------------------------------------------------------------------

    def report(self, total_s: float) -> dict[str, Any]:
        import ray
        import torch

        try:
            import monai
            monai_version = monai.__version__
        except ImportError:
            monai_version = "?"
        a = self.args
        by: dict[str, list[Run]] = {}
        for run in self.runs:
            by.setdefault(run.kind, []).append(run)

        def med(kind: str, attr: str) -> float | None:
            runs = by.get(kind)
            if not runs:
                return None
            vals = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
            return float(statistics.median(vals)) if vals else None

        summary: dict[str, Any] = {}
        for kind, runs in by.items():
            summary[kind] = {
                "scenes": runs[0].scenes, "pixels": runs[0].pixels, "windows": runs[0].windows,
                "wall_s": med(kind, "wall_s"), "inner_s": med(kind, "inner_s"),
                "peak_pss_mib": med(kind, "peak_pss_mib"), "peak_rss_sum_mib": med(kind, "peak_rss_sum_mib"),
                "max_peak_pss_mib": max(r.peak_pss_mib for r in runs),
            }
            if kind.startswith("geoseg"):
                keys = ("actors_requested", "first_item_planned", "last_item_done", "exit")
                summary[kind]["phases_s"] = {
                    k: float(statistics.median(r.detail["phases"][k] for r in runs))
                    for k in keys if all(k in r.detail.get("phases", {}) for r in runs)
                }
                steady = [r.detail.get("steady_windows_per_s") for r in runs]
                summary[kind]["steady_windows_per_s"] = (
                    float(statistics.median(steady)) if all(v is not None for v in steady) else None)
            if kind.startswith("model_only"):
                wps = [r.detail["windows_per_s"] for r in runs]
                summary[kind]["windows_per_s"] = float(statistics.median(wps))
            else:
                summary[kind]["windows_per_s"] = runs[0].windows / summary[kind]["wall_s"]

        def ratio(x: float | None, y: float | None) -> float | None:
            return None if x is None or y is None or y == 0 else x / y

        mo = summary["model_only"]["windows_per_s"]
        checks = []

        def check(label: str, value: float | None, op: str, threshold: float) -> None:
            ok = None if value is None else (value <= threshold if op == "<=" else
                                             value >= threshold if op == ">=" else value < threshold)
            checks.append({"target": label, "value": value, "op": op, "threshold": threshold, "pass": ok})

        s = summary
        small_label = f"{a.scenes} x {a.size}^2"
        check(f"time geoseg / baseline, {small_label}",
              ratio(s["geoseg_small"]["wall_s"], s["baseline_small"]["wall_s"]), "<=", 1.0)
        if "geoseg_big" in s:
            check(f"time geoseg / baseline, 1 x {a.big}^2",
                  ratio(s["geoseg_big"]["wall_s"], s["baseline_big"]["wall_s"]), "<=", 1.0)
        check(f"throughput geoseg / model-only, {small_label}",
              ratio(s["geoseg_small"]["windows_per_s"], mo), ">=", 0.85)
        if "geoseg_big" in s:
            check(f"throughput geoseg / model-only, 1 x {a.big}^2",
                  ratio(s["geoseg_big"]["windows_per_s"], mo), ">=", 0.85)
            px = (a.big / a.size) ** 2
            check(f"memory flatness: geoseg peak 1 x {a.big}^2 / 1 x {a.size}^2 ({px:g}x pixels)",
                  ratio(s["geoseg_big"]["peak_pss_mib"], s["geoseg_one"]["peak_pss_mib"]), "<=", 1.2)
            check(f"memory geoseg / baseline at 1 x {a.big}^2",
                  ratio(s["geoseg_big"]["peak_pss_mib"], s["baseline_big"]["peak_pss_mib"]), "<", 1.0)

        doc = {
            "config": {
                "scenes": a.scenes, "size": a.size, "big": a.big, "repeats": a.repeats, "workers": a.workers,
                "threads": a.threads, "roi": ROI, "overlap": OVERLAP, "blend": "gaussian", "batch": BATCH,
                "normalize": {"mean": MEAN, "std": STD}, "quick": a.quick,
                "sample_every_s": SAMPLE_EVERY, "pss_every_s": a.pss_every,
            },
            "environment": {
                "cpu_count": os.cpu_count(), "machine": platform.machine(),
                "python": platform.python_version(),
                "torch": torch.__version__, "ray": ray.__version__, "monai": monai_version,
                "numpy": np.__version__, "loadavg_at_end": os.getloadavg(),
                "other_ray_at_start": self.args.other_ray,
            },
            "runs": [asdict(r) for r in self.runs],
            "summary": summary,
            "checks": checks,
            "agreement": self.agreement,
            "total_s": total_s,
        }
        (self.out / "results.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        md = markdown(doc)
        (self.out / "results.md").write_text(md, encoding="utf-8")
        print(md)
        return doc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Side-by-side benchmark: MONAI baseline vs model-only vs `geoseg run` (2D rasters).")
    p.add_argument("--out", type=Path, default=Path("bench-output"),
                   help="output folder (default bench-output/)")
    p.add_argument("--scenes", type=int, default=None, help="scenes at --size (default 8)")
    p.add_argument("--size", type=int, default=None, help="side of those scenes in pixels (default 2048)")
    p.add_argument("--big", type=int, default=None,
                   help="side of the single big scene (default 8192; 0 skips)")
    p.add_argument("--repeats", type=int, default=None, help="repeats, medians reported (default 3)")
    p.add_argument("--workers", type=int, default=None, help="geoseg actors (default: os.cpu_count())")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the baseline and model-only (default: os.cpu_count())")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 scenes of 512, big 1024, 1 repeat (explicit options still win)")
    p.add_argument("--pss-every", type=float, default=2.0,
                   help="seconds between exact PSS reads; memory is sampled every 0.2 s and PSS "
                        "carried forward by RSS changes in between (0.2: exact PSS at every sample)")
    p.add_argument("--allow-other-ray", action="store_true",
                   help="run even though another Ray is running (figures will not be reliable)")
    args = p.parse_args(argv)
    cpus = os.cpu_count() or 1
    quick = {"scenes": 2, "size": 512, "big": 1024, "repeats": 1}
    full = {"scenes": 8, "size": 2048, "big": 8192, "repeats": 3}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.workers = args.workers or cpus
    args.threads = args.threads or cpus
    if args.scenes < 1 or args.size < 16 or args.repeats < 1 or args.big < 0 or args.workers < 1:
        p.error("--scenes, --size, --repeats and --workers must be positive, --big >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_baseline":
        return baseline_main(argv[1:])
    if argv and argv[0] == "_model_only":
        return model_only_main(argv[1:])
    args = parse_args(argv)
    if not Path("/proc/self/stat").exists():
        raise SystemExit("this benchmark reads /proc: Linux only")
    others = ray_daemons_running()
    args.other_ray = others
    if others:
        msg = "another Ray is running: " + ", ".join(others)
        if not args.allow_other_ray:
            raise SystemExit(msg + "\nstop it first (ray stop), or pass --allow-other-ray for a smoke test")
        log("WARNING: " + msg + "; its processes are excluded from memory, but timings will be disturbed")
    doc = Bench(args).go()
    failed = [c for c in doc["checks"] if c["pass"] is False]
    log(f"done in {doc['total_s'] / 60:.1f} min; results in {args.out / 'results.md'} and results.json"
        + (f"; {len(failed)} target(s) missed" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
