"""``deploy/kubernetes/``, checked offline (no cluster can be installed here).

- Kubernetes' own kinds against Kubernetes' schemas (``kubernetes-validate``, strict: an
  unknown field is an error, as ``kubectl apply --validate=strict`` would say), for the oldest
  and a recent Kubernetes the files claim; the ScaledJob's ``jobTargetRef`` as a ``batch/v1``
  Job's spec too.
- KEDA's kinds against KEDA's own CRD schemas (v2.20.2, vendored under ``schemas/``), strict in
  the same way.
- What podworker needs of them: the trigger reads the stream and group the worker reads, with
  KEDA's redis-streams keys only, and scales on the lag (the mode that scales from zero); the
  grace period outlasts SHUTDOWN_GRACE; the lease outlasts three heartbeats; every setting the
  pod gets is one of podworker's; every secret named exists; Redis keeps an AOF synced on
  every write and never evicts.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from streamqueue import layout

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KEDA_SCHEMAS = DEPLOY / "schemas" / "keda-v2.20.2"
KUBERNETES_VERSIONS = ("1.30", "1.33")
KEDA_KINDS = {"ScaledJob": "keda.sh_scaledjobs.yaml",
              "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}
# KEDA v2.20.2's redis-streams trigger (pkg/scalers/redis_streams_scaler.go, redis_scaler.go):
# the metadata it reads; a key it does not know would be ignored without a word.
REDIS_STREAMS_KEYS = {
    "address", "addresses", "host", "hosts", "port", "ports", "username", "password",
    "usernameFromEnv", "passwordFromEnv", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "stream", "consumerGroup", "pendingEntriesCount", "streamLength", "lagCount",
    "activationLagCount", "databaseIndex", "enableTLS", "unsafeSsl",
}
KUBERNETES_ENV: frozenset[str] = frozenset()  # what the pod gets that podworker does not read


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def of_kind(kind: str) -> dict[str, Any]:
    (doc,) = [doc for _name, doc in manifests() if doc["kind"] == kind]
    return doc


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    text = (KEDA_SCHEMAS / KEDA_KINDS[kind]).read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = strict(version["schema"]["openAPIV3Schema"])
    return schema


def strict(schema: Any) -> Any:
    """An OpenAPI schema that refuses unknown fields (as strict field validation does): every
    object with properties, and no say of its own, gets ``additionalProperties: false``."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def keda_errors(doc: dict[str, Any]) -> list[str]:
    body = {k: v for k, v in doc.items() if k != "metadata"}  # metadata: Kubernetes' own
    validator = jsonschema.Draft7Validator(crd_schema(doc["kind"]))
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]


def job_of(scaled_job: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "podworker"},
            "spec": scaled_job["spec"]["jobTargetRef"]}


def worker_container(scaled_job: dict[str, Any]) -> dict[str, Any]:
    (container,) = scaled_job["spec"]["jobTargetRef"]["template"]["spec"]["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom"))
            for item in container.get("env", [])}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_object_is_valid_for_kubernetes_strictly(version: str) -> None:
    checked = []
    for name, doc in manifests():
        if doc["kind"] == "TriggerAuthentication":  # KEDA's alone: checked below
            continue
        if doc["kind"] == "ScaledJob":
            doc = job_of(doc)
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append((name, doc["kind"]))
    kinds = {kind for _name, kind in checked}
    assert {"Namespace", "Secret", "Service", "StatefulSet", "Job"} <= kinds


def test_the_keda_objects_are_valid_for_kedas_own_schemas() -> None:
    keda = [doc for _name, doc in manifests() if doc["kind"] in KEDA_KINDS]
    assert sorted(doc["kind"] for doc in keda) == ["ScaledJob", "TriggerAuthentication"]
    for doc in keda:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        assert keda_errors(doc) == [], doc["kind"]


@pytest.mark.parametrize("damage", [
    lambda d: d["spec"].update(maxReplicaCount="four"),
    lambda d: d["spec"].update(maxReplicaCounts=4),
    lambda d: d["spec"]["scalingStrategy"].update(strategy="fastest"),
    lambda d: d["spec"]["triggers"][0].pop("type"),
    lambda d: d["spec"]["triggers"][0]["metadata"].update(lagCount=1),
])
def test_the_keda_check_refuses_a_damaged_scaled_job(damage: Any) -> None:
    broken = copy.deepcopy(of_kind("ScaledJob"))
    damage(broken)
    assert keda_errors(broken) != []


