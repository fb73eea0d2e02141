"""The ``geoseg`` command line, through ``main(argv)``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from geoseg_pipeline.cli import main


def _write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_validate_lists_every_problem_with_its_field_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _write_yaml(tmp_path / "bad.yaml", {
        "inputs": {"paths": ["*.tif"], "colour": 1},
        "model": {"type": "torchscript"},
        "tiling": {"overlap": 1.5, "blend": "median"},
        "classes": [{"name": "a", "colour": "red"}],
    })
    assert main(["validate", str(wf)]) == 2
    err = capsys.readouterr().err
    for fragment in ("inputs.colour: unknown key", "model: type 'torchscript' needs 'path'",
                     "tiling.overlap", "1.5", "tiling.blend", "output: required key is missing",
                     "classes[0].colour"):
        assert fragment in err, fragment


def test_validate_checks_inputs_and_model_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _write_yaml(tmp_path / "wf.yaml", {
        "inputs": {"paths": ["scenes/*.tif", "nope.tif"]},
        "model": {"type": "torchscript", "path": "model.pt"},
        "output": {"directory": "out"},
    })
    assert main(["validate", str(wf)]) == 2
    err = capsys.readouterr().err
    assert "scenes/*.tif: matches no file" in err
    assert "nope.tif: no such file" in err
    assert "model.path" in err


def test_validate_accepts_the_shipped_workflows(capsys: pytest.CaptureFixture[str]) -> None:
    from geoseg_pipeline.spec import load_workflow

    root = Path(__file__).resolve().parents[1] / "workflows"
    shipped = sorted(root.glob("*.yaml"))
    assert shipped
    for wf in shipped:
        load_workflow(wf)  # schema-valid (inputs may not exist until the demo generated them)


@pytest.mark.usefixtures("ray_local")
def test_predict_exit_status_and_outputs(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    scene = write_raster("scene.tif", np.random.default_rng(0).integers(1, 200, (3, 100, 130)).astype("uint8"))
    model = conv_model(in_channels=3, classes=3)
    out = tmp_path / "out"
    argv = ["--no-progress", "predict", str(scene), "--model", str(model), "--out", str(out),
            "--roi-size", "64", "--overlap", "0.5", "--blend", "constant", "--batch-size", "2",
            "--workers", "1", "--classes", "water,forest,urban"]
    assert main(argv) == 0
    assert (out / "scene" / "labels.tif").is_file()
    assert "water" in (out / "scene" / "stats.csv").read_text()
    printed = capsys.readouterr().out
    assert "1 item(s) done, 0 failed" in printed
    assert "0.0 M pixels/voxels" in printed  # 100 x 130 pixels
    doc = json.loads((out / "summary.json").read_text())
    assert doc["pixels_processed"] == 100 * 130 and doc["items_skipped"] == 0
    assert main([*argv[:2], str(scene), str(tmp_path / "missing.tif"), *argv[3:], "--force"]) == 1
    assert "FAILED missing" in capsys.readouterr().out


def test_wrong_class_count_fails_before_any_data(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path], ray_local: None,
) -> None:
    scene = write_raster("scene.tif", np.ones((3, 40, 40), dtype="uint8"))
    model = conv_model(in_channels=3, classes=3)
    assert main(["--no-progress", "predict", str(scene), "--model", str(model), "--out", str(tmp_path / "o"),
                 "--roi-size", "32", "--workers", "1", "--classes", "a,b"]) == 1
    summary = (tmp_path / "o" / "summary.csv").read_text()
    assert "predicts 3 classes but 2 class names were given" in summary
    assert not (tmp_path / "o" / "scene").exists()


def test_lesion_classes_are_checked_against_the_classes(
    tmp_path: Path, write_raster: Callable[..., Path], conv_model: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A name, or a class the model does not predict, is refused before any data is read (an
    empty lesion table would otherwise look like a finding)."""
    scene = write_raster("scene.tif", np.ones((3, 40, 40), dtype="uint8"))
    model = conv_model(in_channels=3, classes=3)
    base = ["--no-progress", "predict", str(scene), "--model", str(model), "--roi-size", "32", "--workers", "1"]
    assert main([*base, "--out", str(tmp_path / "a"), "--lesion-classes", "tumour"]) == 2
    assert "--lesion-classes takes class numbers" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--lesion-classes", "7"]) == 1
    summary = (tmp_path / "b" / "summary.csv").read_text()
    assert "lesion_classes names class 7, but the model predicts 3 classes" in summary
    assert not (tmp_path / "b" / "scene").exists()
    assert main([*base, "--out", str(tmp_path / "c"), "--lesion-classes", "3", "--classes", "a,b,c"]) == 2
    assert "names class 3 but 3 classes are listed" in capsys.readouterr().err


