#!/usr/bin/env python
"""nnU-Net models (issue 13): geoseg against ``nnUNetv2_predict_from_modelfolder`` on one large
CT-like volume with a 3d_fullres model of ``--classes`` classes, side by side in one run, each in
a fresh subprocess measured by ``bench_runs.measured`` (wall time; peak PSS and RSS summed over
the process tree, as every benchmark here) and the share of voxels whose labels agree. Medians of
``--repeats``.

The model folder is written as nnU-Net writes one (plans, dataset, one fold with random weights,
last layer scaled so that the logits are confident as a trained model's): a small PlainConvUNet,
so that the run measures the pipeline (preprocessing, tiles, blending, export) more than the
network. The target spacing differs from the volume's, so both tools resample the volume and
export resampled logits (nnU-Net's memory peak: ``classes x volume`` logits in float64).

Both run on the same CPU threads: nnU-Net with ``--threads`` torch threads and one preprocessing /
export process (``-npp 1 -nps 1``), geoseg with the local backend and ``--workers`` workers
(default 1) sharing ``--threads`` threads.

    .venv/bin/python benchmarks/nnunet_bench.py [--shape 512,512,300] [--classes 14] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from bench_runs import fail, log, measured, thread_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nnunet_folders import write_model_folder

PATCH = (64, 64, 64)
SPACING_IN = (0.8, 0.8, 1.5)  # voxel size of the volume (x, y, z)
SPACING_MODEL = (1.5, 1.0, 1.0)  # the plans' spacing, nnU-Net's axis order (z, y, x)


def make_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """A CT-like volume: air around an elliptic body of soft tissue with organs of other densities."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    vol = np.empty(shape, np.int16)
    for k in range(shape[2]):
        plane = np.where(body, 40, -1000).astype(np.float32)
        for c in range(6):
            cx, cy, r = -0.5 + 0.2 * c, 0.3 * np.sin(k / 40 + c), 0.12
            plane[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = -200 + 150 * c
        vol[:, :, k] = (plane + rng.normal(0, 20, plane.shape)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([*SPACING_IN, 1.0])), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="512,512,300")
    ap.add_argument("--classes", type=int, default=14)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1,
                    help="geoseg workers (of --threads / workers threads each); one item in several workers is "
                         "cut into bands whose halo windows run twice")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="nnunet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    labels = {"background": 0, **{f"organ{c}": c for c in range(1, args.classes)}}
    folder = write_model_folder(work / "models", patch=PATCH, spacing=SPACING_MODEL, labels=labels,
                                features=(8, 16, 32, 64), logit_scale=10.0)
    case = work / "in" / "case_0000.nii.gz"
    case.parent.mkdir(exist_ok=True)
    if not case.exists():
        make_volume(case, shape)  # type: ignore[arg-type]
    bin_dir = Path(sys.executable).parent
    env = {**thread_env(args.threads), "nnUNet_def_n_proc": "1",
           "nnUNet_raw": str(work), "nnUNet_preprocessed": str(work), "nnUNet_results": str(work)}
    results: dict[str, list[tuple[float, float]]] = {"nnunet": [], "geoseg": []}
    for r in range(args.repeats):
        for who in ("nnunet", "geoseg"):
            out = work / f"out-{who}-{r}"
            if who == "nnunet":
                cmd = [str(bin_dir / "nnUNetv2_predict_from_modelfolder"), "-i", str(case.parent), "-o", str(out),
                       "-m", str(folder), "-f", "0", "-npp", "1", "-nps", "1", "-device", "cpu", "--disable_tta",
                       "--disable_progress_bar"]
            else:
                wf = work / "wf.yaml"
                wf.write_text(json.dumps({
                    "inputs": {"paths": [str(case)]},
                    "model": {"type": "nnunet", "path": str(folder), "folds": [0], "mirroring": False},
                    "output": {"directory": str(out), "formats": ["nifti"]},
                    "tiling": {"block_size": 128},
                    "resources": {"backend": "local", "workers": args.workers,
                                  "cpus_per_worker": max(1, args.threads // args.workers)},
                }))
                cmd = [str(bin_dir / "geoseg"), "--no-progress", "run", str(wf), "--force"]
            log_path = work / f"{who}-{r}.log"
            seconds, sampler, stdout, rc = measured(cmd, log_path, env)
            if rc:
                fail(who, rc, log_path, stdout)
            peak = sampler.peak_pss_kb / 1024
            results[who].append((seconds, peak))
            log(f"{who}: {seconds:.1f} s, peak PSS {peak:.0f} MiB (RSS sum {sampler.peak_rss_kb / 1024:.0f} MiB)")
    a = np.asarray(nib.load(work / "out-nnunet-0" / "case.nii.gz").dataobj)
    b = np.asarray(nib.load(work / "out-geoseg-0" / "case_0000" / "labels.nii.gz").dataobj)
    agree = float((a == b).mean()) if a.shape == b.shape else float("nan")
    stats = json.loads((work / "out-geoseg-0" / "case_0000" / "stats.json").read_text())
    pre_voxels = int(np.prod(stats["nnunet"]["preprocessed_shape"]))
    med = {k: (statistics.median(s for s, _ in v), statistics.median(p for _, p in v)) for k, v in results.items()}
    summary = {
        "shape": shape, "classes": args.classes, "patch": PATCH, "threads": args.threads,
        "geoseg_workers": args.workers, "halo_windows": stats["halo_windows_rerun"],
        "nnunet_seconds": med["nnunet"][0], "nnunet_peak_pss_mib": med["nnunet"][1],
        "geoseg_seconds": med["geoseg"][0], "geoseg_peak_pss_mib": med["geoseg"][1],
        "time_ratio": med["geoseg"][0] / med["nnunet"][0], "memory_ratio": med["geoseg"][1] / med["nnunet"][1],
        "labels_agree": agree, "shapes": [list(a.shape), list(b.shape)],
        "preprocessed_shape": stats["nnunet"]["preprocessed_shape"],
        "bytes_to_driver_per_preprocessed_voxel": stats["bytes_from_workers"] / pre_voxels,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
