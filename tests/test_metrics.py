"""Prometheus metrics, scraped over HTTP from real processes."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
        submit = lambda **fields: stub.SubmitJob(pb.SubmitJobRequest(frames=[frame], prompts=["car"], **fields), timeout=10)
        high = submit(priority=pb.PRIORITY_HIGH)
        submit(request_id="same")
        submit(request_id="same")
        with pytest.raises(grpc.RpcError):
            stub.SubmitJob(pb.SubmitJobRequest(frames=[frame], prompts=[" "]), timeout=10)
        stub.CancelJob(pb.CancelJobRequest(job_id=high.id), timeout=10)
        samples = scrape(address)

    assert samples[("maskfarm_jobs_submitted_total", (("priority", "high"),))] == 1
    assert samples[("maskfarm_jobs_submitted_total", (("priority", "normal"),))] == 1  # one job for two calls
    assert samples[("maskfarm_calls_refused_total", (("code", "INVALID_ARGUMENT"),))] == 1
    assert samples[("maskfarm_cancel_requests_total", ())] == 1
    assert samples[("maskfarm_queue_depth", (("priority", "normal"),))] == 1
    assert samples[("maskfarm_queue_depth", (("priority", "high"),))] == 0
