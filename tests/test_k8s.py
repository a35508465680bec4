"""deploy/k8s/: the Kubernetes manifests are valid and wired to what maskfarm really is.

No cluster is needed: every built-in object is checked against the Kubernetes API schemas
(kubernetes-validate, strict: unknown fields fail), KEDA's objects against the fields KEDA
documents for its ScaledObject and its redis / redis-sentinel scalers; the commands the
pods run must be real ``maskfarm`` subcommands, and the lists KEDA reads must be the RQ
queues a real server fills.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import redis
import yaml
from rq import Queue

from maskfarm.core.defaults import DEFAULT_NAMESPACE
from maskfarm.core.jobs import PRIORITIES
from maskfarm.jobqueue.rq_adapter import queue_name
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import maskfarm_server, redis_server

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy/k8s"
VARIANTS = ("redis", "sentinel")
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes the manifests are meant for, and the newest the package knows."""

# KEDA's documented schema (keda.sh/docs, v2.13 and later: "ScaledObject specification",
# "Redis Lists", "Redis Lists (supports Redis Sentinel)", "Authentication"). The CRD itself
# is not in kubernetes-validate.
KEDA_API = "keda.sh/v1alpha1"
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef", "metricType"}
REDIS_METADATA = {
    "redis": {
        "address",
        "host",
        "port",
        "addressFromEnv",
        "hostFromEnv",
        "portFromEnv",
        "usernameFromEnv",
        "passwordFromEnv",
        "listName",
        "listLength",
        "activationListLength",
        "enableTLS",
        "unsafeSsl",
        "databaseIndex",
    },
    "redis-sentinel": {
        "addresses",
        "hosts",
        "ports",
        "addressesFromEnv",
        "hostsFromEnv",
        "portsFromEnv",
        "usernameFromEnv",
        "passwordFromEnv",
        "sentinelUsernameFromEnv",
        "sentinelPasswordFromEnv",
        "sentinelMaster",
        "sentinelMasterFromEnv",
        "listName",
        "listLength",
        "activationListLength",
        "enableTLS",
        "unsafeSsl",
        "databaseIndex",
    },
}
REDIS_AUTH_PARAMETERS = {
    "redis": {"address", "host", "port", "username", "password", "tls", "ca", "cert", "key"},
    "redis-sentinel": {
        "addresses",
        "hosts",
        "ports",
        "username",
        "password",
        "sentinelUsername",
        "sentinelPassword",
        "sentinelMaster",
        "tls",
        "ca",
        "cert",
        "key",
    },
}
TRIGGER_AUTHENTICATION_SPEC = {
    "podIdentity",
    "secretTargetRef",
    "env",
    "hashiCorpVault",
    "azureKeyVault",
    "awsSecretManager",
    "gcpSecretManager",
    "configMapTargetRef",
    "boundServiceAccountToken",
}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization_files(directory: Path) -> list[Path]:
    """The manifest files ``kubectl apply -k directory`` applies, bases followed."""
    files = []
    for entry in yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]:
        path = (directory / entry).resolve()
        files += kustomization_files(path) if path.is_dir() else [path]
    return files


def objects(variant: str) -> list[dict]:
    return [doc for path in kustomization_files(K8S / variant) for doc in documents(path)]


def find(variant: str, kind: str, name: str) -> dict:
    (found,) = [o for o in objects(variant) if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def secret_value(variant: str, key: str) -> str:
    return find(variant, "Secret", "maskfarm-redis")["stringData"][key]


def is_keda(obj: dict) -> bool:
    return obj["apiVersion"] == KEDA_API


def test_every_manifest_file_is_applied_by_a_variant():
    applied = {path for variant in VARIANTS for path in kustomization_files(K8S / variant)}
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk == applied


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_built_in_objects_validate_against_the_kubernetes_schemas(variant, version):
    checked = [o for o in objects(variant) if not is_keda(o)]
    assert {o["kind"] for o in checked} >= {"Deployment", "Service", "Secret"}
    for obj in checked:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_schema_check_catches_a_misspelt_field():
    """The validation above is strict: a field Kubernetes does not know fails it."""
    worker = find("redis", "Deployment", "maskfarm-worker")
    container(worker)["livenesProbe"] = container(worker).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSIONS[-1], strict=True)


