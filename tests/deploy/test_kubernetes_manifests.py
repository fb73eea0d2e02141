"""The Kubernetes manifests (deploy/kubernetes).

Core objects (Namespace, PersistentVolumeClaim, ConfigMap, CronJob) are validated against the
Kubernetes OpenAPI schemas bundled by ``kubernetes-validate`` (offline, strict: unknown fields are
errors). KubeRay's CRDs have no schema that installs offline, so RayCluster and RayJob get a
structural check of the fields KubeRay reads, and every pod template inside them (head, worker
groups, RayJob submitter) and the autoscaler container are validated against the Kubernetes
schemas as PodTemplates.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

try:
    import kubernetes_validate
except ImportError as exc:  # a dev dependency: fail, never skip
    raise ImportError("the manifest tests need kubernetes-validate: pip install kubernetes-validate") from exc

#: The oldest Kubernetes the manifests target (CronJob.spec.timeZone is GA from 1.27).
K8S_VERSION = "1.30"

#: RayClusterSpec / RayJobSpec / group fields of KubeRay ray.io/v1 (1.1 to 1.6).
RAYCLUSTER_SPEC_FIELDS = {
    "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations", "enableInTreeAutoscaling",
    "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion", "workerGroupSpecs", "authOptions",
}
HEAD_GROUP_FIELDS = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP_FIELDS = {
    "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "rayStartParams",
    "template", "scaleStrategy", "numOfHosts",
}
AUTOSCALER_FIELDS = {
    "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds", "upscalingMode", "env",
    "envFrom", "volumeMounts", "version",
}
RAYJOB_SPEC_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionPolicy", "deletionStrategy", "entrypoint",
    "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
    "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend",
}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}


def _validate(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        pytest.fail(f"{obj['kind']} {obj.get('metadata', {}).get('name')}: {path}: {exc.message}")


def _as_pod_template(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name, "namespace": "geoseg"},
            "template": template}


CORE_OBJECTS = [("Namespace", "geoseg"), ("PersistentVolumeClaim", "geoseg-archive"),
                ("PersistentVolumeClaim", "geoseg-models"), ("PersistentVolumeClaim", "geoseg-out"),
                ("ConfigMap", "geoseg-workflow"), ("CronJob", "geoseg-nightly")]


@pytest.mark.parametrize("key", CORE_OBJECTS, ids=lambda k: f"{k[0]}/{k[1]}")
def test_core_objects_validate_against_the_kubernetes_schema(manifests: Any, key: tuple[str, str]) -> None:
    _validate(manifests[key])


def test_the_validator_is_strict(manifests: Any) -> None:
    """A misspelt field and a wrong type are rejected, so the checks above are not vacuous."""
    bad = copy.deepcopy(manifests[("CronJob", "geoseg-nightly")])
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = copy.deepcopy(manifests[("PersistentVolumeClaim", "geoseg-out")])
    bad["spec"]["accessModes"] = "ReadWriteMany"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_ray_pod_templates_validate_as_kubernetes_pod_templates(ray_pods: Any, rayjob: Any) -> None:
    for pod in ray_pods:
        _validate(_as_pod_template(f"{pod.where.lower()}-{pod.group}", pod.template))
    _validate(_as_pod_template("rayjob-submitter", rayjob["spec"]["submitterPodTemplate"]))


@pytest.mark.parametrize("where", ["RayCluster", "RayJob"])
def test_autoscaler_options_validate_as_a_container(raycluster: Any, rayjob: Any, where: str) -> None:
    spec = raycluster["spec"] if where == "RayCluster" else rayjob["spec"]["rayClusterSpec"]
    options = spec["autoscalerOptions"]
    assert set(options) <= AUTOSCALER_FIELDS, set(options) - AUTOSCALER_FIELDS
    assert options.get("upscalingMode", "Default") in {"Default", "Aggressive", "Conservative"}
    assert isinstance(options.get("idleTimeoutSeconds", 60), int)
    container = {"name": "autoscaler", "image": "autoscaler"}
    container.update({k: options[k] for k in ("env", "envFrom", "resources", "securityContext", "volumeMounts",
                                              "imagePullPolicy") if k in options})
    _validate(_as_pod_template("autoscaler", {"spec": {"containers": [container]}}))


def _check_cluster_spec(spec: dict[str, Any], where: str) -> None:
    assert set(spec) <= RAYCLUSTER_SPEC_FIELDS, f"{where}: unknown fields {set(spec) - RAYCLUSTER_SPEC_FIELDS}"
    assert spec["enableInTreeAutoscaling"] is True, f"{where}: autoscaling must be on"
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_FIELDS, f"{where}: unknown head fields {set(head) - HEAD_GROUP_FIELDS}"
    assert {"template", "rayStartParams"} <= set(head), f"{where}: headGroupSpec needs template and rayStartParams"
    groups = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups), f"{where}: group names must be unique"
    for g in groups:
        name = f"{where} group {g.get('groupName')}"
        assert set(g) <= WORKER_GROUP_FIELDS, f"{name}: unknown fields {set(g) - WORKER_GROUP_FIELDS}"
        assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(g), name
        counts = [g["minReplicas"], g.get("replicas", g["minReplicas"]), g["maxReplicas"]]
        assert all(isinstance(c, int) and c >= 0 for c in counts), f"{name}: replica counts must be integers >= 0"
        assert counts[0] <= counts[1] <= counts[2], f"{name}: need minReplicas <= replicas <= maxReplicas"
    for params in [head["rayStartParams"], *(g["rayStartParams"] for g in groups)]:
        # map[string]string in the CRD: an unquoted number or boolean is rejected by the API server
        assert all(isinstance(v, str) for v in params.values()), f"{where}: rayStartParams values must be strings"


def test_raycluster_has_the_fields_kuberay_requires(raycluster: Any) -> None:
    assert raycluster["apiVersion"] == "ray.io/v1"
    _check_cluster_spec(raycluster["spec"], "RayCluster")


def test_raycluster_autoscales_a_cpu_and_a_gpu_group(raycluster: Any, ray_pods: Any) -> None:
    spec = raycluster["spec"]
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", "no actors on the head"
    groups = {p.group: p for p in ray_pods if p.where == "RayCluster" and p.group != "head"}
    assert set(groups) == {"cpu", "gpu"}
    for name, pod in groups.items():
        assert pod.group_spec["minReplicas"] == 0 < pod.group_spec["maxReplicas"], f"{name}: scale from zero"
        limits = pod.ray_container["resources"]["limits"]
        requests = pod.ray_container["resources"]["requests"]
        gpus = int(limits.get("nvidia.com/gpu", 0))
        assert (gpus > 0) == (name == "gpu"), f"group {name}: nvidia.com/gpu {gpus}"
        assert int(requests.get("nvidia.com/gpu", 0)) == gpus, f"group {name}: GPU requests must equal limits"
        image = pod.ray_container["image"]
        assert image.endswith("-cuda" if name == "gpu" else "-cpu"), f"group {name}: image {image}"


def test_rayjob_runs_the_workflow_on_a_cluster_of_its_own(rayjob: Any, raycluster: Any) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1"
    spec = rayjob["spec"]
    assert set(spec) <= RAYJOB_SPEC_FIELDS, f"unknown RayJob fields {set(spec) - RAYJOB_SPEC_FIELDS}"
    assert "schedule" not in spec  # RayJob has no schedule: the nightly run is a CronJob
    assert spec["submissionMode"] in SUBMISSION_MODES
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert "clusterSelector" not in spec, "a RayJob either creates its cluster or selects one, not both"
    _check_cluster_spec(spec["rayClusterSpec"], "RayJob")
    # the same cluster as raycluster.yaml: one place to read what runs where
    assert spec["rayClusterSpec"] == raycluster["spec"], "rayjob.yaml's rayClusterSpec differs from raycluster.yaml"
    submitter = spec["submitterPodTemplate"]["spec"]
    assert submitter["restartPolicy"] == "Never"
    assert "command" not in submitter["containers"][0], "KubeRay fills in `ray job submit ... -- <entrypoint>`"


def test_rayversion_matches_the_images(raycluster: Any, dockerfiles: Any) -> None:
    ray_spec = dockerfiles["Dockerfile"].args["RAY_SPEC"]
    assert ray_spec.endswith("==" + raycluster["spec"]["rayVersion"]), (ray_spec, raycluster["spec"]["rayVersion"])


def test_images_are_this_package_version(manifests: Any, ray_pods: Any) -> None:
    from importlib.metadata import version

    expected = version("geoseg-pipeline")
    images = [p.ray_container["image"] for p in ray_pods]
    cron = manifests[("CronJob", "geoseg-nightly")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    rayjob = manifests[("RayJob", "geoseg-backfill")]["spec"]["submitterPodTemplate"]["spec"]
    images += [cron["containers"][0]["image"], rayjob["containers"][0]["image"]]
    repos = {i.rsplit(":", 1)[0] for i in images}
    assert len(repos) == 1, f"one image repository for all pods, got {repos}"
    for image in images:
        tag = image.rsplit(":", 1)[1]
        assert tag in (f"{expected}-cpu", f"{expected}-cuda"), f"{image}: tag should be {expected}-cpu|cuda"


def test_every_object_is_in_the_namespace(manifests: Any, layout: Any) -> None:
    for (kind, name), obj in manifests.items():
        if kind != "Namespace":
            assert obj["metadata"].get("namespace") == layout.namespace, f"{kind} {name}: namespace"


def test_pods_run_as_the_images_non_root_user(manifests: Any, ray_pods: Any, layout: Any) -> None:
    cron = manifests[("CronJob", "geoseg-nightly")]["spec"]["jobTemplate"]["spec"]["template"]
    submitter = manifests[("RayJob", "geoseg-backfill")]["spec"]["submitterPodTemplate"]
    templates = [(f"{p.where} {p.group}", p.template) for p in ray_pods]
    templates += [("CronJob", cron), ("RayJob submitter", submitter)]
    for where, template in templates:
        ctx = template["spec"]["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == layout.image_uid, where
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in template["spec"]["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where


def test_volumes_are_shared_at_the_same_paths(manifests: Any, ray_pods: Any) -> None:
    """Actors read inputs (and inflated .nii.gz copies under OUT) at the driver's paths."""
    claims = {name for kind, name in manifests if kind == "PersistentVolumeClaim"}
    for name in claims:
        assert manifests[("PersistentVolumeClaim", name)]["spec"]["accessModes"] == ["ReadWriteMany"], name
    shared = {"/archive": ("pvc:geoseg-archive", True), "/models": ("pvc:geoseg-models", True),
              "/out": ("pvc:geoseg-out", False)}
    for pod in ray_pods:
        mounts = pod.mounts()
        for path, (source, read_only) in shared.items():
            assert mounts.get(path) == (source, read_only), f"{pod.where} {pod.group}: {path} -> {mounts.get(path)}"
        if pod.group == "head":  # the drivers run on the head
            assert mounts.get("/config") == ("configmap:geoseg-workflow", True), f"{pod.where} head: /config"
        for source, _ in mounts.values():
            if source.startswith("pvc:"):
                assert source[4:] in claims, f"{pod.where} {pod.group}: no claim {source[4:]}"
    assert "workflow.yaml" in manifests[("ConfigMap", "geoseg-workflow")]["data"]


def test_cronjob_runs_nightly_one_at_a_time(cronjob: Any) -> None:
    spec = cronjob["spec"]
    fields = spec["schedule"].split()
    assert len(fields) == 5, f"schedule {spec['schedule']!r}: five cron fields"
    assert fields[2:] == ["*", "*", "*"], "every day"
    assert spec["concurrencyPolicy"] == "Forbid", "two runs must not write one OUT"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"
