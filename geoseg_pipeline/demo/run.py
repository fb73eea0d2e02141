"""``geoseg demo landcover``: generate demo scenes, write their workflow, run it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..api import evaluate_outputs
from ..runtime import JobResult, run_job
from ..spec import load_workflow

log = logging.getLogger("geoseg")

#: (name, height, width, seed); seeds the demo model never saw in training.
DEMO_SCENES = (("scene_a", 1024, 1024, 2001), ("scene_b", 768, 1280, 2002))
#: The districts the demo counts its classes in: ``(name, row0, col0, row1, col1)`` in pixels of
#: the scenes' grid (both scenes start at the same corner), drawn in lon/lat.
DEMO_DISTRICTS = (("north-west", 0, 0, 512, 640), ("north-east", 0, 640, 512, 1280),
                  ("south-west", 512, 0, 1024, 640), ("south-east", 512, 640, 1024, 1280))


def later_changes() -> tuple[Any, ...]:
    """A later date of ``scene_a``: a town grows in the north-east (built-up) and a stand of
    vegetation is cleared in the south-west (bare soil)."""
    from .scenes import Change

    return (Change(300, 720, 170, 3, 1.2), Change(760, 280, 130, 2, 1.0))


def vector_extra() -> bool:
    """Whether the ``vector`` extra (polygons, zones) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("shapely", "pyarrow", "pyogrio"))


def landcover_workflow(out_dir: Path, later: bool = False) -> dict[str, object]:
    """The demo workflow (the same as ``workflows/landcover-demo.yaml``), relative to ``out_dir``;
    ``later``: the second date's (``scene_a`` again, a year on). With the ``vector`` extra the
    workflow also writes polygons and counts the classes per district."""
    from .scenes import LANDCOVER_CLASS_COLOURS, LANDCOVER_CLASS_NAMES

    vector = vector_extra()
    workflow: dict[str, object] = {
        "version": 1,
        "name": "landcover-demo-later" if later else "landcover-demo",
        "inputs": {"paths": ["data-later/*.tif" if later else "data/*.tif"]},
        "model": {"type": "builtin", "name": "landcover-demo", "in_channels": 4, "num_classes": 4},
        "tiling": {"roi_size": [256, 256], "overlap": 0.25, "blend": "gaussian", "batch_size": 8},
        "output": {"directory": "landcover-later" if later else "landcover",
                   "formats": ["cog", "geoparquet"] if vector else ["cog"]},
        "classes": [
            {"name": n, "colour": c} for n, c in zip(LANDCOVER_CLASS_NAMES, LANDCOVER_CLASS_COLOURS, strict=True)
        ],
    }
    if vector:
        workflow["statistics"] = {"zones": {"path": "data/districts.gpkg", "id_field": "NAME"}}
    return workflow


def write_districts(path: Path) -> None:
    """The demo's districts (:data:`DEMO_DISTRICTS`) as a GeoPackage in EPSG:4326, field ``NAME``."""
    import shapely
    from pyogrio.raw import write
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    polygons = []
    for _, r0, c0, r1, c1 in DEMO_DISTRICTS:
        box = shapely.segmentize(shapely.box(500000 + 10 * c0, 5200000 - 10 * r1, 500000 + 10 * c1,
                                             5200000 - 10 * r0), 100.0)
        polygons.append(shapely.transform(box, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))))
    tmp = path.with_name(path.name + ".tmp.gpkg")
    tmp.unlink(missing_ok=True)
    write(tmp, shapely.to_wkb(polygons), [np.array([d[0] for d in DEMO_DISTRICTS], dtype=object)], ["NAME"],
          driver="GPKG", layer="districts", geometry_type="Polygon", crs="EPSG:4326")
    tmp.replace(path)


def run_landcover_demo(out_dir: Path, address: str | None = None, progress: bool | None = None) -> JobResult:
    """Generate the demo scenes under ``out_dir/data`` (once) and segment them; then the second
    date of ``scene_a`` (``out_dir/data-later``), and the change between the two dates
    (``out_dir/change``). Returns the first date's job."""
    from ..change import change_runs

    for folder, name, h, w, seed, changes in (*((out_dir / "data", *s, ()) for s in DEMO_SCENES),
                                              (out_dir / "data-later", *DEMO_SCENES[0], later_changes())):
        _generate(folder, name, h, w, seed, changes)
    if vector_extra() and not (out_dir / "data" / "districts.gpkg").exists():
        write_districts(out_dir / "data" / "districts.gpkg")
    results = []
    for later in (False, True):
        workflow = out_dir / ("landcover-demo-later.yaml" if later else "landcover-demo.yaml")
        workflow.write_text(yaml.safe_dump(landcover_workflow(out_dir, later), sort_keys=False), encoding="utf-8")
        results.append(run_job(load_workflow(workflow), address=address, progress=progress))
    if all(r.ok for r in results):
        runs = change_runs(out_dir / "landcover", out_dir / "landcover-later", out_dir / "change")
        for item, change in runs.done.items():
            log.info("change of %s between the two dates: %s (report %s)", item, change.transitions, change.report)
        for item, reason in runs.failed.items():
            log.warning("no change map for %s: %s", item, reason)
    return results[0]