def maskfarm_commands(variant: str) -> dict[str, str]:
    """Each ``maskfarm X`` a pod runs (command, args, probes) -> where."""
    used = {}
    for obj in objects(variant):
        for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            argvs = {"command": c.get("command", []) + c.get("args", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                argvs[probe] = c.get(probe, {}).get("exec", {}).get("command", [])
            for where, argv in argvs.items():
                for word, following in zip(argv, argv[1:]):
                    if Path(word).name == "maskfarm":
                        used.setdefault(following, f"{obj['metadata']['name']} {where}")
    return used


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_maskfarm_command_used_is_a_real_subcommand(variant):
    from maskfarm.cli import build_parser

    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    used = maskfarm_commands(variant)
    assert {"server", "worker", "health", "worker-health"} <= set(used)
    missing = {command: where for command, where in used.items() if command not in subparsers.choices}
    assert not missing, f"`maskfarm` has no such subcommand: {missing}; registered: {sorted(subparsers.choices)}"


def test_the_server_is_probed_with_maskfarm_health_and_served_on_its_port():
    server = container(find("redis", "Deployment", "maskfarm-server"))
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["exec"]["command"][:2] == ["maskfarm", "health"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    port = int(env["MASKFARM_LISTEN"].rpartition(":")[2])
    assert [p["containerPort"] for p in server["ports"]] == [port]
    service = find("redis", "Service", "maskfarm")
    assert (
        service["spec"]["selector"] == find("redis", "Deployment", "maskfarm-server")["spec"]["selector"]["matchLabels"]
    )


def test_workers_take_one_gpu_and_report_their_liveness_through_the_health_file():
    worker = container(find("redis", "Deployment", "maskfarm-worker"))
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in worker["env"]}
    dockerfile = (ROOT / "docker/worker.Dockerfile").read_text()
    assert f"MASKFARM_HEALTH_FILE={env['MASKFARM_HEALTH_FILE']}" in dockerfile
    for probe in ("startupProbe", "livenessProbe"):
        assert worker[probe]["exec"]["command"][:2] == ["maskfarm", "worker-health"]
    startup = worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "a first start may download the weights"


def test_a_stopped_worker_gets_longer_than_a_job_to_finish():
    from maskfarm.cli import build_parser

    pod = find("redis", "Deployment", "maskfarm-worker")["spec"]["template"]["spec"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-worker"]
    compose_grace = int(compose["stop_grace_period"].removesuffix("s"))
    assert pod["terminationGracePeriodSeconds"] >= max(compose_grace, 300)
    lease = build_parser().parse_args(["worker"]).job_lease_s  # the default (or this shell's MASKFARM_JOB_LEASE_S)
    assert pod["terminationGracePeriodSeconds"] > lease


@pytest.mark.parametrize("name, dockerfile", [("maskfarm-server", "server"), ("maskfarm-worker", "worker")])
def test_pods_run_as_the_images_non_root_user(name, dockerfile):
    uid = int(re.search(r"useradd .*--uid (\d+)", (ROOT / f"docker/{dockerfile}.Dockerfile").read_text())[1])
    pod = find("redis", "Deployment", name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid != 0
    assert container(find("redis", "Deployment", name))["securityContext"]["allowPrivilegeEscalation"] is False


def test_server_and_workers_read_the_redis_url_from_the_secret():
    for variant in VARIANTS:
        for name in ("maskfarm-server", "maskfarm-worker"):
            env = {e["name"]: e for e in container(find(variant, "Deployment", name))["env"]}
            ref = env["MASKFARM_REDIS_URL"]["valueFrom"]["secretKeyRef"]
            assert secret_value(variant, ref["key"]) and ref["name"] == "maskfarm-redis"


def test_keda_reads_the_redis_the_workers_use():
    url = urlparse(secret_value("redis", "MASKFARM_REDIS_URL"))
    assert secret_value("redis", "address") == f"{url.hostname}:{url.port}"
    service = find("redis", "Service", url.hostname)
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    for trigger in find("redis", "ScaledObject", "maskfarm-worker")["spec"]["triggers"]:
        assert trigger["metadata"]["databaseIndex"] == url.path.strip("/")


@pytest.mark.parametrize("variant", VARIANTS)
def test_keda_objects_use_only_documented_fields(variant):
    keda = [o for o in objects(variant) if is_keda(o)]
    assert {o["kind"] for o in keda} == {"ScaledObject", "TriggerAuthentication"}
    scaled = find(variant, "ScaledObject", "maskfarm-worker")
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC
    assert set(spec["scaleTargetRef"]) <= SCALE_TARGET_REF
    assert spec["scaleTargetRef"]["name"] == find(variant, "Deployment", "maskfarm-worker")["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    authentication = find(variant, "TriggerAuthentication", "maskfarm-redis")
    assert set(authentication["spec"]) <= TRIGGER_AUTHENTICATION_SPEC
    secret = find(variant, "Secret", "maskfarm-redis")
    for trigger in spec["triggers"]:
        assert set(trigger) <= TRIGGER
        kind = trigger["type"]
        assert kind == {"redis": "redis", "sentinel": "redis-sentinel"}[variant]
        assert set(trigger["metadata"]) <= REDIS_METADATA[kind]
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), "KEDA metadata values are strings"
        assert int(trigger["metadata"]["listLength"]) >= 1
        assert trigger["authenticationRef"]["name"] == authentication["metadata"]["name"]
        for ref in authentication["spec"]["secretTargetRef"]:
            assert ref["parameter"] in REDIS_AUTH_PARAMETERS[kind]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_keda_watches_every_rq_queue_of_the_default_namespace(variant):
    lists = [t["metadata"]["listName"] for t in find(variant, "ScaledObject", "maskfarm-worker")["spec"]["triggers"]]
    connection = redis.Redis()  # RQ names a queue's key without talking to Redis
    assert lists == [Queue(queue_name(p, DEFAULT_NAMESPACE), connection=connection).key for p in PRIORITIES]


def test_the_lists_keda_reads_hold_the_jobs_a_real_server_queues():
    lists = {t["metadata"]["listName"] for t in find("redis", "ScaledObject", "maskfarm-worker")["spec"]["triggers"]}
    png = encoded_image("PNG")
    with redis_server() as url, maskfarm_server(url, DEFAULT_NAMESPACE) as server:
        for priority in (pb.PRIORITY_HIGH, pb.PRIORITY_NORMAL, pb.PRIORITY_NORMAL, pb.PRIORITY_LOW):
            server.stub().SubmitJob(
                pb.SubmitJobRequest(frames=[pb.Frame(data=png, name="f.png")], prompts=["car"], priority=priority),
                timeout=10,
            )
        with redis.Redis.from_url(url) as connection:
            lengths = {key: connection.llen(key) for key in lists}
            queued = {key.decode() for key in connection.scan_iter("rq:queue:*") if connection.type(key) == b"list"}
    assert lengths == {"rq:queue:maskfarm-high": 1, "rq:queue:maskfarm-normal": 2, "rq:queue:maskfarm-low": 1}
    assert queued == lists


def test_keda_reads_the_sentinels_the_workers_use():
    from maskfarm.jobqueue.redis_clients import SentinelUrl

    url = SentinelUrl.parse(secret_value("sentinel", "MASKFARM_REDIS_URL"))
    assert secret_value("sentinel", "addresses") == ",".join(f"{host}:{port}" for host, port in url.sentinels)
    assert secret_value("sentinel", "sentinelMaster") == url.service_name
    for trigger in find("sentinel", "ScaledObject", "maskfarm-worker")["spec"]["triggers"]:
        assert trigger["metadata"]["databaseIndex"] == str(url.db)
