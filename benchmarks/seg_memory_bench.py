#!/usr/bin/env python
"""Memory of writing one DICOM SEG for a large series (issue 12): geoseg's sink (a small
highdicom template, frames streamed to the file) against highdicom given the whole label array,
side by side, each in a fresh subprocess (its peak RSS its own), medians of ``--repeats``.

The series: 512 × 512 × ``--slices`` (a zero CT, written once), labels with ``--classes`` - 1
round objects present on every slice (so every class has a frame on every slice: the largest SEG
for that many classes).

    .venv/bin/python benchmarks/seg_memory_bench.py [--slices 500] [--classes 21] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE, BLOCK = 512, 128


def _labels(k0: int, nk: int, classes: int) -> np.ndarray:
    ii, jj = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    plane = np.zeros((SIDE, SIDE), np.uint8)
    for c in range(1, classes):
        cx, cy = 60 + (c * 97) % 390, 60 + (c * 53) % 390
        plane[((ii - cx) ** 2 + (jj - cy) ** 2) < 30**2] = c
    return np.repeat(plane[:, :, None], nk, axis=2)


def contender(mode: str, series_dir: Path, classes: int) -> dict[str, float]:
    from geoseg_pipeline.geometry import Window
    from geoseg_pipeline.sinks import ClassLegend
    from geoseg_pipeline.sinks.dicom_seg import DicomSegSink, _descriptions, _sources
    from geoseg_pipeline.sources.dicom_series import scan_folder
    from geoseg_pipeline.volumes import VolumeGrid

    series = scan_folder(str(series_dir)).series[0]
    n = series.shape[2]
    legend = ClassLegend(tuple(f"class {i}" for i in range(classes)), ("#000000",) * classes)
    provenance = {"model": "bench", "model_version": "0"}
    out = Path(tempfile.mkdtemp(prefix="segbench-"))
    t0 = time.perf_counter()
    if mode == "geoseg":
        sink = DicomSegSink(out, VolumeGrid(series.shape, series.affine_array, 1, 1), series.path, legend, None,
                            provenance)
        for k0 in range(0, n, BLOCK):
            nk = min(BLOCK, n - k0)
            sink.write(Window((0, 0, k0), (SIDE, SIDE, nk)), _labels(k0, nk, classes))
        path = sink.commit()
    else:
        import highdicom as hd

        labels = np.concatenate([_labels(k0, min(BLOCK, n - k0), classes) for k0 in range(0, n, BLOCK)], axis=2)
        seg = hd.seg.Segmentation(
            source_images=_sources(series.path)[0], pixel_array=np.transpose(labels, (2, 1, 0)),
            segmentation_type="BINARY", segment_descriptions=_descriptions(legend, None, provenance),
            series_instance_uid=hd.UID(), series_number=9001, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="bench", manufacturer_model_name="bench", software_versions="0", device_serial_number="0")
        path = out / "labels.dcm"
        seg.save_as(path, enforce_file_format=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak, "seg_mb": path.stat().st_size / 1e6}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_contender":
        print(json.dumps(contender(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=500)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("/tmp/geoseg-seg-bench"))
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from geoseg_pipeline.demo.dicom_export import write_series

    series_dir = args.out / f"ct_{args.slices}"
    if not series_dir.exists():
        write_series(series_dir, np.zeros((SIDE, SIDE, args.slices), np.int16), np.diag([0.7, 0.7, 1.25, 1.0]))
    runs: dict[str, list[dict[str, float]]] = {"geoseg": [], "highdicom": []}
    for _ in range(args.repeats):
        for mode in runs:
            out = subprocess.run([sys.executable, __file__, "_contender", mode, str(series_dir), str(args.classes)],
                                 capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    labels_mib = SIDE * SIDE * args.slices / 2**20
    print(f"# One DICOM SEG: 512² × {args.slices} slices, {args.classes} classes (labels {labels_mib:.0f} MiB as "
          f"uint8), medians of {args.repeats}\n")
    print("| writer | seconds | peak RSS MiB | SEG MB |\n|---|---:|---:|---:|")
    for mode, rs in runs.items():
        print(f"| {mode} | {statistics.median(r['seconds'] for r in rs):.1f} | "
              f"{statistics.median(r['peak_rss_mib'] for r in rs):.0f} | {rs[0]['seg_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
