"""docs/deploy.md: the files it names exist, its links resolve, and its command lines are real."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from geoseg_pipeline.cli import _parser

#: A geoseg invocation inside a shell line: global options, a subcommand, its arguments up to a
#: quote, a redirection, a pipe or the end of the line.
GEOSEG_COMMAND = re.compile(
    r"(?<![\w/.-])geoseg((?:\s+--?[a-z][\w-]*)*\s+(?:run|validate|status|predict|evaluate|demo)\b[^'\"\n|>&]*)")


def _docs(layout: Any) -> str:
    assert layout.docs.is_file(), "docs/deploy.md is missing"
    return str(layout.docs.read_text(encoding="utf-8"))


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)


def test_named_deploy_files_exist(layout: Any) -> None:
    text = _docs(layout)
    named = {m.rstrip(".,") for m in re.findall(r"(?<![\w-])deploy/[\w./-]+", text)}
    assert named, "docs/deploy.md names no deploy/ file"
    for path in sorted(named):
        assert (layout.repo / path).exists(), f"docs/deploy.md names {path}, which does not exist"
    for manifest in layout.kubernetes.glob("*.yaml"):
        assert f"deploy/kubernetes/{manifest.name}" in text, f"docs/deploy.md does not explain {manifest.name}"


def test_relative_links_resolve(layout: Any) -> None:
    for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", _docs(layout)):
        assert (layout.docs.parent / target).exists(), f"docs/deploy.md links to {target}, which does not exist"


def test_deploy_readme_points_to_the_walk_through(layout: Any) -> None:
    assert "../docs/deploy.md" in (layout.deploy / "README.md").read_text(encoding="utf-8")


def test_every_geoseg_command_line_parses(layout: Any) -> None:
    commands = [m.group(0).strip() for block in _code_blocks(_docs(layout)) for m in GEOSEG_COMMAND.finditer(block)]
    assert len(commands) >= 8, commands
    for command in commands:
        try:
            _parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"docs/deploy.md: not a valid geoseg command line: {command}")


def test_every_ray_job_submit_line_parses(layout: Any) -> None:
    from ray.dashboard.modules.job.cli import submit

    lines = []
    for block in _code_blocks(_docs(layout)):
        lines += [line for line in block.replace("\\\n", " ").splitlines() if "ray job submit" in line]
    assert lines
    for line in lines:
        argv = shlex.split(line[line.index("ray job submit"):])
        params = submit.make_context("submit", argv[3:]).params
        assert params["entrypoint"][0] == "geoseg", line
