"""The server process: health, reflection, configuration, outages, shutdown, and no torch."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from maskfarm.server.settings import ServerSettings
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import ServerProcess, free_port, maskfarm_server


def test_health_reports_serving(server: ServerProcess) -> None:
    assert server.health() == health_pb2.HealthCheckResponse.SERVING


def test_reflection_describes_the_service(server: ServerProcess) -> None:
    with server.channel() as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "maskfarm.v1.Segmentation" in database.get_services()
        described = database.FindFileContainingSymbol("maskfarm.v1.Segmentation")
        assert described.name == "maskfarm/v1/segmentation.proto"
        assert [m.name for m in described.service[0].method] == [
            "SubmitJob",
            "GetJob",
            "WatchJob",
            "CancelJob",
            "ListJobs",
            "ListWorkers",
        ]


def test_the_server_never_imports_torch() -> None:
    code = "import sys, maskfarm.server.app, maskfarm.server.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_settings_come_from_flags_then_environment_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKFARM_RESULT_TTL", "600")
    monkeypatch.setenv("MASKFARM_LISTEN", "0.0.0.0:6000")
    parser = argparse.ArgumentParser()
    ServerSettings.add_arguments(parser)
    settings = ServerSettings.from_args(parser.parse_args(["--listen", "127.0.0.1:7000"]))
    assert settings.listen == "127.0.0.1:7000"
    assert settings.result_ttl == 600
    assert settings.max_message_mib == 64 and settings.max_message_bytes == 64 * 1024 * 1024
    assert settings.inputs_ttl > settings.queue_ttl + settings.job_timeout
    with pytest.raises(ValueError, match="queue_ttl must be at least 1"):
        ServerSettings(queue_ttl=0)


def test_without_redis_calls_are_unavailable_and_health_says_so() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with maskfarm_server(nowhere, "mfoutage", serving=False) as outage:
        assert outage.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = outage.stub()
        for call in (
            lambda: stub.GetJob(pb.GetJobRequest(job_id="0" * 32), timeout=10),
            lambda: stub.SubmitJob(
                pb.SubmitJobRequest(frames=[pb.Frame(data=encoded_image())], prompts=["car"]), timeout=10
            ),
            lambda: next(stub.WatchJob(pb.WatchJobRequest(job_id="0" * 32), timeout=10)),
        ):
            with pytest.raises(grpc.RpcError) as unavailable:
                call()
            assert unavailable.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "the job store is unavailable" in unavailable.value.details()
        assert outage.process.poll() is None


def test_sigterm_stops_the_server_cleanly(redis_url: str) -> None:
    with maskfarm_server(redis_url, "mfstop") as stopping:
        stopping.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert stopping.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10


def test_a_second_server_on_a_port_in_use_refuses_to_start(server: ServerProcess) -> None:
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "server",
        "--listen",
        server.target,
        "--redis-url",
        server.redis_url,
        "--namespace",
        "mfsecond",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second server started on {server.target}, sharing the port with the first")
    assert result.returncode == 1
    assert f"cannot listen on {server.target}: the address is in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
