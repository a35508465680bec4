"""docker-compose.yml and docker/: the structure `docker compose up` relies on.

Static checks only (no Docker needed): persistence, ports, health checks, GPU reservations,
scalability, and that every `maskfarm X` the containers run is a real subcommand.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = {"server": ROOT / "docker/server.Dockerfile", "worker": ROOT / "docker/worker.Dockerfile"}


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def named_volumes() -> set[str]:
    return set(yaml.safe_load(COMPOSE_FILE.read_text()).get("volumes") or {})


def as_argv(command) -> list[str]:
    """A compose command / healthcheck test / Dockerfile CMD as an argument list."""
    if isinstance(command, str):
        return shlex.split(command)
    argv = [str(part) for part in command]
    if argv[:1] == ["CMD-SHELL"]:
        return shlex.split(" ".join(argv[1:]))
    return argv[1:] if argv[:1] in (["CMD"], ["NONE"]) else argv


def volume_mounts(service: dict) -> dict[str, str]:
    """Mount target -> source, for the short `source:target[:mode]` syntax and the long one."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def seconds(duration: str | int) -> float:
    """Compose durations: "120s", "2m", "1m30s", "1h"."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        raise ValueError(f"not a compose duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def gpu_reservations(service: dict) -> list[dict]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]


def test_the_three_services_exist(services):
    assert {"redis", "server", "worker"} <= set(services)


def test_redis_persists_with_aof_and_never_evicts(services):
    redis = services["redis"]
    argv = as_argv(redis["command"])
    assert argv[0] == "redis-server"
    options = dict(zip(argv[1::2], argv[2::2]))
    assert options.get("--appendonly") == "yes"
    assert options.get("--maxmemory-policy") == "noeviction"
    assert volume_mounts(redis).get("/data") in named_volumes()
    assert as_argv(redis["healthcheck"]["test"]) == ["redis-cli", "ping"]


def interpolated(text: str, environment: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}`` substitution."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: environment.get(m[1]) or m[2], text)


def test_server_publishes_grpc_port_on_loopback_unless_asked(services):
    (port,) = [str(port) for port in services["server"].get("ports", [])]
    assert interpolated(port, {}) == "127.0.0.1:50051:50051", "auth is off by default: loopback only"
    assert interpolated(port, {"MASKFARM_PUBLISH_ADDRESS": "0.0.0.0"}) == "0.0.0.0:50051:50051"


def test_server_checks_its_health(services):
    server = services["server"]
    assert server["environment"]["MASKFARM_LISTEN"] == "0.0.0.0:50051"
    assert as_argv(server["healthcheck"]["test"]) == ["maskfarm", "health"]
    assert server["depends_on"]["redis"]["condition"] == "service_healthy"


def test_server_image_installs_server_extra_without_torch():
    text = DOCKERFILES["server"].read_text()
    installs = re.findall(r"pip install[^\n]*", text)
    assert installs, "server.Dockerfile installs nothing with pip"
    for line in installs:
        assert "[server]" in line
        assert not re.search(r"\[[^\]]*\b(worker|all|dev)\b", line), line
        assert "torch" not in line, line
    assert "torch" not in text.split("FROM", 1)[1].splitlines()[0], "server base image ships torch"


def test_build_context_leaves_out_the_venv_but_keeps_the_package():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git"} <= ignored
    assert not ignored & {"pyproject.toml", "README.md", "client", "server", "worker", "protos"}


def test_worker_reserves_one_nvidia_gpu(services):
    assert gpu_reservations(services["worker"]), "worker has no nvidia gpu device reservation"


def test_worker_scales(services):
    worker = services["worker"]
    assert "container_name" not in worker, "a container_name breaks --scale worker=N"
    assert "ports" not in worker, "published ports break --scale worker=N"


def test_images_run_as_a_user_other_than_root():
    for name, path in DOCKERFILES.items():
        users = re.findall(r"^USER\s+(\S+)", path.read_text(), re.M)
        assert users and users[-1] not in ("root", "0"), f"{name} image runs as root"


def test_worker_checks_its_liveness(services):
    worker = services["worker"]
    assert as_argv(worker["healthcheck"]["test"]) == ["maskfarm", "worker-health"]
    assert worker["environment"]["MASKFARM_HEALTH_FILE"], "worker-health reads the file the worker touches"
    assert seconds(worker["healthcheck"]["start_period"]) >= 300, "the first start downloads the weights"


def test_images_install_the_tested_versions():
    for name, path in DOCKERFILES.items():
        installs = re.findall(r"pip install[^\n]*", path.read_text())
        assert installs and all("-c /src/constraints.txt" in line for line in installs), name


def test_worker_keeps_model_downloads_in_a_volume(services):
    worker = services["worker"]
    cache = worker["environment"]["HF_HOME"]
    assert volume_mounts(worker).get(cache) in named_volumes()


def test_worker_gets_time_to_finish_its_job_on_stop(services):
    worker = services["worker"]
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert seconds(worker["stop_grace_period"]) >= 30


def test_every_service_restarts(services):
    for name, service in services.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name


def test_redis_urls_name_the_redis_service(services):
    for name, service in services.items():
        url = (service.get("environment") or {}).get("MASKFARM_REDIS_URL")
        if url:
            assert urlparse(url).hostname in services, f"{name}: {url}"


def test_documented_one_worker_per_gpu_block_is_valid(services):
    """Uncomment the per-GPU example in docker-compose.yml: each service gets its own GPU."""
    lines = COMPOSE_FILE.read_text().splitlines()
    start = lines.index("  # worker-gpu0:")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append("  " + line[len("  # ") :])
    text = "\n".join(lines[:start] + block + lines[start + len(block) :])
    with_gpus = yaml.safe_load(text)["services"]
    for index in (0, 1):
        service = with_gpus[f"worker-gpu{index}"]
        (device,) = gpu_reservations(service)
        assert device["device_ids"] == [str(index)] and "count" not in device
        for key in ("command", "environment", "volumes", "stop_grace_period", "restart"):
            assert service[key] == services["worker"][key], key


def maskfarm_commands(services) -> dict[str, str]:
    """Each `maskfarm X` the deployment runs -> where it is used."""
    argvs = []
    for name, service in services.items():
        for key in ("command", "entrypoint"):
            if key in service:
                argvs.append((f"compose {name}.{key}", as_argv(service[key])))
        if "healthcheck" in service:
            argvs.append((f"compose {name}.healthcheck", as_argv(service["healthcheck"]["test"])))
    for name, path in DOCKERFILES.items():
        for match in re.finditer(r"^(?:HEALTHCHECK .*?)?(CMD|ENTRYPOINT)\s+(\[.+)$", path.read_text(), re.M):
            argvs.append((f"{path.name} {match[1]}", as_argv(yaml.safe_load(match[2]))))
    used = {}
    for where, argv in argvs:
        for word, following in zip(argv, argv[1:]):
            if Path(word).name == "maskfarm":
                used.setdefault(following, where)
    return used


def test_every_maskfarm_command_used_is_a_real_subcommand(services):
    from maskfarm.cli import build_parser

    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    used = maskfarm_commands(services)
    assert {"server", "worker", "health", "worker-health"} <= set(used)
    missing = {command: where for command, where in used.items() if command not in subparsers.choices}
    assert not missing, (
        "`maskfarm` has no such subcommand: "
        + ", ".join(f"{command!r} (used in {where})" for command, where in sorted(missing.items()))
        + f"; registered: {sorted(subparsers.choices)}"
    )
