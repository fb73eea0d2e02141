"""The cost of test-time mirroring: the same job plain and with ``inference.mirror_axes``.

One generated 4-band scene, the land-cover benchmark's TorchScript MONAI UNet (roi 256, overlap
0.25, gaussian, batch 8), ``geoseg run`` in a fresh process per run (own local Ray), the
configurations interleaved in every repeat. Reported per configuration: median wall time and
median inference seconds (geoseg's own: first task to last result), and both as a ratio to the
plain run. Expected: about the number of passes (2 for one axis, 4 for two).

    .venv/bin/python benchmarks/tta_bench.py [--size 3072] [--repeats 3] [--out bench-output/tta]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import ray_daemons_running
from bench_runs import log, measured
from landcover_bench import make_model
from landcover_bench_scenes import ensure_scene

CONFIGS: dict[str, list[int]] = {"plain": [], "mirror_1_axis": [1], "mirror_2_axes": [0, 1]}


def _workflow(out: Path, scene: Path, model: Path, axes: list[int], name: str) -> Path:
    wf = {
        "name": f"tta-{name}",
        "inputs": {"paths": [str(scene)]},
        "model": {"type": "torchscript", "path": str(model)},
        "tiling": {"roi_size": 256, "overlap": 0.25, "blend": "gaussian", "batch_size": 8},
        "output": {"directory": str(out / "runs" / name)},
        "inference": {"mirror_axes": axes},
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(wf), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=3072, help="scene side in pixels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench-output/tta"))
    p.add_argument("--allow-other-ray", action="store_true")
    args = p.parse_args(argv)
    others = ray_daemons_running()
    if others and not args.allow_other_ray:
        print(f"another Ray is running ({others}); stop it or pass --allow-other-ray", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    scene = ensure_scene(args.out / f"scene_{args.size}.tif", args.size, seed=7)
    model = make_model(args.out / "unet2d.pt")
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for rep in range(args.repeats):
        order = list(CONFIGS) if rep % 2 == 0 else list(reversed(CONFIGS))
        for name in order:
            wf = _workflow(args.out, scene, model, CONFIGS[name], name)
            wall, _, stdout, rc = measured([geoseg, "--no-progress", "run", "--force", str(wf)],
                                           args.out / "logs" / f"{name}_r{rep}.log")
            if rc != 0:
                raise SystemExit(f"{name} failed (exit {rc}): {stdout[-2000:]}")
            job = json.loads((args.out / "runs" / name / "summary.json").read_text())
            runs[name].append({"wall_s": wall, "inference_s": job["inference_seconds"],
                               "windows": job["windows_run"]})
            log(f"repeat {rep}: {name}: {wall:.1f} s wall, {job['inference_seconds']:.1f} s inference")
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "repeats": args.repeats,
                              "configs": {}}
    base_wall = statistics.median(r["wall_s"] for r in runs["plain"])
    base_inf = statistics.median(r["inference_s"] for r in runs["plain"])
    lines = ["| configuration | passes per window | windows | wall s (median) | wall / plain | "
             "inference s (median) | inference / plain |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, axes in CONFIGS.items():
        wall = statistics.median(r["wall_s"] for r in runs[name])
        inf = statistics.median(r["inference_s"] for r in runs[name])
        result["configs"][name] = {"mirror_axes": axes, "passes": 2 ** len(axes), "runs": runs[name],
                                   "wall_s": wall, "inference_s": inf, "wall_ratio": wall / base_wall,
                                   "inference_ratio": inf / base_inf}
        lines.append(f"| {name} | {2 ** len(axes)} | {runs[name][0]['windows']:.0f} | {wall:.1f} | "
                     f"{wall / base_wall:.2f} | {inf:.1f} | {inf / base_inf:.2f} |")
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