def _generate(folder: Path, name: str, height: int, width: int, seed: int, changes: tuple[Any, ...]) -> None:
    """One demo scene (and its reference labels beside ``folder``), once."""
    from .scenes import write_landcover_scene

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.tif"
    if path.exists():
        return
    log.info("generating demo scene %s (%d x %d)", path, height, width)
    tmp = path.with_suffix(".tif.tmp")
    suffix = "_later" if changes else ""
    write_landcover_scene(tmp, height, width, seed, labels_path=folder / f"{name}_reference.tif.tmp", changes=changes)
    (folder / f"{name}_reference.tif.tmp").replace(folder.parent / f"{name}{suffix}_reference.tif")
    tmp.replace(path)


#: (name, seed, orientation): seeds the CT demo model never saw; a permuted, non-RAS orientation.
CT_PHANTOMS = (("phantom_a", 3001, "PLS"), ("phantom_b", 3002, "PLS"), ("phantom_c", 3003, "PLS"))


def ct_workflow(dicom: bool = False) -> dict[str, object]:
    """The CT demo workflow (the same as ``workflows/ct-tumor-demo.yaml``), relative to its
    folder; with ``dicom``, on the phantoms' DICOM series, writing DICOM SEGs too."""
    from .phantoms import CT_CLASS_COLOURS, CT_CLASS_NAMES

    inputs: dict[str, object] = {"paths": ["dicom"], "format": "dicom"} if dicom else {"paths": ["data/*.nii.gz"]}
    return {
        "version": 1,
        "name": "ct-tumor-demo-dicom" if dicom else "ct-tumor-demo",
        "inputs": inputs,
        "model": {"type": "builtin", "name": "ct-demo", "in_channels": 1, "num_classes": 3},
        # the model was trained on LPS arrays and applies its CT window itself
        "preprocessing": {"orientation": "LPS"},
        "tiling": {"roi_size": [64, 64, 32], "overlap": 0.25, "blend": "gaussian", "batch_size": 2},
        "output": {"directory": "ct", "formats": ["nifti", "dicom-seg"]} if dicom else {"directory": "ct"},
        "statistics": {"lesion_classes": [2], "connectivity": 26, "min_lesion_voxels": 10},
        "evaluation": {"reference": "reference", "classes": [1, 2]},
        "classes": [
            {"name": n, "colour": c} for n, c in zip(CT_CLASS_NAMES, CT_CLASS_COLOURS, strict=True)
        ],
    }


def run_ct_demo(out_dir: Path, address: str | None = None, progress: bool | None = None,
                dicom: bool = False) -> JobResult:
    """Generate CT phantoms under ``out_dir/data`` (their true labels under ``out_dir/reference``),
    segment them, evaluate against the true labels (``out_dir/ct/evaluation*.csv``), and write
    ``out_dir/ct/truth_comparison.csv``: reported tumour volume against the phantom's truth.

    With ``dicom`` the phantoms (in LPS, as scanners store axial series) are exported as DICOM
    CT series under ``out_dir/dicom/<phantom>/`` (one file per slice) and the job reads those,
    writing ``labels.nii.gz`` and a DICOM SEG (``labels.dcm``) over each series."""
    from .phantoms import write_ct_phantom

    data, reference = out_dir / "data", out_dir / "reference"
    data.mkdir(parents=True, exist_ok=True)
    reference.mkdir(parents=True, exist_ok=True)
    truth: dict[str, float] = {}
    for name, seed, orientation in CT_PHANTOMS:
        path = data / f"{name}.nii.gz"
        orientation = "LPS" if dicom else orientation
        log.info("generating CT phantom %s (%s)", path, orientation)
        t = write_ct_phantom(path, seed, orientation=orientation, labels_path=reference / f"{name}.nii.gz")
        truth[name] = float(sum(t.tumour_volumes_ml))
        if dicom:
            export_phantom(path, out_dir / "dicom" / name, seed)
    workflow = out_dir / ("ct-tumor-demo-dicom.yaml" if dicom else "ct-tumor-demo.yaml")
    workflow.write_text(yaml.safe_dump(ct_workflow(dicom), sort_keys=False), encoding="utf-8")
    spec = load_workflow(workflow)
    result = run_job(spec, address=address, progress=progress, force=True)
    evaluate_outputs(spec)  # OUT/ct/evaluation*.csv: Dice, IoU, HD95 against the phantoms' labels
    rows = ["item,true_tumour_ml,reported_tumour_ml,relative_error"]
    for o in result.outcomes:
        if o.stats is not None and o.item in truth:
            reported = o.stats.classes[2].volume_ml or 0.0
            rows.append(f"{o.item},{truth[o.item]:.3f},{reported:.3f},{(reported - truth[o.item]) / truth[o.item]:.4f}")
    (out_dir / "ct").mkdir(parents=True, exist_ok=True)
    (out_dir / "ct" / "truth_comparison.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return result


def export_phantom(nifti: Path, folder: Path, seed: int) -> None:
    """A phantom's NIfTI as a DICOM CT series (one file per slice, HU stored with slope 1)."""
    import shutil

    import nibabel as nib
    import numpy as np

    from .dicom_export import write_series

    if folder.exists():
        shutil.rmtree(folder)
    img: Any = nib.load(nifti)
    hu = np.asarray(img.dataobj).astype(np.int16)
    log.info("exporting %s as a DICOM series in %s (%d slices)", nifti.name, folder, hu.shape[2])
    write_series(folder, hu, img.affine, seed=seed)
