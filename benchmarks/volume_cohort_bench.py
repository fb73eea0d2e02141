"""A cohort of volumes in one job: geoseg vs a baseline script that loops over the same volumes.

What a nightly job looks like: ``--items`` volumes (default 8 of 256 x 256 x 128, float32
``.nii``, the same generator and TorchScript MONAI 3D UNet as ``volume_bench.py``), roi 96³,
gaussian, batch 4. The baseline is the script a user would write: load the model once, then for
each volume nibabel loads it whole, MONAI ``sliding_window_inference``, argmax, save. geoseg runs
one ``geoseg run`` job over all of them (its own local Ray, one actor per CPU). Each contender is
a fresh process; the two are interleaved over ``--reps`` repetitions. Reported: median wall
time, the ratio geoseg / baseline (target <= 1.0), peak PSS of the whole process tree (Ray's
processes included), and label agreement.

    .venv/bin/python benchmarks/volume_cohort_bench.py [--items 8] [--overlap 0.5] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import ray_daemons_running
from bench_runs import RESULT_TAG, log, measured, result_line, thread_env
from volume_bench_data import ROI, make_model, parse_size, window_count, write_volume


def baseline_main(argv: Sequence[str]) -> int:
    """Model loaded once; per volume: nibabel load, sliding window, argmax, save."""
    p = argparse.ArgumentParser(prog="volume_cohort_bench.py _baseline")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--overlap", type=float, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("volumes", nargs="+")
    args = p.parse_args(argv)
    import nibabel as nib
    import torch
    from monai.inferers import sliding_window_inference

    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model, map_location="cpu").eval()
    for vol in args.volumes:
        img = nib.load(vol)
        x = img.get_fdata(dtype=np.float32)
        with torch.inference_mode():
            logits = sliding_window_inference(torch.from_numpy(x)[None, None], (ROI, ROI, ROI), args.batch, model,
                                              overlap=args.overlap, mode="gaussian")
            labels = torch.argmax(logits, dim=1)[0].to(torch.uint8).numpy()
        del logits, x
        out = args.out / Path(vol).name.split(".")[0]
        out.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(labels, img.affine), out / "labels.nii.gz")
    print(RESULT_TAG + json.dumps({"items": len(args.volumes)}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=8)
    p.add_argument("--size", type=parse_size, default=(256, 256, 128), metavar="IxJxK")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="baseline torch threads (default: all CPUs)")
    p.add_argument("--work", type=Path, default=Path("bench-output/volume-cohort"))
    p.add_argument("--out", type=Path, default=None, help="results without suffix (default WORK/results)")
    p.add_argument("--allow-other-ray", action="store_true")
    args = p.parse_args(argv)
    import os

    import yaml

    threads = args.threads or os.cpu_count() or 1
    others = ray_daemons_running()
    if others and not args.allow_other_ray:
        print(f"another Ray is running ({others}); stop it or pass --allow-other-ray", file=sys.stderr)
        return 2
    data = args.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    model = make_model(args.work / "unet_3d.pt")
    label = "x".join(map(str, args.size))
    volumes = []
    for i in range(args.items):
        path = data / f"vol_{label}_{i:02d}.nii"
        if not path.exists():
            write_volume(path, args.size, seed=500 + i)
        volumes.append(path)
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "geoseg": []}
    for rep in range(args.reps):
        for kind in (("baseline", "geoseg") if rep % 2 == 0 else ("geoseg", "baseline")):
            out = args.work / "runs" / kind
            if kind == "baseline":
                cmd = [sys.executable, str(Path(__file__).resolve()), "_baseline", "--model", str(model), "--out",
                       str(out), "--overlap", str(args.overlap), "--batch", str(args.batch), "--threads",
                       str(threads), *map(str, volumes)]
                env = thread_env(threads)
            else:
                wf = {"name": "volume-cohort", "inputs": {"paths": [str(v) for v in volumes]},
                      "model": {"type": "torchscript", "path": str(model)},
                      "tiling": {"roi_size": [ROI] * 3, "overlap": args.overlap, "blend": "gaussian",
                                 "batch_size": args.batch},
                      "output": {"directory": str(out)}}
                wf_path = args.work / "cohort.yaml"
                wf_path.write_text(yaml.safe_dump(wf), encoding="utf-8")
                cmd = [str(Path(sys.executable).with_name("geoseg")), "--no-progress", "run", "--force", str(wf_path)]
                env = None
            wall, sampler, stdout, rc = measured(cmd, args.work / "logs" / f"{kind}_r{rep}.log", env=env)
            if rc != 0:
                raise SystemExit(f"{kind} failed (exit {rc}); see {args.work / 'logs'}")
            if kind == "baseline":
                result_line(stdout)
            runs[kind].append({"wall_s": wall, "peak_pss_mib": sampler.peak_pss_kb / 1024})
            log(f"rep {rep + 1}/{args.reps}: {kind}: {wall:.1f} s, peak PSS {sampler.peak_pss_kb / 1024:.0f} MiB")
    import nibabel as nib

    agree = []
    for v in volumes:
        name = v.name.split(".")[0]
        a = np.asarray(nib.load(args.work / "runs" / "baseline" / name / "labels.nii.gz").dataobj)
        b = np.asarray(nib.load(args.work / "runs" / "geoseg" / name / "labels.nii.gz").dataobj)
        agree.append(float((a == b).mean()))
    med = {k: {m: statistics.median(r[m] for r in rs) for m in ("wall_s", "peak_pss_mib")} for k, rs in runs.items()}
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "items": args.items, "size": label, "overlap": args.overlap,
        "windows_per_item": window_count(args.size, ROI, args.overlap), "batch": args.batch,
        "baseline_threads": threads, "reps": args.reps, "runs": runs, "medians": med,
        "time_ratio": med["geoseg"]["wall_s"] / med["baseline"]["wall_s"],
        "memory_ratio": med["geoseg"]["peak_pss_mib"] / med["baseline"]["peak_pss_mib"],
        "label_agreement_min": min(agree), "loadavg_end": os.getloadavg()[0],
    }
    table = (
        f"| {args.items} × {label}, overlap {args.overlap:g} | baseline | geoseg | geoseg / baseline |\n"
        "|---|---:|---:|---:|\n"
        f"| wall s (median of {args.reps}) | {med['baseline']['wall_s']:.1f} | {med['geoseg']['wall_s']:.1f} | "
        f"{result['time_ratio']:.3f} |\n"
        f"| peak PSS MiB (median) | {med['baseline']['peak_pss_mib']:.0f} | {med['geoseg']['peak_pss_mib']:.0f} | "
        f"{result['memory_ratio']:.3f} |\n"
        f"| label agreement (lowest item) | | {min(agree):.6f} | |\n"
    )
    out = args.out or args.work / "results"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_baseline":
        sys.exit(baseline_main(sys.argv[2:]))
    sys.exit(main())
