"""The workflow spec: defaults, path resolution, YAML loading and every problem at once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from geoseg_pipeline.errors import GeosegError, SpecError
from geoseg_pipeline.spec import WorkflowSpec, load_workflow, parse_workflow


def _minimal() -> dict[str, Any]:
    return {
        "inputs": {"paths": ["scenes/*.tif"]},
        "model": {"type": "builtin", "name": "landcover-demo"},
        "output": {"directory": "out"},
    }


def _problems(data: Any, base: Path = Path("/base")) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_workflow(data, base)
    problems = info.value.problems
    paths = [p for p, _ in problems]
    assert len(paths) == len(set(paths)), problems
    return dict(problems)


def test_minimal_workflow_defaults(tmp_path: Path) -> None:
    spec = parse_workflow(_minimal(), tmp_path)
    assert isinstance(spec, WorkflowSpec)
    assert spec.version == 1
    assert spec.inputs.format == "auto"
    assert spec.inputs.nodata is None
    assert spec.tiling.roi_size == (256, 256)
    assert spec.tiling.overlap == 0.25
    assert spec.tiling.blend == "gaussian"
    assert spec.tiling.block_size is None and spec.tiling.block_shape == (512, 512)
    assert spec.output.formats is None and spec.output.resolved_formats(2) == ("cog",)
    assert spec.preprocessing.bands is None
    assert spec.classes is None


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    data = _minimal()
    data["inputs"]["paths"] = ["scenes/*.tif", "/abs/x.tif", "../up.tif"]
    data["model"] = {"type": "torchscript", "path": "models/net.pt"}
    spec = parse_workflow(data, tmp_path)
    assert spec.inputs.paths == (str(tmp_path / "scenes/*.tif"), "/abs/x.tif", str(tmp_path.parent / "up.tif"))
    assert spec.model.path == tmp_path / "models/net.pt"
    assert spec.output.directory == tmp_path / "out"


def test_a_file_uri_output_directory_is_the_local_folder(tmp_path: Path) -> None:
    data = _minimal()
    data["output"]["directory"] = (tmp_path / "nightly out").as_uri()  # file:///.../nightly%20out
    spec = parse_workflow(data, tmp_path)
    assert spec.output.directory == tmp_path / "nightly out" and spec.output.remote is None


def test_absolute_output_directory_kept(tmp_path: Path) -> None:
    data = _minimal()
    data["output"]["directory"] = str(tmp_path / "elsewhere")
    spec = parse_workflow(data, Path("/not/used"))
    assert spec.output.directory == tmp_path / "elsewhere"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = _minimal()
    data["inputs"]["paths"] = ["~/scene.tif"]
    spec = parse_workflow(data, Path("/base"))
    assert spec.inputs.paths == (str(tmp_path / "home" / "scene.tif"),)


def test_spec_is_frozen() -> None:
    spec = parse_workflow(_minimal(), Path("/base"))
    with pytest.raises(ValueError):
        spec.tiling.overlap = 0.5  # type: ignore[misc]


def test_load_workflow_from_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    path = folder / "wf.yaml"
    path.write_text(
        "name: demo\n"
        "inputs:\n  paths: [data/a.tif]\n  nodata: .nan\n"
        "model: {type: builtin, name: landcover-demo, in_channels: 2, num_classes: 2}\n"
        "preprocessing:\n  bands: [3, 1]\n  normalize: {mean: [1.5, 2], std: [0.5, 4]}\n"
        "tiling: {roi_size: 64, overlap: 0.5, blend: constant, block_size: 128}\n"
        "output: {directory: results, formats: [cog, logits]}\n"
        "classes:\n  - {name: water, colour: '#0000FF'}\n  - {name: land}\n",
        encoding="utf-8",
    )
    spec = load_workflow(path)
    assert spec.name == "demo"
    assert spec.inputs.paths == (str(folder / "data/a.tif"),)
    assert spec.inputs.nodata is not None and math.isnan(spec.inputs.nodata)
    assert spec.preprocessing.bands == (3, 1)
    assert spec.preprocessing.normalize is not None
    assert spec.preprocessing.normalize.mean == (1.5, 2.0)
    assert spec.tiling.roi_size == (64, 64)
    assert spec.tiling.blend == "constant"
    assert spec.output.directory == folder / "results"
    assert spec.output.formats == ("cog", "logits")
    assert spec.classes is not None
    assert [(c.name, c.colour) for c in spec.classes] == [("water", "#0000ff"), ("land", None)]  # None: the palette


def test_load_workflow_relative_file_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(_minimal()), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    spec = load_workflow("wf.yaml")
    assert spec.output.directory == tmp_path.resolve() / "out"


def test_every_field_problem_is_listed_with_its_path() -> None:
    data = {
        "extra": 1,
        "model": {"type": "builtin", "name": "x", "bar": 2},
        "tiling": {"foo": 1, "overlap": 1.5},
        "preprocessing": {"normalize": {"mean": [1, 2], "std": [1]}},
        "classes": [{"name": "a", "color": "#ffffff"}, {"name": "b", "colour": "red"}],
        "output": {},
    }
    problems = _problems(data)
    assert problems == {
        "extra": "unknown key",
        "model.bar": "unknown key",
        "tiling.foo": "unknown key",
        "classes[0].color": "unknown key",
        "inputs": "required key is missing",
        "output.directory": "required key is missing",
        "tiling.overlap": problems["tiling.overlap"],
        "classes[1].colour": "colour must look like #rrggbb, got 'red'",
        "preprocessing.normalize": "mean has 2 entries but std has 1",
    }
    assert "1.5" in problems["tiling.overlap"]
    assert "less than 1" in problems["tiling.overlap"]


def test_message_lists_every_problem_and_the_source() -> None:
    data = _minimal()
    data["tiling"] = {"overlap": 1.5, "foo": 1}
    with pytest.raises(SpecError) as info:
        parse_workflow(data, Path("/base"), source="wf.yaml")
    text = str(info.value)
    assert text.startswith("wf.yaml: 2 problem(s)")
    assert "tiling.overlap:" in text and "1.5" in text
    assert "tiling.foo: unknown key" in text


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_workflow({"inputs": {}}, Path("/base"))
    assert issubclass(SpecError, GeosegError)


@pytest.mark.parametrize(
    ("section", "value", "path", "fragment"),
    [
        ("tiling", {"overlap": -0.1}, "tiling.overlap", "-0.1"),
        ("tiling", {"roi_size": [8, 8, 8, 8], "block_size": 16}, "tiling.roi_size", "[8, 8, 8, 8]"),
        ("tiling", {"block_size": 100}, "tiling.block_size", "got 100"),
        ("tiling", {"blend": "median"}, "tiling.blend", "'median'"),
        ("inputs", {"paths": []}, "inputs.paths", "at least 1"),
        ("model", {"type": "tflite"}, "model.type", "'tflite'"),
        ("model", {"type": "builtin"}, "model", "needs 'name'"),
        ("model", {"type": "torchscript"}, "model", "needs 'path'"),
        ("preprocessing", {"bands": [0, 1]}, "preprocessing.bands[0]", "got 0"),
        ("preprocessing", {"normalize": {"mean": [1], "std": [0]}}, "preprocessing.normalize", "[0.0]"),
        ("output", {"directory": "o", "formats": ["cog", "png"]}, "output.formats[1]", "'png'"),
    ],
)
def test_single_field_problems(section: str, value: dict[str, Any], path: str, fragment: str) -> None:
    data = _minimal()
    data[section] = value
    problems = _problems(data)
    assert list(problems) == [path]
    assert fragment in problems[path]


def test_normalize_length_against_bands() -> None:
    data = _minimal()
    data["preprocessing"] = {"bands": [1, 2], "normalize": {"mean": [1.0], "std": [1.0]}}
    assert _problems(data) == {"preprocessing": "normalize has 1 entries but 2 bands are selected"}


@pytest.mark.parametrize(
    ("update", "path", "fragments"),
    [
        ({"model": {"type": "builtin", "name": "x", "num_classes": 3}, "classes": [{"name": "a"}, {"name": "b"}]},
         "model.num_classes", ["is 3", "2 classes"]),
        ({"model": {"type": "builtin", "name": "x", "in_channels": 3}, "preprocessing": {"bands": [1, 2]}},
         "preprocessing.bands", ["selects 2", "model.in_channels is 3"]),
        ({"tiling": {"roi_size": [64, 48], "block_size": 32}}, "tiling.block_size", ["roi size (64)", "got 32"]),
        ({"classes": [{"name": "a"}, {"name": "a"}]}, "classes", ["duplicate names ['a']"]),
    ],
)
def test_cross_field_problems(update: dict[str, Any], path: str, fragments: list[str]) -> None:
    data = {**_minimal(), **update}
    problems = _problems(data)
    assert list(problems) == [path]
    for fragment in fragments:
        assert fragment in problems[path]


def test_cross_field_problem_listed_next_to_a_field_problem() -> None:
    data = {**_minimal(), "tiling": {"overlap": 1.5}}
    data["model"] = {"type": "builtin", "name": "x", "num_classes": 3}
    data["classes"] = [{"name": "a"}, {"name": "b"}]
    problems = _problems(data)
    assert "1.5" in problems["tiling.overlap"]
    assert "is 3 but 2 classes are listed" in problems["model.num_classes"]


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("", "NoneType"), ("42\n", "int")])
def test_non_mapping_yaml(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match=f"must be a mapping of sections, got {kind}") as info:
        load_workflow(path)
    assert str(path) in str(info.value)
    assert info.value.problems == [("(workflow)", "expected a mapping")]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="cannot read workflow file") as info:
        load_workflow(path)
    assert str(path) in str(info.value)
    assert [p for p, _ in info.value.problems] == ["(file)"]


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read workflow file"):
        load_workflow(tmp_path)


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("inputs: [unclosed\nmodel: {type: builtin\n", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML") as info:
        load_workflow(path)
    assert str(path) in str(info.value)
    assert [p for p, _ in info.value.problems] == ["(yaml)"]


def test_schema_problems_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    data = _minimal()
    data["tiling"] = {"overlap": 1.5}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_workflow(path)
    assert str(info.value).startswith(f"{path}: 1 problem(s)")
    assert info.value.problems[0][0] == "tiling.overlap"


def test_output_formats_follow_the_kind_of_job(tmp_path: Path) -> None:
    base = {"inputs": {"paths": ["a.nii"]}, "model": {"type": "builtin", "name": "ct-demo"}}
    volume = parse_workflow({**base, "tiling": {"roi_size": [32, 32, 16]}, "output": {"directory": "o"}}, tmp_path)
    assert volume.output.resolved_formats(3) == ("nifti",)
    raster = parse_workflow({**base, "output": {"directory": "o"}}, tmp_path)
    assert raster.output.resolved_formats(2) == ("cog",)
    with pytest.raises(SpecError) as info:
        parse_workflow({**base, "tiling": {"roi_size": [32, 32, 16]},
                        "preprocessing": {}, "output": {"directory": "o", "formats": ["cog", "zarr"]}}, tmp_path)
    assert ("output.formats[0]",
            "'cog' is not an output of volumes; use ['nifti', 'zarr', 'dicom-seg']") in info.value.problems
    with pytest.raises(SpecError) as info:
        parse_workflow({**base, "preprocessing": {"spacing": [1, 1, 2]}, "output": {"directory": "o"}}, tmp_path)
    assert ("preprocessing.spacing", "applies to volumes only (tiling.roi_size has 2 numbers)") in info.value.problems
    with pytest.raises(SpecError, match="spacing must be 3 positive"):
        parse_workflow({**base, "tiling": {"roi_size": [32, 32, 16]}, "preprocessing": {"spacing": [1, 0, 2]},
                        "output": {"directory": "o"}}, tmp_path)


@pytest.mark.parametrize(
    ("update", "path", "fragment"),
    [
        ({"inputs": {"paths": ["a.tif"], "format": "nifti"}}, "inputs.format", "holds no rasters"),
        ({"tiling": {"roi_size": [16, 16, 16]}, "statistics": {"zones": {"path": "d.gpkg", "id_field": "N"}}},
         "statistics.zones", "applies to rasters only"),
        ({"tiling": {"roi_size": [16, 16, 16]}, "output": {"directory": "o", "min_mapping_unit": 5}},
         "output.min_mapping_unit", "applies to rasters only"),
        ({"output": {"directory": "o", "min_mapping_unit": "5 acres"}}, "output.min_mapping_unit",
         "give pixels (25) or an area"),
    ],
)
def test_problems_between_input_statistics_and_tiling_are_named(update: dict[str, Any], path: str,
                                                               fragment: str) -> None:
    """Problems found only by comparing sections reach the message with their path."""
    problems = _problems({**_minimal(), **update})
    assert list(problems) == [path] and fragment in problems[path]


def test_dicom_seg_needs_dicom_series_inputs(tmp_path: Path) -> None:
    """Every item failed at run time, naming the output folder, where validate said valid."""
    data = {"inputs": {"paths": [str(tmp_path)]}, "model": {"type": "builtin", "name": "ct-demo"},
            "tiling": {"roi_size": [32, 32, 16]}, "output": {"directory": str(tmp_path / "o"),
                                                             "formats": ["nifti", "dicom-seg"]}}
    with pytest.raises(SpecError) as info:
        parse_workflow(data, tmp_path)
    assert ("output.formats", "dicom-seg references the input's DICOM series: it needs inputs.format: dicom (or "
            "inputs.dicomweb)") in info.value.problems
    parse_workflow({**data, "inputs": {"paths": [str(tmp_path)], "format": "dicom"}}, tmp_path)
