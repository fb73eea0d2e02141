#!/usr/bin/env python
"""``geoseg change`` on two ``--size``² label COGs of ``--classes`` classes (issue 15) against
reading both maps with rasterio (block by block, as fast as GDAL decodes them), side by side in
one run, each in a fresh subprocess (``bench_runs.measured``): medians of ``--repeats``, their
ratio (target ≤ 2), peak PSS.

    .venv/bin/python benchmarks/change_bench.py [--size 8192] [--classes 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_runs import fail, log, measured

READ_BOTH = """
import sys, rasterio
for path in sys.argv[1:]:
    with rasterio.open(path) as ds:
        for _, window in ds.block_windows(1):
            ds.read(1, window=window)
"""


def make_maps(work: Path, size: int, classes: int) -> tuple[Path, Path]:
    """Two label COGs written by geoseg's sink: class regions of 300 pixels, 15 % of 64-pixel patches
    changed (spatially coherent change, as real land cover's; noise would make the change map
    incompressible and measure DEFLATE, not geoseg)."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from geoseg_pipeline.geometry import Grid, Window
    from geoseg_pipeline.sinks.cog import CogLabelSink
    from geoseg_pipeline.sinks.legend import ClassLegend, default_colours

    grid = Grid((size, size), from_origin(500000, 4600000, 10, 10), CRS.from_epsg(32633).to_wkt())
    legend = ClassLegend(tuple(f"c{i}" for i in range(classes)), default_colours(classes))
    paths = []
    for name in ("before", "after"):
        sink = CogLabelSink(work / name, grid, legend, 255)
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            rr, cc = np.meshgrid(np.arange(r0, r0 + h) // 300, np.arange(size) // 300, indexing="ij")
            labels = (rr * 7 + cc * 3) % classes
            if name == "after":  # 15 % of 64 x 64 patches change class, as fields and clearings do
                patch = (rr * 300 // 64) * 1000 + (cc * 300 // 64)
                flip = (np.sin(patch * 12.9898) * 43758.5453) % 1.0 < 0.15
                labels = np.where(flip, (labels + 1 + patch % (classes - 1)) % classes, labels)
            sink.write(Window((r0, 0), (h, size)), labels.astype(np.uint8))
        paths.append(sink.commit())
    return paths[0], paths[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="change-bench-"))
    before, after = make_maps(work, args.size, args.classes)
    bin_dir = Path(sys.executable).parent
    runs: dict[str, list[tuple[float, float]]] = {"read_both": [], "geoseg_change": []}
    for r in range(args.repeats):
        for who in runs:
            cmd = ([sys.executable, "-c", READ_BOTH, str(before), str(after)] if who == "read_both" else
                   [str(bin_dir / "geoseg"), "change", str(before), str(after), "--out", str(work / f"out-{r}")])
            log_path = work / f"{who}-{r}.log"
            seconds, sampler, stdout, rc = measured(cmd, log_path, settle_s=1.0)
            if rc:
                fail(who, rc, log_path, stdout)
            runs[who].append((seconds, sampler.peak_pss_kb / 1024))
            log(f"{who}: {seconds:.2f} s, peak PSS {sampler.peak_pss_kb / 1024:.0f} MiB")
    med = {k: (statistics.median(s for s, _ in v), statistics.median(p for _, p in v)) for k, v in runs.items()}
    print(json.dumps({"size": args.size, "classes": args.classes, "repeats": args.repeats,
                      "read_both_s": med["read_both"][0], "change_s": med["geoseg_change"][0],
                      "ratio": med["geoseg_change"][0] / med["read_both"][0],
                      "read_both_peak_pss_mib": med["read_both"][1], "change_peak_pss_mib": med["geoseg_change"][1]},
                     indent=2))


if __name__ == "__main__":
    main()
