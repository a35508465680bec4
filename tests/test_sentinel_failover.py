"""A Redis that fails over (redis+sentinel:// URLs), through real processes.

A primary, a replica and three Sentinels run on loopback (tests/sentinels.py); a server
and two workers reach them by a ``redis+sentinel://`` URL. The primary is SIGKILLed while
jobs are being submitted and run: Sentinel promotes the replica, server and workers
follow it by themselves, and every job whose SubmitJob was answered OK (acknowledged:
with a Sentinel URL that means a replica held it, Redis ``WAIT``) finishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2

from maskfarm.jobqueue.redis_clients import SentinelUrl
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.sentinels import sentinel_group
from tests.services import ServerProcess, free_port, maskfarm_server, maskfarm_worker, wait_for

FAST_RECOVERY = ("--heartbeat-s", "0.5", "--job-lease-s", "3", "--maintenance-s", "1", "--max-batch", "1")
JOBS = 24
FRAMES_PER_JOB = 4
KILL_AFTER = 8
PATIENCE_S = 300.0
"""Bounds every wait for a condition; never a measure of speed."""

T = TypeVar("T")


def until_available(call: Callable[[], T]) -> T:
    """``call()``, tried again while it answers UNAVAILABLE (the store failing over)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def submit_request(index: int) -> pb.SubmitJobRequest:
    data = encoded_image("PNG", (32, 24), noise=True)
    return pb.SubmitJobRequest(
        frames=[pb.Frame(name=f"s{index:02d}.{i:04d}.png", data=data) for i in range(FRAMES_PER_JOB)],
        prompts=["car"],
        request_id=str(uuid.uuid4()),
    )


