"""model.type: nnunet: the folder is read when the workflow is, its patch and nnU-Net's tiling set,
and workflow keys the plans decide are refused, before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from nnunet_folders import write_model_folder

from geoseg_pipeline.errors import SpecError
from geoseg_pipeline.spec import parse_workflow


def _wf(folder: Path, **extra: object) -> dict[str, object]:
    return {"inputs": {"paths": ["x.nii.gz"]}, "model": {"type": "nnunet", "path": str(folder)},
            "output": {"directory": "out"}, **extra}


def test_the_plans_set_the_tiling(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path, folds=(0, 2))
    spec = parse_workflow(_wf(folder, model={"type": "nnunet", "path": str(folder), "folds": [2],
                                             "mirroring": False}), tmp_path)
    t = spec.tiling
    assert (t.roi_size, t.overlap, t.blend, t.grid) == ((16, 32, 32), 0.5, "nnunet", "nnunet")
    assert spec.model.folds == ("2",) and spec.model.mirroring is False
    assert str(spec.model.checkpoint or "checkpoint_final.pth") == "checkpoint_final.pth"


@pytest.mark.parametrize(("extra", "where"), [
    ({"tiling": {"roi_size": [96, 96, 96]}}, "tiling.roi_size"),
    ({"tiling": {"overlap": 0.25}}, "tiling.overlap"),
    ({"preprocessing": {"spacing": [1.0, 1.0, 1.0]}}, "preprocessing.spacing"),
    ({"preprocessing": {"intensity": {"mode": "zscore_nonzero"}}}, "preprocessing.intensity"),
])
def test_keys_the_plans_decide_are_refused(tmp_path: Path, extra: dict[str, object], where: str) -> None:
    folder = write_model_folder(tmp_path)
    with pytest.raises(SpecError, match=where):
        parse_workflow(_wf(folder, **extra), tmp_path)


def test_a_missing_fold_is_a_workflow_problem(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path)
    with pytest.raises(SpecError, match=r"model\.path: .*fold 3 has no checkpoint_final\.pth"):
        parse_workflow(_wf(folder, model={"type": "nnunet", "path": str(folder), "folds": [3]}), tmp_path)


def test_nnunet_keys_are_refused_for_other_models(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="'folds' is not used by type 'builtin'"):
        parse_workflow({"inputs": {"paths": ["x.tif"]}, "model": {"type": "builtin", "name": "landcover-demo",
                                                                   "folds": [0]}, "output": {"directory": "o"}},
                       tmp_path)


def test_a_dumped_spec_of_another_model_loads_again(tmp_path: Path) -> None:
    # geoseg submit ships model_dump(exclude_none=True): the default mirroring: true is in it
    spec = parse_workflow({"inputs": {"paths": ["x.tif"]}, "model": {"type": "builtin", "name": "landcover-demo"},
                           "output": {"directory": "o"}}, tmp_path)
    again = parse_workflow(spec.model_dump(mode="json", exclude_none=True), tmp_path)
    assert again.model == spec.model


def test_geoseg_validate_accepts_an_nnunet_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml
    from nnunet_folders import BREAST

    from geoseg_pipeline.cli import main

    folder = write_model_folder(tmp_path)
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({"inputs": {"paths": [str(BREAST)]}, "model": {"type": "nnunet", "path": str(folder)},
                                  "output": {"directory": str(tmp_path / "out")}}))
    assert main(["validate", str(wf)]) == 0, capsys.readouterr().err
