#!/usr/bin/env python
"""Side-by-side benchmark of the 3D volume path (issue 3): a plain nibabel + MONAI baseline
versus ``geoseg run`` (a volume workflow), on generated NIfTI volumes, with the same TorchScript 3D UNet and the
same tiling (roi 96³, gaussian blend, overlap 0.25 and 0.5, the same batch size).

Contenders, each in a fresh subprocess (its memory and start-up are its own):

* **baseline** -- what a user would otherwise write: ``nib.load(p).get_fdata(dtype=np.float32)``,
  MONAI ``sliding_window_inference``, ``argmax``, ``nib.save`` of ``labels.nii.gz`` with the
  input's affine; torch threads = ``--threads`` (default: all cores);
* **pipeline** -- ``geoseg --no-progress run WORKFLOW`` (roi ``[96, 96, 96]``, the same overlap,
  blend and batch; formats and workers left to geoseg's defaults: the NIfTI label map, one actor
  per CPU) on its own local Ray;
* **model-only** -- the forward passes alone over windows already in memory (with ``--threads``
  and with 1 torch thread, the rate of one actor): the throughput limit.

Memory is the peak of the summed PSS of the run's whole process tree and its Ray processes,
sampled every 0.2 s (``bench_memory.MemorySampler``, as in landcover_bench.py).

Run ``python benchmarks/volume_bench.py --help``; see ``benchmarks/README.md``. Linux only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from bench_memory import MemorySampler, ray_daemons_running
from bench_runs import RESULT_TAG, Run, fail, fill_run, geoseg_phases, log, measured, result_line, thread_env
from volume_bench_data import (
    AFFINE,
    FULL_SIZES,
    MODEL_DESCRIPTION,
    ROI,
    make_model,
    parse_size,
    size_label,
    window_count,
    write_volume,
)
from volume_bench_report import markdown, summarize

SMOKE = {"sizes": ["64x64x48", "96x96x96"], "reps": 1, "model_windows": 8}
FULL = {"sizes": list(FULL_SIZES), "reps": 3, "model_windows": 32}
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------
# Subprocess modes (run as ``volume_bench.py _baseline ...`` / ``_model_only ...``)
# ------------------------------------------------------------------------------------------


def _emit(result: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


def baseline_main(argv: Sequence[str]) -> int:
    """nibabel loads the whole volume -> MONAI sliding_window_inference -> argmax -> labels.nii.gz."""
    p = argparse.ArgumentParser(prog="volume_bench.py _baseline")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--overlap", type=float, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("volume")
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    import nibabel as nib
    import torch
    from monai.inferers import sliding_window_inference

    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model, map_location="cpu").eval()
    args.out.mkdir(parents=True, exist_ok=True)
    t_ready = time.perf_counter()
    img = nib.load(args.volume)
    x = img.get_fdata(dtype=np.float32)
    t_loaded = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(x)[None, None], roi_size=(ROI, ROI, ROI), sw_batch_size=args.batch, predictor=model,
            overlap=args.overlap, mode="gaussian",
        )
        labels = torch.argmax(logits, dim=1)[0].to(torch.uint8).numpy()
    del logits
    t_inferred = time.perf_counter()
    nib.save(nib.Nifti1Image(labels, img.affine), args.out / "labels.nii.gz")
    t_saved = time.perf_counter()
    _emit({
        "startup_s": t_ready - t_start, "load_s": t_loaded - t_ready, "infer_s": t_inferred - t_loaded,
        "save_s": t_saved - t_inferred, "own_s": t_saved - t_ready, "threads": torch.get_num_threads(),
    })
    return 0


def model_only_main(argv: Sequence[str]) -> int:
    """Forward passes alone over MONAI's first ``--windows`` windows of a volume (cycled when it
    has fewer), pre-extracted into memory, after untimed warm-up batches."""
    p = argparse.ArgumentParser(prog="volume_bench.py _model_only")
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--overlap", type=float, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--windows", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (TorchScript profiling runs)")
    p.add_argument("volume")
    args = p.parse_args(argv)

    import nibabel as nib
    import torch
    from monai.data.utils import dense_patch_slices

    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model, map_location="cpu").eval()
    x = nib.load(args.volume).get_fdata(dtype=np.float32)
    pad = [(max(ROI - n, 0) // 2, max(ROI - n, 0) - max(ROI - n, 0) // 2) for n in x.shape]
    x = np.pad(x, pad)  # as MONAI pads a volume smaller than the roi
    interval = tuple(ROI if n == ROI else max(int(ROI * (1 - args.overlap)), 1) for n in x.shape)
    slices = dense_patch_slices(x.shape, (ROI, ROI, ROI), interval)
    grid = len(slices)
    picked = [slices[i % grid] for i in range(args.windows)]
    windows = np.ascontiguousarray(np.stack([x[s][None] for s in picked]))
    del x
    n, b = len(windows), args.batch
    with torch.inference_mode():
        for w in range(args.warmup):
            model(torch.from_numpy(windows[(w * b) % n : (w * b) % n + b]))
        t0 = time.perf_counter()
        for s in range(0, n, b):
            model(torch.from_numpy(windows[s : s + b]))
        seconds = time.perf_counter() - t0
    _emit({"windows": n, "grid_windows": grid, "seconds": seconds, "windows_per_s": n / seconds,
           "threads": torch.get_num_threads(), "batch": b})
    return 0


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.workdir
        self.data = self.work / "data"
        self.runs_dir = self.work / "runs"
        self.logs = self.work / "logs"
        self.py = sys.executable
        self.script = str(Path(__file__).resolve())
        geoseg = Path(sys.executable).parent / "geoseg"
        self.geoseg = str(geoseg) if geoseg.exists() else (shutil.which("geoseg") or "")
        if not self.geoseg:
            raise SystemExit("cannot find the geoseg console script (install the package into this venv)")
        self.runs: list[Run] = []
        self.agreement: dict[str, dict[str, Any]] = {}
        self.volumes: dict[tuple[int, int, int], Path] = {}
        self.generation: dict[str, float] = {}

    def prepare(self) -> None:
        for d in (self.data, self.runs_dir, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.model = make_model(self.work / "unet_3d.pt")
        suffix = ".nii.gz" if self.args.gz else ".nii"
        for i, shape in enumerate(self.args.sizes):
            path = self.data / f"vol_{size_label(shape)}{suffix}"
            seconds = write_volume(path, shape, seed=100 + i)
            self.volumes[shape] = path
            self.generation[size_label(shape)] = seconds
            log(f"generated {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in {seconds:.1f} s")

    # -- contenders ----------------------------------------------------------------------------

    def _new(self, kind: str, repeat: int, shape: tuple[int, int, int], overlap: float, ctx: dict[str, Any]) -> Run:
        run = Run(kind, repeat, 1, int(np.prod(shape)), window_count(shape, ROI, overlap))
        run.detail = {"size": size_label(shape), "overlap": overlap, **ctx}
        return run

    def _measure(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None
                 ) -> tuple[float, MemorySampler, str, int, dict[str, Any]]:
        """``measured`` (landcover_bench.py), plus what else ran: the load average and any other
        Ray seen just before the run (the start-up check cannot see a Ray started later)."""
        ctx = {"loadavg_before": os.getloadavg()[0], "other_ray_before": ray_daemons_running()}
        wall, s, stdout, rc = measured(cmd, log_path, env=env, pss_every=self.args.pss_every)
        return wall, s, stdout, rc, ctx

    def _out_dir(self, kind: str, shape: tuple[int, int, int], overlap: float) -> Path:
        out = self.runs_dir / f"{kind}_{size_label(shape)}_ov{overlap:g}"
        shutil.rmtree(out, ignore_errors=True)
        return out

    def workflow(self, shape: tuple[int, int, int], overlap: float, out: Path) -> Path:
        """The pipeline's workflow: what ``geoseg predict VOLUME --model M --roi-size 96,96,96
        --overlap O --batch-size B`` builds, with the output formats and the workers left to
        geoseg's defaults (the volume label map; one actor per CPU)."""
        import yaml

        tiling: dict[str, Any] = {"roi_size": [ROI] * 3, "overlap": overlap, "blend": "gaussian",
                                  "batch_size": self.args.batch}
        if self.args.block_size:
            tiling["block_size"] = self.args.block_size
        data = {
            "version": 1,
            "name": f"volume-bench-{size_label(shape)}-ov{overlap:g}",
            "inputs": {"paths": [str(self.volumes[shape])]},
            "model": {"type": "torchscript", "path": str(self.model)},
            "tiling": tiling,
            "output": {"directory": str(out)},
        }
        path = self.work / "workflows" / f"{size_label(shape)}_ov{overlap:g}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    def run_baseline(self, repeat: int, shape: tuple[int, int, int], overlap: float) -> Run:
        a = self.args
        out = self._out_dir("baseline", shape, overlap)
        cmd = [self.py, self.script, "_baseline", "--model", str(self.model), "--out", str(out), "--threads",
               str(a.threads), "--overlap", str(overlap), "--batch", str(a.batch), str(self.volumes[shape])]
        log_path = self.logs / f"baseline_{size_label(shape)}_ov{overlap:g}_r{repeat}.log"
        wall, s, stdout, rc, ctx = self._measure(cmd, log_path, env=thread_env(a.threads))
        if rc != 0:
            fail("baseline", rc, log_path, stdout)
        res = result_line(stdout)
        run = fill_run(self._new("baseline", repeat, shape, overlap, ctx), wall, s)
        run.inner_s = res["own_s"]
        run.detail.update(res)
        return run

    def run_pipeline(self, repeat: int, shape: tuple[int, int, int], overlap: float) -> Run:
        out = self._out_dir("pipeline", shape, overlap)
        cmd = [self.geoseg, "--no-progress", "run", str(self.workflow(shape, overlap, out))]
        log_path = self.logs / f"pipeline_{size_label(shape)}_ov{overlap:g}_r{repeat}.log"
        wall, s, stdout, rc, ctx = self._measure(cmd, log_path)
        if rc != 0:
            fail("geoseg run", rc, log_path, stdout)
        run = fill_run(self._new("pipeline", repeat, shape, overlap, ctx), wall, s)
        m = re.search(r"(\d+) item\(s\) done, (\d+) failed in ([\d.]+) s", stdout)
        if m:
            run.inner_s = float(m.group(3))
        phases = geoseg_phases(log_path, getattr(s, "launched", time.time() - wall))
        phases["exit"] = wall
        run.detail["phases"] = phases
        job = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        span = float(job.get("inference_seconds") or 0.0)
        run.detail.update(inference_phase_s=span, actors=job.get("actors"),
                          windows_run=job.get("windows_run"),
                          steady_windows_per_s=run.windows / span if span > 0 else None)
        return run

    def run_model_only(self, repeat: int, threads: int) -> Run:
        a = self.args
        kind = "model_only" if threads == a.threads else "model_only_1t"
        shape = a.sizes[0]
        cmd = [self.py, self.script, "_model_only", "--model", str(self.model), "--threads", str(threads),
               "--overlap", str(a.overlaps[0]), "--batch", str(a.batch), "--windows", str(a.model_windows),
               str(self.volumes[shape])]
        log_path = self.logs / f"{kind}_r{repeat}.log"
        wall, s, stdout, rc, ctx = self._measure(cmd, log_path, env=thread_env(threads))
        if rc != 0:
            fail(kind, rc, log_path, stdout)
        res = result_line(stdout)
        run = fill_run(self._new(kind, repeat, shape, a.overlaps[0], ctx), wall, s)
        run.windows = res["windows"]
        run.inner_s = res["seconds"]
        run.detail.update(res)
        return run

    # -- correctness ---------------------------------------------------------------------------

    def compare(self, shape: tuple[int, int, int], overlap: float) -> dict[str, Any]:
        """Fraction of equal voxels of the two label maps; the pipeline's grid checked too."""
        import nibabel as nib

        tag = f"{size_label(shape)}_ov{overlap:g}"
        item = self.volumes[shape].name.split(".")[0]
        base = nib.load(self.runs_dir / f"baseline_{tag}" / "labels.nii.gz")
        ours = nib.load(self.runs_dir / f"pipeline_{tag}" / item / "labels.nii.gz")
        if base.shape != ours.shape:
            return {"error": f"shapes differ: baseline {base.shape}, pipeline {ours.shape}"}
        a, b = np.asarray(base.dataobj), np.asarray(ours.dataobj)
        equal = int(np.count_nonzero(a == b))
        counts = np.bincount(a.ravel(), minlength=3)
        return {
            "agreement": equal / a.size, "voxels": int(a.size), "differing": int(a.size - equal),
            "baseline_class_shares": {str(k): round(float(v) / a.size, 4) for k, v in enumerate(counts) if v},
            "pipeline_affine_equal": bool(np.allclose(ours.affine, AFFINE, atol=1e-4)),
            "pipeline_dtype": str(ours.get_data_dtype()),
        }

    # -- the schedule --------------------------------------------------------------------------

    def go(self) -> dict[str, Any]:
        a = self.args
        t_all = time.perf_counter()
        self.prepare()
        configs = [(shape, ov) for shape in a.sizes for ov in a.overlaps]
        log(f"{len(configs)} configuration(s) x {a.reps} repetition(s); batch {a.batch}, baseline threads "
            f"{a.threads}, pipeline actors: geoseg's default (one per CPU)")
        for r in range(a.reps):
            for threads in sorted({a.threads, 1}, reverse=True):
                run = self.run_model_only(r, threads)
                self.runs.append(run)
                log(f"rep {r + 1}/{a.reps}: {run.kind} {run.detail['windows_per_s']:.2f} windows/s "
                    f"({threads} thread(s))")
            for shape, ov in configs:
                # interleaved; the order alternates between repetitions so that drift cancels
                order = (self.run_baseline, self.run_pipeline) if r % 2 == 0 else (self.run_pipeline, self.run_baseline)
                for fn in order:
                    run = fn(r, shape, ov)
                    self.runs.append(run)
                    log(f"rep {r + 1}/{a.reps}: {run.kind} {size_label(shape)} overlap {ov:g} "
                        f"({run.windows} windows): {run.wall_s:.1f} s, peak PSS {run.peak_pss_mib:.0f} MiB")
                if r == 0:
                    ag = self.compare(shape, ov)
                    self.agreement[f"{size_label(shape)}/{ov:g}"] = ag
                    log(f"  labels: agreement {ag.get('agreement', float('nan')):.6f} {ag.get('error', '')}")
        return self.report(time.perf_counter() - t_all)

    def report(self, total_s: float) -> dict[str, Any]:
        import monai
        import nibabel
        import ray
        import torch

        a = self.args
        doc: dict[str, Any] = {
            "config": {
                "sizes": [list(s) for s in a.sizes], "overlaps": a.overlaps, "reps": a.reps, "roi": ROI,
                "blend": "gaussian", "batch": a.batch, "threads": a.threads,
                "workers": "geoseg default (one per CPU)", "block_size": a.block_size or "geoseg default",
                "model": MODEL_DESCRIPTION, "model_windows": a.model_windows,
                "input": {"format": ".nii.gz" if a.gz else ".nii", "dtype": "float32",
                          "affine": AFFINE.tolist(), "generation_s": self.generation},
                "smoke": a.smoke, "pss_every_s": a.pss_every, "sample_every_s": 0.2,
            },
            "environment": {
                "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                "torch": torch.__version__, "ray": ray.__version__, "monai": monai.__version__,
                "nibabel": nibabel.__version__, "numpy": np.__version__, "loadavg_at_end": os.getloadavg(),
                "other_ray_at_start": a.other_ray, "geoseg_commit": _git_commit(),
            },
            "runs": [asdict(r) for r in self.runs],
            "agreement": self.agreement,
            "total_s": total_s,
        }
        doc.update(summarize(doc))
        json_path, md_path = a.out.with_suffix(".json"), a.out.with_suffix(".md")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        md = markdown(doc)
        md_path.write_text(md, encoding="utf-8")
        print(md)
        return doc


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Side-by-side benchmark: nibabel + MONAI sliding_window_inference vs `geoseg run` (3D).")
    p.add_argument("--out", type=Path, default=None,
                   help="output path without suffix: writes OUT.json and OUT.md "
                        "(default docs/bench/volume-3d-DATE; with --smoke bench-output/volume-3d-smoke-DATE)")
    p.add_argument("--sizes", nargs="+", default=None, metavar="IxJxK",
                   help="volume shapes, IxJxK or N for a cube (default 256x256x128 512x512x512)")
    p.add_argument("--overlaps", nargs="+", type=float, default=[0.25, 0.5], help="default 0.25 0.5")
    p.add_argument("--reps", type=int, default=None, help="repetitions, medians reported (default 3)")
    p.add_argument("--batch", type=int, default=4,
                   help="windows per forward pass: the pipeline's --batch-size and the baseline's "
                        "sw_batch_size (default 4)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the baseline and model-only (default: os.cpu_count())")
    p.add_argument("--block-size", type=int, default=None, help="pipeline output block edge (default: geoseg's)")
    p.add_argument("--model-windows", type=int, default=None,
                   help="windows timed by model-only (default 32; smoke 8)")
    p.add_argument("--gz", action="store_true",
                   help="inputs as .nii.gz instead of uncompressed .nii (the pipeline then inflates each to "
                        "disk first)")
    p.add_argument("--smoke", action="store_true",
                   help="64x64x48 and 96x96x96, 1 repetition: a few minutes (explicit options still win)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for volumes, model, outputs and logs (default: a temporary folder, removed "
                        "at the end unless --keep or a run failed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    p.add_argument("--pss-every", type=float, default=2.0,
                   help="seconds between exact PSS reads (memory is sampled every 0.2 s; see README)")
    p.add_argument("--allow-other-ray", action="store_true",
                   help="run even though another Ray is running (figures will not be reliable)")
    args = p.parse_args(argv)
    preset = SMOKE if args.smoke else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.sizes = sorted({parse_size(s) for s in args.sizes}, key=lambda s: (int(np.prod(s)), s))
    except ValueError as exc:
        p.error(str(exc))
    args.overlaps = sorted(set(args.overlaps))
    if not all(0 <= o < 1 for o in args.overlaps):
        p.error(f"--overlaps must lie in [0, 1), got {args.overlaps}")
    if args.reps < 1 or args.batch < 1 or args.model_windows < 1:
        p.error("--reps, --batch and --model-windows must be positive")
    args.threads = args.threads or os.cpu_count() or 1
    if args.out is None:
        date = datetime.date.today().isoformat()
        args.out = (REPO / "bench-output" / f"volume-3d-smoke-{date}") if args.smoke else (
            REPO / "docs" / "bench" / f"volume-3d-{date}")
    elif args.out.suffix in (".json", ".md"):
        args.out = args.out.with_suffix("")
    args.out = args.out.resolve()
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
    temporary = args.workdir is None
    args.workdir = Path(tempfile.mkdtemp(prefix="geoseg-volbench-")) if temporary else args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log(f"work folder {args.workdir}")
    ok = False
    try:
        doc = Bench(args).go()
        ok = True
    finally:
        if temporary and ok and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
        elif not ok:
            log(f"kept the work folder for inspection: {args.workdir}")
    failed = [c for c in doc["checks"] if c["pass"] is False]
    log(f"done in {doc['total_s'] / 60:.1f} min; results in {args.out.with_suffix('.md')} and .json"
        + (f"; {len(failed)} target(s) missed" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
