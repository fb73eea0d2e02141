#!/usr/bin/env python
"""The DICOM path against the NIfTI path (issue 12), side by side in one run, contenders
alternated within each repeat, medians reported.

On the same generated CT-like volume (512 × 512 × N int16, rescale slope 1 / intercept -1024),
written once as an uncompressed NIfTI and once as a DICOM series (one file per slice, shuffled
names):

* ``read_once_N``: pydicom decodes every slice of the series once, in order (the cost of reading
  the files once, the allowance the issue grants);
* ``nifti_N``: ``geoseg run`` on the ``.nii``;
* ``dicom_N``: ``geoseg run`` on the series folder (``inputs.format: dicom``);
* ``dicom_seg_N``: the same with ``output.formats: [nifti, dicom-seg]`` (the DICOM SEG's cost).

The model is a small 3D convolution (TorchScript, 1 → 3 classes): the benchmark measures the
engine's reading and writing, not a network. Local backend, ``--workers`` workers, roi 96³,
overlap 0.25, gaussian. Reported: wall seconds, the ratio ``dicom / (nifti + read_once)``
(target ≤ 1.0) and peak PSS of the process tree, whose growth from the smallest to the largest N
says whether memory is flat in the number of slices.

    .venv/bin/python benchmarks/dicom_bench.py [--slices 100,400] [--repeats 2] [--out DIR] [--report docs/bench/x.md]
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

import numpy as np
import yaml
from bench_runs import RESULT_TAG, Run, fail, fill_run, log, measured, result_line

ROI = [96, 96, 96]
SIDE = 512


def _volume(slices: int) -> np.ndarray:
    """Stored values (HU + 1024) of a body with organs: smooth, so that it compresses like CT."""
    rng = np.random.default_rng(slices)
    ii, jj = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    body = (((ii - 256) / 200.0) ** 2 + ((jj - 256) / 160.0) ** 2) < 1
    out = np.zeros((SIDE, SIDE, slices), np.int16)
    for k in range(slices):
        plane = np.where(body, 1064, 24).astype(np.int16)
        plane[(((ii - 220) / 60.0) ** 2 + ((jj - 300) / 50.0) ** 2) < 1] = 1174
        out[:, :, k] = plane + rng.normal(0, 10, (SIDE, SIDE)).astype(np.int16)
    return out


def write_data(folder: Path, slices: int) -> tuple[Path, Path]:
    """The NIfTI and the DICOM series of one volume (written once, reused)."""
    import nibabel as nib

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from dicom_files import orthonormal_affine, write_series

    nii, series = folder / f"ct_{slices}.nii", folder / f"ct_{slices}_dicom"
    if nii.exists() and series.exists():
        return nii, series
    folder.mkdir(parents=True, exist_ok=True)
    vol = _volume(slices)
    affine = orthonormal_affine((0.7, 0.7, 1.25), 0.0)
    img = nib.Nifti1Image(vol, affine)
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, nii)
    write_series(series, vol, affine, slope=1.0, intercept=-1024.0)
    return nii, series


def read_once_main(argv: Sequence[str]) -> int:
    """Decode every file of a folder once with pydicom; print the seconds."""
    import pydicom

    folder = Path(argv[0])
    t0 = time.perf_counter()
    total = 0.0
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        total += float(ds.pixel_array[0, 0]) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    print(RESULT_TAG + json.dumps({"seconds": time.perf_counter() - t0, "check": total}), flush=True)
    return 0


def model(path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(net).save(str(path))
    return path


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out.resolve()
        self.geoseg = str(Path(sys.executable).parent / "geoseg")
        self.runs: list[Run] = []

    def workflow(self, name: str, source: Path, fmt: str, formats: list[str]) -> tuple[Path, Path]:
        out_dir = self.out / "runs" / name
        wf: dict[str, Any] = {
            "name": name, "inputs": {"paths": [str(source)], "format": fmt},
            "model": {"type": "torchscript", "path": str(self.model)},
            "preprocessing": {"intensity": {"mode": "window", "window": [-200, 300]}},
            "tiling": {"roi_size": ROI, "overlap": 0.25, "batch_size": 2},
            "output": {"directory": str(out_dir), "formats": formats},
            "resources": {"workers": self.args.workers, "cpus_per_worker": 1, "backend": "local"},
        }
        path = self.out / "workflows" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(wf))
        return path, out_dir

    def run(self, kind: str, repeat: int, cmd: list[str], out_dir: Path | None) -> None:
        import shutil

        log(f"{kind} (repeat {repeat + 1})")
        if out_dir is not None and out_dir.exists():
            shutil.rmtree(out_dir)
        log_path = self.out / "logs" / f"{kind}_r{repeat}.log"
        wall, sampler, stdout, rc = measured(cmd, log_path, pss_every=self.args.pss_every)
        if rc != 0:
            fail(kind, rc, log_path, stdout)
        run = fill_run(Run(kind, repeat, 1, 0, 0), wall, sampler)
        if out_dir is not None:
            job = json.loads((out_dir / "summary.json").read_text())
            if job.get("items_failed"):
                raise SystemExit(f"{kind}: an item failed: {job}")
            run.inner_s, run.windows = float(job["seconds"]), int(job["windows_run"])
        else:
            run.detail = result_line(stdout)
        self.runs.append(run)

    def go(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.model = model(self.out / "models" / "conv.pt")
        data = {n: write_data(self.out / "data", n) for n in self.args.slices}
        script = str(Path(__file__).resolve())
        for r in range(self.args.repeats):
            for n, (nii, series) in data.items():
                self.run(f"read_once_{n}", r, [sys.executable, script, "_read_once", str(series)], None)
                for kind, source, fmt, formats in (("nifti", nii, "nifti", ["nifti"]),
                                                   ("dicom", series, "dicom", ["nifti"]),
                                                   ("dicom_seg", series, "dicom", ["nifti", "dicom-seg"])):
                    wf, out_dir = self.workflow(f"{kind}_{n}", source, fmt, formats)
                    self.run(f"{kind}_{n}", r, [self.geoseg, "--no-progress", "run", str(wf)], out_dir)
        return self.report(time.perf_counter() - t0)

    def report(self, total_s: float) -> dict[str, Any]:
        def med(kind: str, get: Any) -> float | None:
            values = [get(r) for r in self.runs if r.kind == kind]
            return statistics.median(values) if values else None

        rows = []
        for n in self.args.slices:
            wall = {k: med(f"{k}_{n}", lambda r: r.wall_s) for k in ("read_once", "nifti", "dicom", "dicom_seg")}
            peak = {k: med(f"{k}_{n}", lambda r: r.peak_pss_mib) for k in ("nifti", "dicom", "dicom_seg")}
            allowance = (wall["nifti"] or 0) + (wall["read_once"] or 0)
            rows.append({"slices": n, "wall_s": wall, "peak_pss_mib": peak,
                         "dicom_over_nifti_plus_read": round(wall["dicom"] / allowance, 3) if allowance else None,
                         "seg_over_dicom": round(wall["dicom_seg"] / wall["dicom"], 3) if wall["dicom"] else None})
        small, large = rows[0], rows[-1]
        growth = {k: round(large["peak_pss_mib"][k] / small["peak_pss_mib"][k], 3)
                  for k in ("nifti", "dicom", "dicom_seg") if small["peak_pss_mib"][k]}
        return {"slices": self.args.slices, "side": SIDE, "workers": self.args.workers, "repeats": self.args.repeats,
                "rows": rows, "peak_growth_smallest_to_largest": growth, "total_s": round(total_s, 1),
                "runs": [asdict(r) for r in self.runs]}


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# DICOM vs NIfTI path: {doc['side']}² × N slices, {doc['workers']} workers, medians of "
             f"{doc['repeats']}", "",
             "| slices | read once s | NIfTI s | DICOM s | DICOM + SEG s | DICOM / (NIfTI + read once) | "
             "SEG / DICOM | peak PSS NIfTI / DICOM / +SEG MiB |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in doc["rows"]:
        w, p = row["wall_s"], row["peak_pss_mib"]
        lines.append(f"| {row['slices']} | {w['read_once']:.1f} | {w['nifti']:.1f} | {w['dicom']:.1f} | "
                     f"{w['dicom_seg']:.1f} | {row['dicom_over_nifti_plus_read']} | {row['seg_over_dicom']} | "
                     f"{p['nifti']:.0f} / {p['dicom']:.0f} / {p['dicom_seg']:.0f} |")
    lines += ["", f"Peak PSS growth from {doc['slices'][0]} to {doc['slices'][-1]} slices: "
              f"{doc['peak_growth_smallest_to_largest']}", "", f"Total {doc['total_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_read_once":
        return read_once_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", default="100,400", help="comma-separated slice counts")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pss-every", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=Path("/tmp/geoseg-dicom-bench"))
    p.add_argument("--report", type=Path, default=None, help="also write the markdown (and .json) here")
    args = p.parse_args(argv)
    args.slices = [int(s) for s in args.slices.split(",")]
    doc = Bench(args).go()
    text = markdown(doc)
    print(text)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
        args.report.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
