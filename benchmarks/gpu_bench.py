#!/usr/bin/env python
"""Does geoseg keep a GPU fed? Model-only windows/s on CUDA against geoseg's sustained rate.

On a machine with a CUDA GPU, with the land-cover benchmark's MONAI UNet (``landcover_bench.
make_model``: 2D, 4 in, 4 out, channels (16, 32, 64, 128), strides (2, 2, 2), 2 residual units,
random weights from seed 0, **scripted** with ``torch.jit.script``: the very file geoseg loads):

* ``model_only`` (a subprocess): the forward passes alone on ``cuda:0``, a batch of
  ``--batch-size`` windows of 256² already on the GPU (random values), each pass followed by
  ``.float()`` as geoseg's Predictor does; after 5 untimed warm-up passes, passes in chunks of 10
  timed with ``torch.cuda.synchronize()`` until ``--model-seconds`` have passed; in fp32 and under
  ``torch.autocast("cuda", torch.bfloat16)``; peak ``torch.cuda.max_memory_allocated``.
* ``geoseg`` (a subprocess): ``geoseg --no-progress run WORKFLOW`` on one generated ``--size``²
  4-band uint16 scene (``landcover_bench_scenes``), the same model and batch, roi 256, overlap
  0.25, gaussian, block 512, ``resources: {workers: 1, gpus_per_worker: 1, cpus_per_worker:
  --cpus-per-worker, backend: --backend}``, ``inference.precision`` bf16 with ``--amp`` (else
  fp32). Its sustained rate is ``summary.json`` ``windows_per_second`` (first task to last result).
  Meanwhile ``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,
  nounits -lms 200`` samples the GPU; the busy fraction is the median / mean utilization over the
  samples inside geoseg's inference phase (from its log: whole seconds, bounds rounded inward).

Reported (medians over ``--repeats``): model-only windows/s (fp32 and bf16), geoseg sustained
windows/s, their ratio at geoseg's precision (target >= 0.9), GPU busy fraction, peak GPU memory
(nvidia-smi, and above the idle reading). Writes ``OUT/results.json`` (every repeat) and
``OUT/results.md``; ``--report PATH`` copies both. Without CUDA it exits 2 with one line.

    .venv/bin/python benchmarks/gpu_bench.py [--amp] [--batch-size 32] [--size 8192] [--report docs/bench/gpu-DATE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from bench_runs import RESULT_TAG, Run, fail, fill_run, geoseg_phases, log, measured, result_line
from landcover_bench import MEAN, OVERLAP, ROI, STD, make_model
from landcover_bench_scenes import BANDS, BLOCK, CLASSES, ensure_scene

TARGET_RATIO = 0.9


def model_only_main(argv: Sequence[str]) -> int:
    """``gpu_bench.py _model_only ...``: the forward passes alone on ``cuda:0``, fp32 then bf16."""
    p = argparse.ArgumentParser(prog="gpu_bench.py _model_only")
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args(argv)

    import torch

    dev = torch.device("cuda", 0)
    model = torch.jit.load(args.model, map_location=dev).eval()
    x = torch.randn(args.batch_size, BANDS, ROI, ROI, device=dev)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__,
                              "cuda": torch.version.cuda, "batch_size": args.batch_size}
    for precision in ("fp32", "bf16"):
        cast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
        with torch.inference_mode(), cast:
            for _ in range(5):  # TorchScript's profiling runs, cuDNN's algorithm choice
                model(x).float()
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            passes, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                for _ in range(10):
                    model(x).float()
                torch.cuda.synchronize(dev)
                passes += 10
            seconds = time.perf_counter() - t0
        result[precision] = {"windows": passes * args.batch_size, "seconds": seconds,
                             "windows_per_s": passes * args.batch_size / seconds,
                             "peak_allocated_mib": torch.cuda.max_memory_allocated(dev) / 2**20}
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


class GpuSampler:
    """``nvidia-smi ... -lms 200`` in the background: (epoch seconds, utilization %, MiB used)."""

    def __init__(self, gpu: int, every_ms: int = 200) -> None:
        self.cmd = ["nvidia-smi", "-i", str(gpu), "--query-gpu=timestamp,utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits", "-lms", str(every_ms)]
        if shutil.which("stdbuf"):  # line-buffered: no samples stuck in a pipe buffer
            self.cmd = ["stdbuf", "-oL", *self.cmd]
        self.samples: list[tuple[float, float, float]] = []
        self.proc: subprocess.Popen[str] | None = None
        self.thread: threading.Thread | None = None

    @staticmethod
    def parse(line: str) -> tuple[float, float, float] | None:
        parts = [s.strip() for s in line.split(",")]
        if len(parts) != 3:
            return None
        try:
            stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            return stamp, float(parts[1]), float(parts[2])
        except ValueError:  # "[N/A]", "[Not Supported]", a half line
            return None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        stdout = self.proc.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                if (sample := self.parse(line)) is not None:
                    self.samples.append(sample)

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.thread is not None:
            self.thread.join(timeout=10)


def nvidia_smi_once(gpu: int) -> tuple[float, float, float] | None:
    try:
        out = subprocess.run(["nvidia-smi", "-i", str(gpu), "--query-gpu=timestamp,utilization.gpu,memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return GpuSampler.parse(out.strip().splitlines()[0]) if out.strip() else None


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out.resolve()
        self.precision = "bf16" if args.amp else "fp32"
        geoseg = Path(sys.executable).parent / "geoseg"
        self.geoseg = str(geoseg) if geoseg.exists() else (shutil.which("geoseg") or "")
        if not self.geoseg:
            raise SystemExit("cannot find the geoseg console script (install the package into this venv)")
        self.runs: list[Run] = []

    def prepare(self) -> None:
        self.scene = ensure_scene(self.out / "data" / f"scene_{self.args.size}.tif", self.args.size, seed=7)
        self.model = make_model(self.out / "models" / "unet.pt")

    def workflow(self, out_dir: Path) -> Path:
        import yaml

        a = self.args
        data = {
            "version": 1, "name": "gpu-bench",
            "inputs": {"paths": [str(self.scene)]},
            "model": {"type": "torchscript", "path": str(self.model), "in_channels": BANDS, "num_classes": CLASSES},
            "preprocessing": {"normalize": {"mean": list(MEAN), "std": list(STD)}},
            "tiling": {"roi_size": ROI, "overlap": OVERLAP, "blend": "gaussian", "batch_size": a.batch_size,
                       "block_size": BLOCK},
            "output": {"directory": str(out_dir), "formats": ["cog"]},
            "resources": {"workers": 1, "gpus_per_worker": 1, "cpus_per_worker": a.cpus_per_worker,
                          "backend": a.backend},
            "inference": {"precision": self.precision, "channels_last": a.channels_last},
        }
        path = self.out / "workflows" / "gpu_bench.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    def run_model_only(self, repeat: int) -> Run:
        a = self.args
        cmd = [sys.executable, str(Path(__file__).resolve()), "_model_only", "--model", str(self.model),
               "--batch-size", str(a.batch_size), "--seconds", str(a.model_seconds)]
        cmd += ["--channels-last"] if a.channels_last else []
        log_path = self.out / "logs" / f"model_only_r{repeat}.log"
        wall, sampler, stdout, rc = measured(cmd, log_path, pss_every=a.pss_every)
        if rc != 0:
            fail("model_only", rc, log_path, stdout)
        res = result_line(stdout)
        run = fill_run(Run("model_only", repeat, 0, 0, res[self.precision]["windows"]), wall, sampler)
        run.inner_s, run.detail = res[self.precision]["seconds"], res
        log(f"  model-only: fp32 {res['fp32']['windows_per_s']:.0f}, bf16 {res['bf16']['windows_per_s']:.0f} "
            "windows/s")
        return run

    def run_geoseg(self, repeat: int) -> Run:
        out_dir = self.out / "runs" / "geoseg"
        shutil.rmtree(out_dir, ignore_errors=True)  # geoseg's ledger would skip the done item
        cmd = [self.geoseg, "--no-progress", "run", str(self.workflow(out_dir))]
        log_path = self.out / "logs" / f"geoseg_r{repeat}.log"
        idle = nvidia_smi_once(self.args.gpu)
        gpu = GpuSampler(self.args.gpu)
        gpu.start()
        try:
            launched = time.time()
            wall, sampler, stdout, rc = measured(cmd, log_path, pss_every=self.args.pss_every, settle_s=10.0)
        finally:
            gpu.stop()
        if rc != 0:
            fail("geoseg", rc, log_path, stdout)
        job = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        run = fill_run(Run("geoseg", repeat, 1, self.args.size**2, int(job.get("windows_run") or 0)), wall, sampler)
        run.inner_s = job.get("seconds")
        phases = geoseg_phases(log_path, launched)
        run.detail = {k: job.get(k) for k in ("windows_per_second", "inference_seconds", "backend", "actors",
                                              "driver_cpu_ms_per_window", "bytes_from_workers")}
        run.detail.update(phases=phases, idle_gpu_mib=idle[2] if idle else None,
                          gpu=self.gpu_figures(gpu.samples, launched, phases, idle))
        g = run.detail["gpu"]
        log(f"  geoseg: {wall:.1f} s wall, sustained {job.get('windows_per_second')} windows/s, "
            f"GPU busy median {g['util_median']} % over {g['samples_in_phase']} samples ({g['span']})")
        return run

    @staticmethod
    def gpu_figures(samples: list[tuple[float, float, float]], launched: float, phases: dict[str, float],
                    idle: tuple[float, float, float] | None) -> dict[str, Any]:
        start, end = phases.get("first_item_planned"), phases.get("last_item_done")
        span = "inference phase (log, rounded inward)"
        inside: list[tuple[float, float, float]] = []
        if start is not None and end is not None:  # log stamps are truncated: +1 s for the start
            inside = [s for s in samples if launched + start + 1.0 <= s[0] <= launched + end]
        if not inside:
            span, inside = "whole run (no inference phase found in the log)", samples
        util = [s[1] for s in inside]
        peak = max((s[2] for s in samples), default=None)
        return {"span": span, "samples": len(samples), "samples_in_phase": len(inside),
                "util_median": median(util), "util_mean": statistics.fmean(util) if util else None,
                "peak_mib": peak, "peak_above_idle_mib": peak - idle[2] if peak is not None and idle else None,
                "series": [(round(t - launched, 2), u, m) for t, u, m in samples]}

    def go(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.prepare()
        for r in range(self.args.repeats):
            log(f"repeat {r + 1}/{self.args.repeats}")
            self.runs += [self.run_model_only(r), self.run_geoseg(r)]
        return self.report(time.perf_counter() - t0)

    def report(self, total_s: float) -> dict[str, Any]:
        mo = [r for r in self.runs if r.kind == "model_only"]
        gs = [r for r in self.runs if r.kind == "geoseg"]
        s: dict[str, Any] = {
            "model_only_fp32": median([r.detail["fp32"]["windows_per_s"] for r in mo]),
            "model_only_bf16": median([r.detail["bf16"]["windows_per_s"] for r in mo]),
            "model_only_peak_allocated_mib": median([r.detail[self.precision]["peak_allocated_mib"] for r in mo]),
            "geoseg_sustained": median([r.detail["windows_per_second"] for r in gs]),
            "geoseg_end_to_end": median([r.windows / r.wall_s for r in gs]),
            "geoseg_wall_s": median([r.wall_s for r in gs]),
            "gpu_util_median": median([r.detail["gpu"]["util_median"] for r in gs]),
            "gpu_util_mean": median([r.detail["gpu"]["util_mean"] for r in gs]),
            "gpu_peak_mib": median([r.detail["gpu"]["peak_mib"] for r in gs]),
            "gpu_peak_above_idle_mib": median([r.detail["gpu"]["peak_above_idle_mib"] for r in gs]),
            "host_peak_pss_mib": median([r.peak_pss_mib for r in gs]),
        }
        ref, got = s[f"model_only_{self.precision}"], s["geoseg_sustained"]
        s["ratio"] = got / ref if got is not None and ref else None
        s["pass"] = None if s["ratio"] is None else s["ratio"] >= TARGET_RATIO
        first = mo[0].detail if mo else {}
        doc = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()}
               | {"precision": self.precision, "roi": ROI, "overlap": OVERLAP, "block": BLOCK,
                  "model": "MONAI UNet 2D (16, 32, 64, 128), TorchScript (scripted), seed 0"},
               "environment": {"gpu": first.get("device"), "torch": first.get("torch"), "cuda": first.get("cuda"),
                               "cpu_count": os.cpu_count()},
               "summary": s, "total_s": total_s, "runs": [asdict(r) for r in self.runs]}
        md = markdown(doc)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        (self.out / "results.md").write_text(md, encoding="utf-8")
        if self.args.report:
            self.args.report.parent.mkdir(parents=True, exist_ok=True)
            self.args.report.write_text(md, encoding="utf-8")
            self.args.report.with_suffix(".json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        print(md)
        return doc


def _fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(doc: dict[str, Any]) -> str:
    c, env, s = doc["config"], doc["environment"], doc["summary"]
    res = "n/a" if s["pass"] is None else ("PASS" if s["pass"] else "FAIL")
    return "\n".join([
        "# geoseg on a GPU: sustained windows/s against the model alone",
        "",
        f"{env['gpu']} (torch {env['torch']}, CUDA {env['cuda']}, {env['cpu_count']} CPUs); {c['model']}; "
        f"batch {c['batch_size']}, roi {c['roi']}, overlap {c['overlap']}, block {c['block']}; geoseg "
        f"precision {c['precision']}, channels_last {c['channels_last']}, backend {c['backend']}, "
        f"cpus_per_worker {c['cpus_per_worker']}; one {c['size']}² scene; medians of {c['repeats']} repeat(s).",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| model-only windows/s, fp32 | {_fmt(s['model_only_fp32'])} |",
        f"| model-only windows/s, bf16 autocast | {_fmt(s['model_only_bf16'])} |",
        f"| model-only peak allocated MiB ({c['precision']}) | {_fmt(s['model_only_peak_allocated_mib'], 0)} |",
        f"| geoseg sustained windows/s (summary.json, {c['precision']}) | {_fmt(s['geoseg_sustained'])} |",
        f"| geoseg end-to-end windows/s (windows / wall) | {_fmt(s['geoseg_end_to_end'])} |",
        f"| geoseg wall s | {_fmt(s['geoseg_wall_s'])} |",
        f"| GPU busy during inference: median / mean utilization % | {_fmt(s['gpu_util_median'])} / "
        f"{_fmt(s['gpu_util_mean'])} |",
        f"| peak GPU memory MiB (nvidia-smi; above idle) | {_fmt(s['gpu_peak_mib'], 0)} "
        f"({_fmt(s['gpu_peak_above_idle_mib'], 0)}) |",
        f"| geoseg host peak PSS MiB | {_fmt(s['host_peak_pss_mib'], 0)} |",
        "",
        "| target | value | threshold | result |",
        "|---|---:|---:|---|",
        f"| geoseg sustained / model-only windows/s ({c['precision']}) | {_fmt(s['ratio'], 3)} | "
        f">= {TARGET_RATIO} | {res} |",
        "",
        "- model-only: forward + .float() on a resident batch (no host-to-device copy), timed with "
        "torch.cuda.synchronize(); geoseg sustained: first task to last result stitched (reading, copies, "
        "blending and argmax included, start-up and the COG copy excluded).",
        "- GPU utilization: nvidia-smi every 200 ms, the samples inside geoseg's inference phase as its log "
        "gives it (whole seconds, rounded inward); every sample is in the JSON.",
        f"- total {doc['total_s'] / 60:.1f} min.",
        "",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_bench.py", description="geoseg on a CUDA GPU against the model alone")
    p.add_argument("--out", type=Path, default=Path("bench-output/gpu"), help="default bench-output/gpu")
    p.add_argument("--size", type=int, default=8192, help="side of the generated scene (default 8192)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass, both contenders")
    p.add_argument("--amp", action="store_true", help="geoseg with inference.precision bf16, compared to "
                   "model-only under bf16 autocast (default fp32)")
    p.add_argument("--channels-last", action="store_true", help="NHWC for both (inference.channels_last)")
    p.add_argument("--repeats", type=int, default=3, help="medians reported (default 3)")
    p.add_argument("--model-seconds", type=float, default=5.0, help="timed seconds per precision of model-only")
    p.add_argument("--cpus-per-worker", type=float, default=float(os.cpu_count() or 1),
                   help="the GPU worker's CPUs: its reading threads (default: all CPUs)")
    p.add_argument("--backend", choices=("auto", "local", "ray"), default="auto",
                   help="resources.backend (auto: local for one item on one GPU)")
    p.add_argument("--gpu", type=int, default=0, help="nvidia-smi index of the GPU torch sees as cuda:0")
    p.add_argument("--report", type=Path, default=None, help="also write the Markdown here (JSON beside it)")
    p.add_argument("--pss-every", type=float, default=2.0, help="seconds between exact host PSS reads")
    args = p.parse_args(argv)
    if args.size < ROI or args.batch_size < 1 or args.repeats < 1 or args.model_seconds <= 0:
        p.error(f"--size must be >= {ROI}; --batch-size, --repeats, --model-seconds positive")
    return args


def cuda_missing() -> str | None:
    """Why this machine cannot run the benchmark, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch (torch.cuda.is_available() is False)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_model_only":
        return model_only_main(argv[1:])
    args = parse_args(argv)
    why = cuda_missing()
    if why:
        print(f"gpu_bench.py needs a CUDA GPU: {why}", file=sys.stderr)
        return 2
    if not shutil.which("nvidia-smi"):
        log("WARNING: nvidia-smi not found: no GPU utilization or memory figures")
    doc = Bench(args).go()
    log(f"done in {doc['total_s'] / 60:.1f} min; results in {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
