"""Prometheus metrics, scraped over HTTP from real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from maskfarm.client.client import Client
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import free_port, maskfarm_server


def scrape(address: str) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_server_counts_submissions_refusals_cancels_and_queue_depth(redis_url):
    address = f"127.0.0.1:{free_port()}"
    with maskfarm_server(redis_url, "mfmetrics", "--metrics-listen", address) as server:
        stub = server.stub()
        frame = pb.Frame(name="a.png", data=encoded_image("PNG", (16, 16)))

        def submit(**fields):
            return stub.SubmitJob(pb.SubmitJobRequest(frames=[frame], prompts=["car"], **fields), timeout=10)

        high = submit(priority=pb.PRIORITY_HIGH)
        submit(request_id="same")
        submit(request_id="same")
        with pytest.raises(grpc.RpcError):
            stub.SubmitJob(pb.SubmitJobRequest(frames=[frame], prompts=[" "]), timeout=10)
        stub.CancelJob(pb.CancelJobRequest(job_id=high.id), timeout=10)
        samples = scrape(address)
        watch = stub.WatchJob(pb.WatchJobRequest(job_id=high.id), timeout=10)  # cancelled: ends at once
        assert [event.job.id for event in watch] == [high.id]
        waiting = stub.WatchJob(pb.WatchJobRequest(job_id=submit(priority=pb.PRIORITY_LOW).id), timeout=10)
        next(waiting)  # the job, QUEUED: the stream stays open
        watched = scrape(address)[("maskfarm_watched_jobs", ())]
        waiting.cancel()

    assert samples[("maskfarm_jobs_submitted_total", (("priority", "high"),))] == 1
    assert samples[("maskfarm_jobs_submitted_total", (("priority", "normal"),))] == 1  # one job for two calls
    assert samples[("maskfarm_calls_refused_total", (("code", "INVALID_ARGUMENT"),))] == 1
    assert samples[("maskfarm_cancel_requests_total", ())] == 1
    assert samples[("maskfarm_queue_depth", (("priority", "normal"),))] == 1
    assert samples[("maskfarm_queue_depth", (("priority", "high"),))] == 0
    assert samples[("maskfarm_watched_jobs", ())] == 0
    assert watched == 1


def free_port_pair() -> int:
    """A port P with P + 1 free too (the server's and the first worker's metrics)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


def test_maskfarm_up_gives_server_and_worker_their_own_metrics(tiny_model_dir, tmp_path):
    target, metrics = f"127.0.0.1:{free_port()}", free_port_pair()
    host = "127.0.0.1"
    output = tmp_path / "stdout"
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "up",
        "--listen",
        target,
        "--private-redis",
        "--namespace",
        "mfupmetrics",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--metrics-listen",
        f"{host}:{metrics}",
    ]
    with output.open("wb") as stdout:
        process = subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
    try:
        deadline = time.monotonic() + 120
        while "ready" not in output.read_text():
            assert process.poll() is None and time.monotonic() < deadline, "maskfarm up did not start"
            time.sleep(0.1)
        with Client(target) as client:
            frames = [encoded_image("PNG", (40, 30), noise=True), encoded_image("PNG", (20, 10))]
            client.segment(frames, ["car", "sky"])
        server = scrape(f"{host}:{metrics}")
        worker = scrape(f"{host}:{metrics + 1}")
        # the worker counts a job just after its end is stored, which the client may see first
        while ("maskfarm_worker_jobs_total", (("outcome", "succeeded"),)) not in worker:
            assert time.monotonic() < deadline + 60, "the worker never counted the job"
            time.sleep(0.1)
            worker = scrape(f"{host}:{metrics + 1}")
    finally:
        process.terminate()
        process.wait(timeout=60)

    assert server[("maskfarm_jobs_submitted_total", (("priority", "normal"),))] == 1
    assert worker[("maskfarm_worker_jobs_total", (("outcome", "succeeded"),))] == 1
    assert worker[("maskfarm_worker_frames_total", ())] == 2
    for stage in ("decode", "preprocess", "model", "postprocess", "encode", "store"):
        assert worker[("maskfarm_worker_stage_seconds_count", (("stage", stage),))] >= 1, stage
    assert worker[("maskfarm_worker_batch_pairs_count", ())] >= 1
    assert worker[("maskfarm_worker_batch_pairs_sum", ())] == 4  # 2 frames x 2 prompts
