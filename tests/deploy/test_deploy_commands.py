"""What the deployment runs: the embedded workflow passes geoseg's own validation, every command
line names real CLI subcommands and options (parsed by ``geoseg_pipeline.cli._parser()`` and Ray's
job CLI), and token authentication is on everywhere with the same Secret."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from geoseg_pipeline.cli import _parser
from geoseg_pipeline.spec import WorkflowSpec, parse_workflow


def _geoseg_args(command: str) -> Any:
    """Parse a ``geoseg ...`` command line as the CLI would (exits, i.e. fails, on a bad one)."""
    argv = shlex.split(command)
    assert argv[0] == "geoseg", command
    try:
        return _parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"not a valid geoseg command line: {command}")


def _cron_script(cronjob: dict[str, Any]) -> tuple[dict[str, Any], str]:
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/bash", "-c"]
    return container, container["args"][0]


@pytest.fixture(scope="session")
def workflow(manifests: Any) -> WorkflowSpec:
    """The ConfigMap's workflow through geoseg's schema validation (the files need not exist)."""
    text = manifests[("ConfigMap", "geoseg-workflow")]["data"]["workflow.yaml"]
    return parse_workflow(yaml.safe_load(text), Path("/config"), "geoseg-workflow/workflow.yaml")


def test_workflow_paths_are_on_the_mounted_volumes(workflow: WorkflowSpec) -> None:
    for pattern in workflow.inputs.paths:
        assert pattern.startswith("/archive/"), f"inputs.paths: {pattern} is not under /archive"
    assert workflow.model.path is not None and str(workflow.model.path).startswith("/models/")
    assert str(workflow.output.directory).startswith("/out/"), "the run ledger must live on the persistent /out"


def test_workflow_fits_the_gpu_group(workflow: WorkflowSpec, ray_pods: Any) -> None:
    """Actors that can never be placed would leave the job waiting forever."""
    res = workflow.resources
    assert res.workers is not None, "on an autoscaling cluster set resources.workers (null counts present GPUs)"
    gpu = next(p for p in ray_pods if p.where == "RayCluster" and p.group == "gpu")
    limits = gpu.ray_container["resources"]["limits"]
    gpus_per_pod, cpus_per_pod = int(limits["nvidia.com/gpu"]), int(limits["cpu"])
    assert res.gpus_per_worker > 0, "the nightly workflow uses the GPU group"
    assert res.gpus_per_worker <= gpus_per_pod and res.cpus_per_worker <= cpus_per_pod
    per_pod = min(gpus_per_pod // res.gpus_per_worker, cpus_per_pod // res.cpus_per_worker)
    assert res.workers <= per_pod * gpu.group_spec["maxReplicas"], \
        f"{res.workers} actors, but the GPU group holds at most {per_pod * gpu.group_spec['maxReplicas']}"


def test_rayjob_entrypoint_runs_the_mounted_workflow(rayjob: Any) -> None:
    args = _geoseg_args(rayjob["spec"]["entrypoint"])
    assert (args.command, str(args.workflow), args.address) == ("run", "/config/workflow.yaml", "auto")
    assert not args.force, "the ledger should skip finished items"


def test_cronjob_submits_geoseg_run_through_the_jobs_api(cronjob: Any, raycluster: Any, layout: Any) -> None:
    from ray.dashboard.modules.job.cli import stop, submit

    container, script = _cron_script(cronjob)
    submits = [line for line in script.splitlines() if line.strip().startswith("ray job submit")]
    assert len(submits) == 1, script
    argv = shlex.split(submits[0].rstrip("&").strip())
    ctx = submit.make_context("submit", argv[3:])  # unknown options raise here
    entrypoint = " ".join(ctx.params["entrypoint"])
    args = _geoseg_args(entrypoint)
    assert (args.command, str(args.workflow), args.address, args.force) == \
        ("run", "/config/workflow.yaml", "auto", False)
    assert ctx.params["submission_id"] == "$id" and not ctx.params["no_wait"], "wait for the job, under a known id"
    # the dashboard address is the RayCluster's head service
    env = {e["name"]: e.get("value") for e in container["env"]}
    meta = raycluster["metadata"]
    assert ctx.params["address"] == "$RAY_DASHBOARD"
    assert env["RAY_DASHBOARD"] == f"http://{meta['name']}-head-svc.{meta['namespace']}.svc.cluster.local:8265"
    # stopping the pod stops the Ray job
    trap = re.search(r"trap '(.+)' TERM", script)
    assert trap, "no TERM trap"
    stop_argv = shlex.split(trap.group(1).split("||")[0])
    assert stop_argv[:3] == ["ray", "job", "stop"]
    assert stop.make_context("stop", stop_argv[3:]).params["job_id"] == "$id"
    assert "set -euo pipefail" in script and script.rstrip().endswith("wait $!")


def test_cronjob_script_is_valid_bash(cronjob: Any) -> None:
    _, script = _cron_script(cronjob)
    result = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def _containers_with_ray_clients(manifests: Any, ray_pods: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, container, pod spec) for every container that runs Ray or talks to it."""
    out = [(f"{p.where} {p.group}", p.ray_container, p.spec) for p in ray_pods]
    cron = manifests[("CronJob", "geoseg-nightly")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    out.append(("CronJob", cron["containers"][0], cron))
    submitter = manifests[("RayJob", "geoseg-backfill")]["spec"]["submitterPodTemplate"]["spec"]
    out.append(("RayJob submitter", submitter["containers"][0], submitter))
    for key in (("RayCluster", "geoseg"), ("RayJob", "geoseg-backfill")):
        spec = manifests[key]["spec"]
        spec = spec.get("rayClusterSpec", spec)
        out.append((f"{key[0]} autoscaler", spec["autoscalerOptions"], {}))
    return out


def test_token_authentication_is_on_everywhere(manifests: Any, ray_pods: Any, layout: Any) -> None:
    for where, container, pod_spec in _containers_with_ray_clients(manifests, ray_pods):
        env = {e["name"]: e for e in container.get("env", [])}
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: RAY_AUTH_MODE must be token"
        if "RAY_AUTH_TOKEN" in env:
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (layout.token_secret, layout.token_key), where
            assert "value" not in env["RAY_AUTH_TOKEN"], f"{where}: the token belongs in the Secret"
        else:  # a token file from the Secret
            path = env["RAY_AUTH_TOKEN_PATH"]["value"]
            volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
            mounted = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"])]
            assert mounted, f"{where}: {path} is not mounted"
            assert volumes[mounted[0]["name"]]["secret"]["secretName"] == layout.token_secret, where


def test_nothing_turns_authentication_off(layout: Any) -> None:
    files = [p for p in layout.deploy.rglob("*") if p.is_file()] + [layout.docs]
    pattern = re.compile(
        r"RAY_AUTH_MODE\s*[=:]\s*[\"']?disabled"                           # shell, env files, Dockerfile ENV k=v
        r"|ENV\s+RAY_AUTH_MODE\s+[\"']?disabled"                           # Dockerfile ENV k v
        r"|name:\s*[\"']?RAY_AUTH_MODE[\"']?\s*\n\s*value:\s*[\"']?disabled"  # a Kubernetes env entry
        r"|mode:\s*[\"']?disabled",                                          # KubeRay authOptions
        re.IGNORECASE)
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not pattern.search(text), f"{path.relative_to(layout.repo)} disables Ray token authentication"
    for path in layout.kubernetes.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            for found in _find_key(doc, "authOptions"):
                assert found.get("mode", "token") == "token", path.name


def _find_key(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        return ([node[key]] if key in node else []) + [x for v in node.values() for x in _find_key(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in _find_key(v, key)]
    return []