def test_shipped_demo_workflow_matches_the_demo_command() -> None:
    from geoseg_pipeline.demo.run import landcover_workflow

    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflows/landcover-demo.yaml").read_text())
    generated = landcover_workflow(Path("demo-output"))
    for section in ("model", "tiling", "classes"):
        assert shipped[section] == generated[section], section


@pytest.mark.usefixtures("ray_local")
def test_demo_landcover_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import rasterio

    assert main(["--no-progress", "demo", "landcover", "--out", str(tmp_path)]) == 0
    assert "2 item(s) done, 0 failed" in capsys.readouterr().out
    for scene in ("scene_a", "scene_b"):
        with rasterio.open(tmp_path / "landcover" / scene / "labels.tif") as out, \
                rasterio.open(tmp_path / f"{scene}_reference.tif") as ref:
            pred, truth = out.read(1), ref.read(1)
            assert out.crs == ref.crs and out.transform == ref.transform
        assert np.array_equal(pred == 255, truth == 255)  # nodata exactly where the scene has none
        valid = truth != 255
        ious = [((pred == k) & (truth == k) & valid).sum() / (((pred == k) | (truth == k)) & valid).sum()
                for k in range(4)]
        assert float(np.mean(ious)) >= 0.95, ious
    # polygons, districts and the reports
    import csv

    import geopandas

    item = tmp_path / "landcover" / "scene_a"
    polygons = geopandas.read_parquet(item / "labels.parquet")
    stats = json.loads((item / "stats.json").read_text())
    for cls in stats["classes"]:
        assert int(polygons.pixels[polygons.class_index == cls["class_index"]].sum()) == cls["pixels"]
    with (item / "zones.csv").open() as f:
        assert {r["zone"] for r in csv.DictReader(f)} == {"north-west", "north-east", "south-west", "south-east"}
    assert (tmp_path / "landcover" / "zones_summary.csv").is_file()
    assert "Zones over the job" in (tmp_path / "landcover" / "report.html").read_text(encoding="utf-8")
    assert "scene_a: land cover" in (item / "report.html").read_text(encoding="utf-8")
    # the second date of scene_a and the change between the dates: the town's growth is found
    change = tmp_path / "change" / "scene_a"
    assert {"change.tif", "transitions.csv", "net_change.csv", "report.html"} <= {p.name for p in change.iterdir()}
    with rasterio.open(tmp_path / "scene_a_reference.tif") as a, \
            rasterio.open(tmp_path / "scene_a_later_reference.tif") as b:
        before, after = a.read(1), b.read(1)
    valid = (before != 255) & (after != 255)
    grown = int(((after == 3) & valid).sum()) - int(((before == 3) & valid).sum())
    assert grown > 20_000  # the reference: the town in the north-east grows
    with (change / "net_change.csv").open() as f:
        net = {r["class"]: int(r["net_pixels"]) for r in csv.DictReader(f)}
    assert net["built_up"] == pytest.approx(grown, rel=0.15)


