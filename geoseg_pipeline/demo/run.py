"""``geoseg demo landcover``: generate demo scenes, write their workflow, run it."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from ..runtime import JobResult, run_job
from ..spec import load_workflow

log = logging.getLogger("geoseg")

#: (name, height, width, seed); seeds the demo model never saw in training.
DEMO_SCENES = (("scene_a", 1024, 1024, 2001), ("scene_b", 768, 1280, 2002))


def landcover_workflow(out_dir: Path) -> dict[str, object]:
    """The demo workflow (the same as ``workflows/landcover-demo.yaml``), relative to ``out_dir``."""
    from .scenes import LANDCOVER_CLASS_COLOURS, LANDCOVER_CLASS_NAMES

    return {
        "version": 1,
        "name": "landcover-demo",
        "inputs": {"paths": ["data/*.tif"]},
        "model": {"type": "builtin", "name": "landcover-demo", "in_channels": 4, "num_classes": 4},
        "tiling": {"roi_size": [256, 256], "overlap": 0.25, "blend": "gaussian", "batch_size": 8},
        "output": {"directory": "landcover", "formats": ["cog"]},
        "classes": [
            {"name": n, "colour": c} for n, c in zip(LANDCOVER_CLASS_NAMES, LANDCOVER_CLASS_COLOURS, strict=True)
        ],
    }


def run_landcover_demo(out_dir: Path, address: str | None = None, progress: bool | None = None) -> JobResult:
    """Generate the demo scenes under ``out_dir/data`` (once) and segment them."""
    from .scenes import write_landcover_scene

    data = out_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, h, w, seed in DEMO_SCENES:
        path = data / f"{name}.tif"
        if not path.exists():
            log.info("generating demo scene %s (%d x %d)", path, h, w)
            tmp = path.with_suffix(".tif.tmp")
            write_landcover_scene(tmp, h, w, seed, labels_path=data / f"{name}_reference.tif.tmp")
            (data / f"{name}_reference.tif.tmp").replace(out_dir / f"{name}_reference.tif")
            tmp.replace(path)
    workflow = out_dir / "landcover-demo.yaml"
    workflow.write_text(yaml.safe_dump(landcover_workflow(out_dir), sort_keys=False), encoding="utf-8")
    return run_job(load_workflow(workflow), address=address, progress=progress)
