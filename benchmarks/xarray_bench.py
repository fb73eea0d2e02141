#!/usr/bin/env python
"""A dask-backed DataArray through ``predict_dataarray`` against the same scene as a GeoTIFF
through ``geoseg run`` (issue 14's target: "the xarray path on a dask-backed cube of the same
data <= 1.2 x the file path").

Per ``--sizes`` (default 2048 and 4096), side by side in one run (contenders alternated within each
repeat, the order rotated from one repeat to the next, medians of ``--repeats``), each contender
a measured subprocess:

* ``file``: ``geoseg --no-progress run --force WORKFLOW`` on a 4-band uint16 GeoTIFF (tiled 512,
  DEFLATE, predictor 2);
* ``dataarray``: ``xr.open_zarr(cube, chunks={})`` (dask, the store's 512 x 512 chunks),
  ``ds[[B02, B03, B04, B08]].to_dataarray("band")``, then ``predict_dataarray`` (this script
  with ``--contender``): the engine's worker threads compute the dask array region by region;
* ``dataarray_raw``: the same with ``open_zarr(..., mask_and_scale=False)`` and
  ``.rio.write_nodata(0)``: the bands as stored (uint16) with their nodata, as odc-stac loads
  them, instead of xarray's CF decoding into NaN-masked float64 (four times the bytes);
* ``cube``: ``geoseg run`` on the same Zarr cube with ``format: xarray-zarr`` (plain xarray
  without dask: the lazily indexed Zarr arrays).

The cube is the GeoTIFF's bands as four ``(y, x)`` variables written by ``Dataset.to_zarr``
(512 x 512 chunks, Zarr v3's default zstd). All three give the same model input, pixel for
pixel (the bench checks that the label maps are equal). Common settings: roi 256, overlap 0.25,
batch 8, block 512, ``resources.backend: local`` with 2 workers of 1 CPU.

* **Scene**: ``geoseg_pipeline.demo.scenes.write_landcover_scene(path, size, size, seed)``.
* **Model** (``--network``): ``conv`` (default), a TorchScript 1 x 1 convolution of the 4 bands
  to 10 classes (random weights, seeded): the job is bound by reading and writing, the worst case
  for the dask path; ``unet``, a MONAI ``UNet(2, 4, 10, channels=(16, 32, 64, 128),
  strides=(2, 2, 2), num_res_units=2)`` (random weights, seeded): a network that does real work,
  as ``stac_bench.py --model unet``.

Reported per size and contender: ``wall_s``, ``job_s`` (``summary.json``'s seconds), ``cpu_s``
of the process tree, peak PSS; the ratios to ``file``; each contender's peak PSS growth from the
smallest to the largest size. Check: at the largest size ``dataarray / file`` wall <= 1.2.

About 5 min on a 2-core machine for the defaults (plus 20 s to generate the data)::

    .venv/bin/python benchmarks/xarray_bench.py [--sizes 2048,4096] [--repeats 3] \\
        [--network conv|unet] [--contenders file,dataarray_raw] \\
        [--report docs/bench/xarray-2026-12-05.json] [--out bench-output/xarray]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from bench_runs import RESULT_TAG, log
from stac_bench import Bench as StacBench

SEED = 20261205
ROI, OVERLAP, BATCH, BLOCK, WORKERS, CLASSES, CHUNK = 256, 0.25, 8, 512, 2, 10, 512
BANDS = ("B02", "B03", "B04", "B08")
TIME_RATIO = 1.2
CONTENDERS = ("file", "dataarray", "dataarray_raw", "cube")


def make_model(path: Path, unet: bool) -> Path:
    """The contenders' model (see the module doc), written once."""
    if path.exists():
        return path
    import torch

    torch.manual_seed(SEED)
    model: torch.nn.Module
    if unet:
        from monai.networks.nets import UNet

        model = UNet(2, len(BANDS), CLASSES, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    else:
        model = torch.nn.Conv2d(len(BANDS), CLASSES, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.jit.script(model.eval()).save(str(tmp))
    os.replace(tmp, path)
    return path


def make_data(folder: Path, size: int) -> tuple[Path, Path]:
    """``scene.tif`` and ``cube.zarr`` (the same bands) in ``folder``; written once."""
    tif, cube = folder / "scene.tif", folder / "cube.zarr"
    if tif.exists() and (cube / "zarr.json").exists():
        return tif, cube
    import rioxarray
    import xarray as xr

    from geoseg_pipeline.demo.scenes import write_landcover_scene

    folder.mkdir(parents=True, exist_ok=True)
    log(f"generating the {size}² scene and cube in {folder}")
    t0 = time.perf_counter()
    write_landcover_scene(tif, size, size, SEED + size)
    da = rioxarray.open_rasterio(tif, chunks={"band": 1, "y": CHUNK, "x": CHUNK})
    ds = xr.Dataset({b: da.isel(band=i, drop=True).rio.write_nodata(0) for i, b in enumerate(BANDS)})
    shutil.rmtree(cube, ignore_errors=True)
    ds.to_zarr(cube, consolidated=False)
    log(f"  {time.perf_counter() - t0:.1f} s")
    return tif, cube


def run_dataarray(args: argparse.Namespace) -> None:
    """The ``dataarray`` contender, in its own process: open the cube with dask, segment it."""
    import xarray as xr

    from geoseg_pipeline import predict_dataarray

    t0 = time.perf_counter()
    if args.contender == "dataarray":
        ds = xr.open_zarr(args.cube, chunks={}, consolidated=False)
        da = ds[list(BANDS)].to_dataarray("band")
    else:  # as stored, as odc-stac loads it: uint16 with its nodata (no CF decoding to NaN-masked floats)
        import rioxarray  # noqa: F401  (the .rio accessor)

        ds = xr.open_zarr(args.cube, chunks={}, consolidated=False, mask_and_scale=False)
        da = ds[list(BANDS)].to_dataarray("band").rio.write_nodata(0)
    labels = predict_dataarray(da, str(args.model), args.run_out, roi_size=ROI, overlap=OVERLAP, batch_size=BATCH,
                               block_size=BLOCK, workers=WORKERS, name="scene", progress=False)
    print(RESULT_TAG + json.dumps({"seconds": time.perf_counter() - t0, "chunks": str(da.chunks[1][0]),
                                   "labels": labels.attrs["output"]}), flush=True)


class Bench(StacBench):
    """``stac_bench``'s runs, with this benchmark's data and contenders."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.contenders = tuple(args.contenders)

    def prepare(self) -> None:
        unet = self.args.network == "unet"
        self.model = make_model(self.out / "models" / f"{self.args.network}{len(BANDS)}x{CLASSES}.pt", unet)
        self.data = {s: make_data(self.out / "data" / f"scene_{s}", s) for s in self.args.sizes}

    def command(self, size: int, contender: str) -> tuple[list[str], Path]:
        out_dir = self.out / "runs" / f"{contender}_{size}"
        tif, cube = self.data[size]
        if contender.startswith("dataarray"):
            return [sys.executable, __file__, "--contender", contender, "--cube", str(cube), "--model",
                    str(self.model), "--run-out", str(out_dir)], out_dir
        inputs: dict[str, Any] = ({"paths": [str(tif)]} if contender == "file" else
                                  {"paths": [str(cube)], "format": "xarray-zarr", "variables": list(BANDS)})
        wf = {"version": 1, "name": f"xarray-{contender}-{size}", "inputs": inputs,
              "model": {"type": "torchscript", "path": str(self.model), "in_channels": len(BANDS),
                        "num_classes": CLASSES},
              "tiling": {"roi_size": ROI, "overlap": OVERLAP, "batch_size": BATCH, "block_size": BLOCK},
              "output": {"directory": str(out_dir), "formats": ["cog"]},
              "resources": {"workers": WORKERS, "cpus_per_worker": 1, "backend": "local"}}
        path = self.out / "workflows" / f"{contender}_{size}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(wf, sort_keys=False), encoding="utf-8")
        return [self.geoseg, "--no-progress", "run", "--force", str(path)], out_dir

    def report(self, elapsed: float, equal: dict[int, bool]) -> dict[str, Any]:
        medians = self.medians(equal)
        lo, hi = medians[0], medians[-1]
        growth = ({c: hi[c]["peak_pss_mib"] - lo[c]["peak_pss_mib"] for c in self.contenders}
                  if len(medians) > 1 else {})
        checks = [{"target": f"{hi['size']}²: {c} wall / file wall <= {TIME_RATIO}",
                   "value": round(hi[f"{c}_over_file"]["wall_s"], 3),
                   "pass": hi[f"{c}_over_file"]["wall_s"] <= TIME_RATIO}
                  for c in self.contenders if c.startswith("dataarray")]
        checks.append({"target": "the label maps are equal", "value": equal, "pass": all(equal.values())})
        from vector_bench import machine

        env = machine()
        env["loadavg_end"] = list(os.getloadavg())
        doc = {"benchmark": "xarray_bench.py", "date": time.strftime("%Y-%m-%d"),
               "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": env,
               "config": {"sizes": self.args.sizes, "repeats": self.args.repeats, "roi": ROI, "overlap": OVERLAP,
                          "batch": BATCH, "block": BLOCK, "workers": WORKERS, "backend": "local",
                          "classes": CLASSES, "bands": BANDS, "chunk": CHUNK, "model": self.args.network,
                          "contenders": self.contenders},
               "elapsed_s": round(elapsed, 1), "medians": medians, "memory_growth_mib": growth, "checks": checks,
               "runs": [asdict(r) for r in self.runs]}
        lines = [f"# DataArray / Zarr cube vs GeoTIFF: {len(BANDS)} bands, {CLASSES} classes, {self.args.network}, "
                 f"medians of {self.args.repeats}", "",
                 "| size | contender | wall s | job s | CPU s | peak PSS MiB | / file (wall) |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        for row in medians:
            for c in self.contenders:
                m = row[c]
                extra = f"{row[f'{c}_over_file']['wall_s']:.3f}" if c != "file" else ""
                lines.append(f"| {row['size']}² | {c} | {m['wall_s']:.2f} | {m['job_s']:.2f} | {m['cpu_s']:.1f} | "
                             f"{m['peak_pss_mib']:.0f} | {extra} |")
        lines += ["", *(f"- {'PASS' if c['pass'] else 'FAIL'} {c['target']}: {c['value']}" for c in checks)]
        if growth:
            lines.append(f"- peak PSS growth {lo['size']}² -> {hi['size']}² (MiB): "
                         + ", ".join(f"{c} {v:.0f}" for c, v in growth.items()))
        md = "\n".join(lines) + "\n"
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if self.args.report:
            self.args.report.parent.mkdir(parents=True, exist_ok=True)
            self.args.report.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(md)
        return doc


def _contenders(text: str) -> list[str]:
    names = [c for c in text.split(",") if c]
    if names[:1] != ["file"] or not set(names) <= set(CONTENDERS):
        raise argparse.ArgumentTypeError(f"'file' first, then some of {', '.join(CONTENDERS[1:])}: got {text!r}")
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2048,4096", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench-output/xarray"))
    p.add_argument("--report", type=Path, default=None)
    p.add_argument("--pss-every", type=float, default=1.0)
    p.add_argument("--network", choices=["conv", "unet"], default="conv")
    p.add_argument("--contenders", default=",".join(CONTENDERS), type=_contenders,
                   help="which to run, 'file' first (default: all)")
    p.add_argument("--contender", choices=["dataarray", "dataarray_raw"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--cube", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--run-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.contender:
        run_dataarray(args)
    else:
        Bench(args).go()


if __name__ == "__main__":
    main()
