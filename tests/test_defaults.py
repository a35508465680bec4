"""maskfarm's defaults are defined once (``maskfarm.core.defaults``): every command, settings
class and the client take theirs from there."""

from __future__ import annotations

import os

import pytest

from maskfarm.core import defaults


@pytest.fixture(autouse=True)
def no_setting_variables(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("MASKFARM_"):
            monkeypatch.delenv(name)


def parsed(*argv: str):
    from maskfarm.cli import build_parser

    return build_parser().parse_args(list(argv))


def test_every_command_defaults_to_the_core_defaults() -> None:
    server = parsed("server")
    assert (server.listen, server.redis_url, server.namespace) == (
        defaults.DEFAULT_LISTEN,
        defaults.DEFAULT_REDIS_URL,
        defaults.DEFAULT_NAMESPACE,
    )
    worker = parsed("worker")
    assert (worker.redis_url, worker.namespace, worker.model) == (
        defaults.DEFAULT_REDIS_URL,
        defaults.DEFAULT_NAMESPACE,
        defaults.DEFAULT_MODEL,
    )
    up = parsed("up")
    assert (up.listen, up.namespace, up.model) == (
        defaults.DEFAULT_LISTEN,
        defaults.DEFAULT_NAMESPACE,
        defaults.DEFAULT_MODEL,
    )
    assert parsed("segment", "shot.png", "-p", "car").model == defaults.DEFAULT_MODEL
    assert parsed("model", "check").model == defaults.DEFAULT_MODEL
    assert parsed("status", "job").target == defaults.DEFAULT_TARGET


def test_settings_and_the_client_default_to_the_core_defaults() -> None:
    from maskfarm.client import DEFAULT_TARGET, Client
    from maskfarm.core.jobs import Priority
    from maskfarm.jobqueue.rq_adapter import queue_name
    from maskfarm.local_cluster import DEFAULT_REDIS_URL, ClusterSettings
    from maskfarm.server.settings import ServerSettings
    from maskfarm.worker.settings import WorkerSettings
    from maskfarm.worker.weights import DEFAULT_MODEL

    server, worker, cluster = ServerSettings(), WorkerSettings(), ClusterSettings()
    assert (server.listen, server.redis_url, server.namespace) == (
        defaults.DEFAULT_LISTEN,
        defaults.DEFAULT_REDIS_URL,
        defaults.DEFAULT_NAMESPACE,
    )
    assert (worker.redis_url, worker.namespace, worker.model) == (
        defaults.DEFAULT_REDIS_URL,
        defaults.DEFAULT_NAMESPACE,
        defaults.DEFAULT_MODEL,
    )
    assert (cluster.listen, cluster.namespace, DEFAULT_REDIS_URL) == (
        defaults.DEFAULT_LISTEN,
        defaults.DEFAULT_NAMESPACE,
        defaults.DEFAULT_REDIS_URL,
    )
    assert DEFAULT_MODEL == defaults.DEFAULT_MODEL
    assert queue_name(Priority.HIGH) == f"{defaults.DEFAULT_NAMESPACE}-high"
    with Client() as client:
        assert client.target == DEFAULT_TARGET == defaults.DEFAULT_TARGET