def test_the_trigger_scales_on_the_lag_of_the_stream_and_group_the_worker_reads() -> None:
    scaled_job = of_kind("ScaledJob")
    (trigger,) = scaled_job["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    metadata = trigger["metadata"]
    assert set(metadata) <= REDIS_STREAMS_KEYS
    env = env_of(worker_container(scaled_job))
    keys = layout.Layout(env["JOB_QUEUE_NAME"])
    assert (metadata["stream"], metadata["consumerGroup"]) == (keys.jobs, keys.group)
    assert int(metadata["lagCount"]) >= 1  # the lag: the only mode that scales from zero
    assert scaled_job["spec"]["minReplicaCount"] == 0
    assert scaled_job["spec"]["scalingStrategy"]["strategy"] == "accurate"
    host = env["JOB_QUEUE"].split("//")[1].split("/")[0]
    assert metadata["address"] == host  # the Redis the workers use
    auth = of_kind("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_a_worker_pod_stops_well_and_its_lease_outlasts_its_heartbeats() -> None:
    scaled_job = of_kind("ScaledJob")
    pod = scaled_job["spec"]["jobTargetRef"]["template"]["spec"]
    env = env_of(worker_container(scaled_job))
    defaults = Settings.model_fields
    grace_ms = int(env.get("SHUTDOWN_GRACE", defaults["SHUTDOWN_GRACE"].default))
    assert pod["terminationGracePeriodSeconds"] * 1000 > grace_ms
    assert pod["restartPolicy"] == "Never"
    lease = int(env.get("JOB_LEASE", defaults["JOB_LEASE"].default))
    ping = int(env.get("PING_INTERVAL", defaults["PING_INTERVAL"].default))
    assert lease >= 3 * ping
    assert int(env["TERMINATE_IDLE_TIME"]) > 0  # idle pods exit 0: their Jobs complete
    assert worker_container(scaled_job)["resources"]["limits"]["nvidia.com/gpu"] == 1
    rules = scaled_job["spec"]["jobTargetRef"]["podFailurePolicy"]["rules"]
    actions = {code: rule["action"] for rule in rules for code in rule["onExitCodes"]["values"]}
    assert actions == {2: "FailJob", 4: "FailJob", 7: "Ignore"}  # a renewal never fails the Job


def test_the_pod_gets_only_podworkers_settings_and_every_secret_it_names_exists() -> None:
    scaled_job = of_kind("ScaledJob")
    container = worker_container(scaled_job)
    env = env_of(container)
    assert set(env) <= set(Settings.model_fields) | KUBERNETES_ENV
    secret = of_kind("Secret")
    secret_keys = set(secret["stringData"])
    assert secret_keys <= set(Settings.model_fields)  # envFrom: every key is a setting
    assert "REDIS_PASSWORD" in secret_keys
    names = {ref["secretRef"]["name"] for ref in container["envFrom"]}
    assert names == {secret["metadata"]["name"]}
    for ref in of_kind("TriggerAuthentication")["spec"]["secretTargetRef"]:
        assert (ref["name"], ref["key"] in secret_keys) == (secret["metadata"]["name"], True)
    namespaces = {doc["metadata"].get("namespace") for _n, doc in manifests()
                  if doc["kind"] != "Namespace"}
    assert namespaces == {of_kind("Namespace")["metadata"]["name"]}


def test_redis_keeps_every_write_synced_and_never_evicts_a_job() -> None:
    (container,) = of_kind("StatefulSet")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    # a limit below the container's, so that a full Redis refuses writes rather than dies
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and options["--maxmemory"].endswith("mb")
    assert int(options["--maxmemory"][:-2]) < int(limit[:-2]) * 1024
    image_tag = container["image"].split(":")[1]
    assert int(image_tag.split(".")[0]) >= 7  # the lag KEDA scales on needs Redis 7


def test_kustomize_applies_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
