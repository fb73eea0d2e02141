"""Two versions of geoseg side by side on the same job: this checkout against another tree
(for example the previous commit, checked out with ``git worktree add``), runs alternated
A B A B ... so that a shared, noisy machine slows both alike. Reported: each version's median
wall time and inference phase (``summary.json``), and the ratio new / old.

The job: one ``--size``² × 4-band uint16 scene, a TorchScript model that returns zeros
(``--classes`` classes) so the model costs almost nothing and the pipeline's own work shows,
``geoseg predict`` with roi ``--roi`` and overlap 0.25 on the backend it picks (the local one
for a one-item job), and ``--items`` small 64² scenes in a second job (per-item overhead).

    git worktree add /tmp/geoseg-old HEAD~1
    .venv/bin/python benchmarks/ab_bench.py --old /tmp/geoseg-old --rounds 3 --out docs/bench/ab
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _scene(path: Path, size: int, bands: int = 4) -> None:
    import rasterio
    from rasterio.transform import from_origin

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 5200000, 10, 10), tiled=True,
                       blockxsize=512, blockysize=512) as ds:
        for r in range(0, size, 512):
            h = min(512, size - r)
            ds.write(rng.integers(0, 10000, (bands, h, size), dtype=np.uint16),
                     window=rasterio.windows.Window(0, r, size, h))


def _zeros_model(path: Path, classes: int) -> None:
    import torch

    class Zeros(torch.nn.Module):
        def __init__(self, classes: int) -> None:
            super().__init__()
            self.classes = classes

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros((x.shape[0], self.classes, x.shape[2], x.shape[3]), dtype=x.dtype)

    torch.jit.script(Zeros(classes)).save(str(path))


def _run(tree: Path | None, args: list[str], out: Path) -> dict[str, float]:
    # Ray puts the driver's working folder first on its workers' import path: run from the
    # output folder, never from a checkout, so that the actors import the version asked for
    env = {**os.environ, "RAY_ADDRESS": "local"}
    if tree is not None:  # the other version comes first on the import path (the actors inherit it)
        env["PYTHONPATH"] = f"{tree}{os.pathsep}{env.get('PYTHONPATH', '')}"
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([geoseg, "--quiet", "--no-progress", "predict", *args, "--out", str(out), "--force"],
                          capture_output=True, text=True, env=env, cwd=out)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"geoseg failed ({tree or 'this checkout'}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    job = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"wall_s": wall, "inference_s": float(job["inference_seconds"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=True, help="the other version's tree (holding geoseg_pipeline/)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--roi", type=int, default=256)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--work", type=Path, default=Path("bench-output/ab"))
    p.add_argument("--out", type=Path, default=None, help="results without suffix (default WORK/results)")
    args = p.parse_args(argv)
    work = args.work.resolve()
    scene = work / "data" / f"scene_{args.size}.tif"
    _scene(scene, args.size)
    small = [work / "data" / "small" / f"tile_{i:04d}.tif" for i in range(args.items)]
    for path in small:
        _scene(path, 64)
    model = work / f"zeros{args.classes}.pt"
    _zeros_model(model, args.classes)
    jobs = {
        "scene": [str(scene), "--model", str(model), "--roi-size", str(args.roi), "--overlap", "0.25"],
        "items": [*map(str, small), "--model", str(model), "--roi-size", "64", "--overlap", "0.25"],
    }
    versions = {"old": args.old.resolve(), "new": None}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {j: {v: [] for v in versions} for j in jobs}
    for r in range(args.rounds):
        for job, job_args in jobs.items():
            order = list(versions) if r % 2 == 0 else list(reversed(versions))
            for version in order:
                result = _run(versions[version], job_args, work / "out" / f"{job}-{version}")
                runs[job][version].append(result)
                print(f"round {r + 1} {job} {version}: {result}", file=sys.stderr, flush=True)
    summary: dict[str, dict[str, float]] = {}
    lines = [f"| job ({args.rounds} rounds, alternated) | old median | new median | new / old |",
             "|---|---:|---:|---:|"]
    for job in jobs:
        for key in ("wall_s", "inference_s"):
            old = statistics.median(x[key] for x in runs[job]["old"])
            new = statistics.median(x[key] for x in runs[job]["new"])
            summary[f"{job} {key}"] = {"old": old, "new": new, "ratio": new / old if old else float("nan")}
            lines.append(f"| {job}: {key} | {old:.2f} s | {new:.2f} s | {new / old:.3f} |")
    what = (f"scene: one {args.size}² × 4-band uint16 GeoTIFF, zeros model with {args.classes} classes, roi "
            f"{args.roi}; items: {args.items} scenes of 64²; machine load at the end {os.getloadavg()[0]:.2f}")
    table = "\n".join(lines) + f"\n\n{what}\n"
    dest = args.out or work / "results"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_suffix(".json").write_text(json.dumps({"runs": runs, "summary": summary, "args": vars(args)},
                                                    indent=2, default=str) + "\n", encoding="utf-8")
    dest.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