@pytest.fixture(scope="module")
def ct_demo(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> Path:
    out = tmp_path_factory.mktemp("ct-demo")
    assert main(["--no-progress", "demo", "ct", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_demo_ct_end_to_end(ct_demo: Path) -> None:
    import nibabel as nib

    for name in ("phantom_a", "phantom_b", "phantom_c"):
        out = nib.load(ct_demo / "ct" / name / "labels.nii.gz")
        src = nib.load(ct_demo / "data" / f"{name}.nii.gz")
        assert np.allclose(out.affine, src.affine) and out.shape == src.shape
        assert "".join(nib.aff2axcodes(out.affine)) == "PLS"  # a non-RAS, permuted input kept as it is
        assert (ct_demo / "ct" / name / "report.html").is_file()
        assert (ct_demo / "ct" / name / "lesions.csv").is_file()
    assert len((ct_demo / "ct" / "truth_comparison.csv").read_text().splitlines()) == 4


@pytest.mark.slow
def test_demo_ct_is_evaluated_against_the_phantom_labels(ct_demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    rows = list(csv.DictReader((ct_demo / "ct" / "evaluation.csv").read_text().splitlines()))
    tumour = [r for r in rows if r["class_index"] == "2"]
    assert {r["item"] for r in tumour} == {"phantom_a", "phantom_b", "phantom_c"}
    assert all(float(r["dice"]) > 0.9 and r["hd95_unit"] == "mm" for r in tumour), tumour
    truth = {r["item"]: r for r in csv.DictReader((ct_demo / "ct" / "truth_comparison.csv").read_text().splitlines())}
    for r in tumour:  # the evaluation's reference volume is the phantom's true tumour volume
        assert float(r["ref_volume_ml"]) == pytest.approx(float(truth[r["item"]]["true_tumour_ml"]), abs=1e-3)
    # the same through the command, into another folder
    out = ct_demo / "eval-cli"
    assert main(["evaluate", str(ct_demo / "ct"), str(ct_demo / "reference"), "--out", str(out),
                 "--classes", "1,2"]) == 0
    assert "3 item(s) evaluated, 0 not" in capsys.readouterr().out
    assert (out / "evaluation_summary.json").is_file()


@pytest.mark.slow
def test_demo_ct_tumour_volumes_within_5_percent(ct_demo: Path) -> None:
    import csv

    rows = list(csv.DictReader((ct_demo / "ct" / "truth_comparison.csv").read_text().splitlines()))
    assert rows and all(abs(float(r["relative_error"])) <= 0.05 for r in rows), rows


def test_shipped_ct_workflow_matches_the_demo_command() -> None:
    from geoseg_pipeline.demo.run import ct_workflow

    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflows/ct-tumor-demo.yaml").read_text())
    generated = ct_workflow()
    for section in ("model", "preprocessing", "tiling", "statistics", "classes"):
        assert shipped[section] == generated[section], section
    assert shipped["evaluation"]["classes"] == generated["evaluation"]["classes"]


def test_formats_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from geoseg_pipeline.formats import FORMATS, OUTPUTS

    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    for fmt in (*FORMATS, *OUTPUTS):
        assert fmt.description in out
    assert "nifti    volume  .nii, .nii.gz" in out


@pytest.mark.slow
def test_demo_ct_dicom_round_trip(tmp_path: Path, ray_local: None) -> None:
    """``geoseg demo ct --dicom``: the phantoms exported as DICOM series, read back as series,
    segmented into NIfTI and DICOM SEG outputs that dciodvfy accepts and that say what the NIfTI
    says, on the phantoms' own grid."""
    import nibabel as nib
    from dicom_files import dciodvfy, read_seg

    assert main(["--no-progress", "demo", "ct", "--dicom", "--out", str(tmp_path)]) == 0
    for name in ("phantom_a", "phantom_b", "phantom_c"):
        out = nib.load(tmp_path / "ct" / name / "labels.nii.gz")
        src = nib.load(tmp_path / "data" / f"{name}.nii.gz")
        assert np.allclose(out.affine, src.affine, atol=1e-4) and out.shape == src.shape
        labels = np.asarray(out.dataobj)
        seg = tmp_path / "ct" / name / "labels.dcm"
        assert dciodvfy(seg) == []
        seg_labels, _ = read_seg(seg, sorted((tmp_path / "dicom" / name).iterdir()))
        np.testing.assert_array_equal(seg_labels, labels)
        assert (labels == 2).sum() > 0
    rows = (tmp_path / "ct" / "truth_comparison.csv").read_text().splitlines()
    assert len(rows) == 4 and all(abs(float(r.split(",")[3])) < 0.2 for r in rows[1:])


@pytest.mark.parametrize("text", ["32,,16", "32,32,x", "1,2,3,4", "a"])
def test_a_roi_size_typo_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``32,,16`` once became a two-number (raster) roi, and a volume ran as a raster job."""
    with pytest.raises(SystemExit) as info:
        main(["predict", "x.nii.gz", "--model", "m.pt", "--out", "o", "--roi-size", text])
    assert info.value.code == 2 and "roi size must be N, N,N (a raster) or N,N,N (a volume)" in capsys.readouterr().err


def test_a_file_of_the_other_kind_names_the_roi_size() -> None:
    from geoseg_pipeline.errors import SourceError
    from geoseg_pipeline.formats import detect

    with pytest.raises(SourceError, match=r"ct\.nii\.gz: is a volume file but this is a raster job \(roi_size has 2 "
                                          r"numbers\): give roi_size three numbers"):
        detect("ct.nii.gz", "raster")
    with pytest.raises(SourceError, match=r"scene\.tif: is a raster file but this is a volume job"):
        detect("scene.tif", "volume")
    assert detect("scene.tif", "raster").name == "geotiff" and detect("ct.nii", "volume").name == "nifti"
