"""Scheduling overhead per item on an archive of many small items.

``--items`` (default 500) small GeoTIFFs (``--size``² pixels, 3 bands, one window each with roi
``--size``), a tiny TorchScript conv net; ``geoseg run`` in a fresh process (its own local Ray,
``--workers`` actors). The model's own work is measured separately: the same number of forward
passes in one process. Reported:

* the job's inference phase (first task submitted -> last result stitched, from summary.json)
  minus the model-only time, per item: what the pipeline adds to each item (open, plan,
  schedule, stitch, COG, statistics, ledger), with the actors' forward passes overlapping;
* the whole run minus start-up, per item, for reference;
* a re-run of the same job: every item skipped by the ledger (the nightly case with nothing new).

    .venv/bin/python benchmarks/overhead_bench.py [--items 500] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml


def _make_data(folder: Path, items: int, size: int) -> list[Path]:
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    for i in range(items):
        path = folder / f"tile_{i:04d}.tif"
        if not path.exists():
            with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                               crs="EPSG:32633", transform=from_origin(500000 + i * size * 10, 5200000, 10, 10)) as d:
                d.write(rng.integers(1, 255, (3, size, size), dtype=np.uint8))
        paths.append(path)
    return paths


def _model(path: Path) -> Path:
    import torch

    if not path.exists():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
        torch.jit.script(net).save(str(path))
    return path


def _model_only(model: Path, items: int, size: int, workers: int) -> float:
    """Seconds for ``items`` single-window forward passes, spread as the actors would (one
    thread per actor, run one after the other here and divided by the actor count)."""
    import torch

    torch.set_num_threads(1)
    net = torch.jit.load(str(model))
    x = torch.zeros((1, 3, size, size))
    with torch.inference_mode():
        for _ in range(5):
            net(x)
        t0 = time.perf_counter()
        for _ in range(items):
            net(x)
    return (time.perf_counter() - t0) / workers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--work", type=Path, default=Path("bench-output/overhead"))
    p.add_argument("--out", type=Path, default=None, help="results without suffix (default WORK/results)")
    args = p.parse_args(argv)
    args.work = args.work.resolve()  # the workflow resolves relative paths against its own folder
    paths = _make_data(args.work / "data", args.items, args.size)
    model = _model(args.work / "tiny.pt")
    out = args.work / "out"
    wf = {"name": "overhead", "inputs": {"paths": [str(x) for x in paths]},
          "model": {"type": "torchscript", "path": str(model)},
          "tiling": {"roi_size": args.size, "overlap": 0.25, "block_size": max(64, args.size)},
          "output": {"directory": str(out)}, "resources": {"workers": args.workers}}
    wf_path = args.work / "workflow.yaml"
    wf_path.write_text(yaml.safe_dump(wf), encoding="utf-8")
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    env = {**os.environ, "RAY_ADDRESS": "local"}
    runs = {}
    for name, extra in (("first run", ["--force"]), ("re-run (all skipped)", [])):
        t0 = time.perf_counter()
        proc = subprocess.run([geoseg, "--no-progress", "run", *extra, str(wf_path)], capture_output=True, text=True,
                              env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        job = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        runs[name] = {"wall_s": wall, "inference_s": job["inference_seconds"], "items_ok": job["items_ok"],
                      "items_skipped": job["items_skipped"]}
    model_s = _model_only(model, args.items, args.size, args.workers)
    first = runs["first run"]
    per_item_ms = (first["inference_s"] - model_s) / args.items * 1000
    result = {"items": args.items, "size": args.size, "workers": args.workers, "runs": runs,
              "model_only_s": model_s, "overhead_per_item_ms": per_item_ms,
              "wall_per_item_ms": first["wall_s"] / args.items * 1000,
              "skip_per_item_ms": runs["re-run (all skipped)"]["wall_s"] / args.items * 1000,
              "loadavg_end": os.getloadavg()[0]}
    table = (
        f"| {args.items} items of {args.size}², {args.workers} actors | value |\n|---|---:|\n"
        f"| first run: wall | {first['wall_s']:.1f} s |\n"
        f"| first run: inference phase (first task -> last result) | {first['inference_s']:.1f} s |\n"
        f"| model-only forward passes, per actor | {model_s:.2f} s |\n"
        f"| **pipeline overhead per item** (inference phase - model) / items | **{per_item_ms:.1f} ms** |\n"
        f"| whole first run per item (start-up included) | {result['wall_per_item_ms']:.1f} ms |\n"
        f"| re-run, every item skipped by the ledger: wall | {runs['re-run (all skipped)']['wall_s']:.1f} s |\n"
    )
    dest = args.out or args.work / "results"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    dest.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