class Submitter(threading.Thread):
    """Submits ``JOBS`` jobs one after another, each repeated with its request id until
    it is acknowledged (answered OK); after the first ``KILL_AFTER`` it waits for ``resume``."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.resume = threading.Event()
        self.acknowledged: list[str] = []
        self.refusals: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            stub = self.server.stub()
            for index in range(JOBS):
                if index == KILL_AFTER:
                    self.resume.wait(PATIENCE_S)
                request = submit_request(index)
                self.acknowledged.append(until_available(lambda: self._submit(stub, request)))
        except BaseException as error:  # noqa: BLE001 (reported by the test)
            self.error = error

    def _submit(self, stub, request: pb.SubmitJobRequest) -> str:
        try:
            return stub.SubmitJob(request, timeout=60).id
        except grpc.RpcError as error:
            self.refusals.append(f"{error.code().name}: {error.details()}")
            raise


def test_url_syntax():
    parsed = SentinelUrl.parse("redis+sentinel://me:s%40cret@a:26379,[::1]:26380/mymaster/3?sentinel_password=x")
    assert parsed.sentinels == (("a", 26379), ("::1", 26380))
    assert (parsed.service_name, parsed.db, parsed.username, parsed.password) == ("mymaster", 3, "me", "s@cret")
    assert parsed.sentinel_password == "x"
    assert SentinelUrl.parse("redis+sentinel://h:1/m").db == 0
    for bad, says in [
        ("redis+sentinel://h:1/", "service_name"),
        ("redis+sentinel://h/m", "host:port"),
        ("redis+sentinel://h:1/m/x", "number"),
        ("redis+sentinel://h:1/m?ssl=1", "unknown option"),
    ]:
        with pytest.raises(ValueError, match=says):
            SentinelUrl.parse(bad)


def test_without_a_replica_a_job_is_not_acknowledged_unless_asked(redis_url):
    """WAIT is what acknowledges: a primary with no replica cannot confirm a job, so
    SubmitJob answers UNAVAILABLE saying so (the job stays on the primary); off, it
    answers OK."""
    with maskfarm_server(redis_url, "mfwait", "--replicated-submit", "on") as server:
        request = submit_request(0)
        with pytest.raises(grpc.RpcError) as refused:
            server.stub().SubmitJob(request, timeout=30)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "0 of 1 replica(s) confirmed it" in refused.value.details()
        with pytest.raises(grpc.RpcError) as again:  # a repeat of the request is not acknowledged either
            server.stub().SubmitJob(request, timeout=30)
        assert again.value.code() is grpc.StatusCode.UNAVAILABLE
    with maskfarm_server(redis_url, "mfwait", "--replicated-submit", "off") as server:
        assert server.stub().SubmitJob(submit_request(1), timeout=30).state == pb.JOB_STATE_QUEUED


def test_a_failover_loses_no_acknowledged_job(tiny_model_dir):
    with (
        sentinel_group() as group,
        maskfarm_server(group.url, "mfsentinel") as server,
        maskfarm_worker(server, tiny_model_dir, "sentinel-w1", *FAST_RECOVERY) as worker1,
        maskfarm_worker(server, tiny_model_dir, "sentinel-w2", *FAST_RECOVERY) as worker2,
    ):
        stub = server.stub()
        wait_for(
            lambda: len(stub.ListWorkers(pb.ListWorkersRequest(), timeout=30).workers) == 2,
            "both workers to serve",
            timeout=PATIENCE_S,
        )
        submitter = Submitter(server)
        submitter.start()
        wait_for(
            lambda: len(submitter.acknowledged) >= KILL_AFTER or submitter.error, "the first jobs", timeout=PATIENCE_S
        )
        wait_for(
            lambda: any(
                stub.GetJob(pb.GetJobRequest(job_id=j), timeout=30).job.state == pb.JOB_STATE_SUCCEEDED
                for j in submitter.acknowledged
            ),
            "a job run before the failover",
            timeout=PATIENCE_S,
        )
        acknowledged_before = len(submitter.acknowledged)

        submitter.resume.set()  # the rest are submitted as the primary dies and after
        group.kill(group.first_primary)
        wait_for(
            lambda: group.primary_port() == group.first_replica, "Sentinel to promote the replica", timeout=PATIENCE_S
        )
        # The old primary comes back empty, as a replica of the new one: a replica again
        # for SubmitJob's WAIT (until then SubmitJob answers UNAVAILABLE, and is repeated).
        group.start_redis(group.first_primary, replica_of=group.first_replica)

        submitter.join(timeout=PATIENCE_S)
        assert not submitter.is_alive() and submitter.error is None, submitter.error
        assert (acknowledged_before, len(submitter.acknowledged)) == (KILL_AFTER, JOBS)

        def finished() -> bool:
            states = [
                until_available(lambda j=j: stub.GetJob(pb.GetJobRequest(job_id=j), timeout=30)).job.state
                for j in submitter.acknowledged
            ]
            assert pb.JOB_STATE_FAILED not in states and pb.JOB_STATE_CANCELLED not in states
            return all(state == pb.JOB_STATE_SUCCEEDED for state in states)

        try:
            wait_for(finished, "every acknowledged job to succeed", timeout=PATIENCE_S)
        except AssertionError as error:
            states = {
                j: pb.JobState.Name(stub.GetJob(pb.GetJobRequest(job_id=j), timeout=30).job.state)
                for j in submitter.acknowledged
            }
            logs = "\n".join(f"--- {w.name}:\n{w.output()[-6000:]}" for w in (worker1, worker2))
            raise AssertionError(f"{error}; states {states}\n{logs}") from None
        for job_id in submitter.acknowledged:
            job = until_available(lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id, include_masks=True), timeout=30))
            assert [len(frame.masks) for frame in job.frames] == [1] * FRAMES_PER_JOB, job_id
        for worker in (worker1, worker2):
            assert worker.process.poll() is None, f"{worker.name} stopped serving:\n{worker.output()[-4000:]}"
        assert group.primary_port() == group.first_replica
        print(
            f"failover: {acknowledged_before} jobs acknowledged before the kill, {JOBS} in all; "
            f"{len(submitter.refusals)} refusals meanwhile, e.g. {submitter.refusals[:2]}"
        )


def test_up_runs_a_farm_on_a_sentinel_url(tiny_model_dir):
    """``maskfarm up --redis-url redis+sentinel://...``: its server and worker find the
    primary through the Sentinels, and a job runs."""
    with sentinel_group() as group:
        target = f"127.0.0.1:{free_port()}"
        command = [
            sys.executable,
            "-m",
            "maskfarm.cli",
            "up",
            "--listen",
            target,
            "--redis-url",
            group.url,
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--stop-timeout",
            "10",
        ]
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
            )
            try:
                server = ServerProcess(target, group.url, "maskfarm", process)
                wait_for(
                    lambda: process.poll() is not None or _serving(server), "maskfarm up to serve", timeout=PATIENCE_S
                )
                assert process.poll() is None, log.seek(0) or log.read().decode(errors="replace")
                stub = server.stub()
                job_id = until_available(lambda: stub.SubmitJob(submit_request(0), timeout=30)).id
                wait_for(
                    lambda: (
                        stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30).job.state == pb.JOB_STATE_SUCCEEDED
                    ),
                    "the job to succeed",
                    timeout=PATIENCE_S,
                )
                with redis.Redis(port=group.primary_port()) as primary:
                    assert primary.exists(f"rq:job:{job_id}"), "the job lives on the primary the Sentinels name"
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _serving(server: ServerProcess) -> bool:
    try:
        return server.health() == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
