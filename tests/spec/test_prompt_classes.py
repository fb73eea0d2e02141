"""Text-prompted classes in the workflow (``classes[].prompt``, ``threshold``): bad prompt lists
are spec errors; the prompts reach the workers' model section and the settings hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geoseg_pipeline.errors import SpecError
from geoseg_pipeline.ledger import config_hash
from geoseg_pipeline.spec import parse_workflow
from geoseg_pipeline.spec.prompts import TextClasses


@pytest.mark.parametrize(("classes", "model", "message"), [
    ([{"name": "bg", "threshold": 0.5}], "hf", r"needs at least one prompt.*only a background threshold"),
    ([{"name": "water", "prompt": "water"}, {"name": "trees"}], "hf", r"classes\[1\]: 'trees' has no prompt"),
    ([{"name": "a", "threshold": 0.3}, {"name": "b", "threshold": 0.6}, {"name": "c", "prompt": "c"}], "hf",
     r"classes: classes \[0, 1\] each have a threshold: at most one is the background"),
    ([{"name": "water", "prompt": "water", "threshold": 0.5}], "hf", r"give a prompt .* or a threshold .*not both"),
    ([{"name": "water", "prompt": "  "}], "hf", r"prompt must be a text"),
    ([{"name": "bg", "threshold": 1.0}, {"name": "water", "prompt": "water"}], "hf", r"threshold: .*less than 1"),
    ([{"name": "water", "prompt": "water"}], "builtin", r"prompts need a text-prompted model.*'builtin' takes none"),
])
def test_bad_prompt_lists_are_spec_errors(tmp_path: Path, classes: list[dict[str, Any]], model: str,
                                          message: str) -> None:
    section = {"type": "huggingface", "path": "m"} if model == "hf" else {"type": "builtin", "name": "landcover-demo"}
    with pytest.raises(SpecError, match=message):
        parse_workflow({"inputs": {"paths": ["x.tif"]}, "model": section, "output": {"directory": "out"},
                        "classes": classes}, tmp_path)


def test_the_prompts_reach_the_workers_and_the_settings_hash(tmp_path: Path) -> None:
    base = {"inputs": {"paths": ["x.tif"]}, "model": {"type": "huggingface", "path": "m"},
            "output": {"directory": "out"}}
    water = parse_workflow({**base, "classes": [{"name": "bg", "threshold": 0.4}, {"name": "w", "prompt": "water"}]},
                           tmp_path)
    assert water.model.text_classes is None  # the workflow's model section as written
    assert water.predictor_model.text_classes == TextClasses(prompts=(None, "water"), threshold=0.4)
    lake = parse_workflow({**base, "classes": [{"name": "bg", "threshold": 0.4}, {"name": "w", "prompt": "lake"}]},
                          tmp_path)
    assert config_hash(water) != config_hash(lake)  # another prompt: other outputs
    # settings added later leave the hash of a workflow without them as it was
    plain = parse_workflow({**base, "classes": [{"name": "w"}]}, tmp_path)
    assert config_hash(plain) == config_hash(plain.model_copy(update={"classes": plain.classes}))
    with pytest.raises(SpecError, match=r"model.text_classes: a workflow gives the prompts in classes\[\]\.prompt"):
        parse_workflow({**base, "model": {**base["model"], "text_classes": {"prompts": ["water"]}},
                        "classes": [{"name": "w", "prompt": "water"}]}, tmp_path)
