"""Every bad SubmitJob is refused with INVALID_ARGUMENT naming the field, by the real server,
which goes on serving."""

from __future__ import annotations

import time

import grpc
import pytest

from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image, png_header_only
from tests.services import ServerProcess

PNG = encoded_image("PNG")


def request(frames: list[bytes] | None = None, prompts: list[str] | None = None, **fields) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(
        frames=[pb.Frame(data=data, name=f"f{i}.png") for i, data in enumerate([PNG] if frames is None else frames)],
        prompts=["car"] if prompts is None else prompts,
        **fields,
    )


BAD_REQUESTS = {
    "no frames": (request(frames=[]), "frames: at least one frame"),
    "no prompts": (request(prompts=[]), "prompts: at least one prompt"),
    "too many frames": (request(frames=[PNG] * 10001), "frames: 10001 frames, at most 10000 per job"),
    "too many prompts": (request(prompts=["car"] * 257), "prompts: 257 prompts, at most 256 per job"),
    "blank prompt": (request(prompts=["car", "  \t"]), "prompts[1]: blank"),
    "long prompt": (request(prompts=["x" * 1001]), "prompts[0]: 1001 characters, at most 1000"),
    "zero bytes": (request(frames=[PNG, b""]), "frames[1].data: empty"),
    "undecodable": (request(frames=[b"this is not an image"]), "frames[0].data: not an image"),
    "wrong magic": (request(frames=[b"\x89PNX" + PNG[4:]]), "frames[0].data: not an image"),
    "truncated png": (request(frames=[PNG, PNG, PNG[: len(PNG) - 20]]), "frames[2].data: truncated or corrupt PNG"),
    "truncated jpeg": (
        request(frames=[encoded_image("JPEG", (256, 256), noise=True)[:3000]]),
        "frames[0].data: truncated or corrupt JPEG",
    ),
    "gif": (request(frames=[encoded_image("GIF")]), "frames[0].data: unsupported format GIF"),
    "ico": (request(frames=[encoded_image("ICO")]), "frames[0].data: unsupported format ICO"),
    "side over the limit": (
        request(frames=[png_header_only(16385, 8)]),
        "frames[0].data: 16385x8 PNG: a side is over 16384",
    ),
    "too many pixels": (
        request(frames=[png_header_only(12000, 9000)]),
        "frames[0].data: 12000x9000 PNG: 108000000 pixels, over 100000000",
    ),
    "frame name with a path": (
        pb.SubmitJobRequest(frames=[pb.Frame(data=PNG, name="../x.png")], prompts=["car"]),
        "frames[0].name: must be a plain file name",
    ),
    "threshold over 1": (request(params=pb.MaskParams(threshold=1.5)), "params.threshold: must be in [0, 1], got 1.5"),
    "threshold nan": (request(params=pb.MaskParams(threshold=float("nan"))), "params.threshold: must be in [0, 1]"),
    "negative threshold": (request(params=pb.MaskParams(threshold=-0.1)), "params.threshold: must be in [0, 1]"),
    "smooth over 32": (request(params=pb.MaskParams(smooth=40)), "params.smooth: must be in [0, 32], got 40"),
    "negative smooth": (request(params=pb.MaskParams(smooth=-1)), "params.smooth: must be in [0, 32], got -1"),
    "dilate over 32": (request(params=pb.MaskParams(dilate=33)), "params.dilate: must be in [-32, 32], got 33"),
    "dilate under -32": (request(params=pb.MaskParams(dilate=-33)), "params.dilate: must be in [-32, 32], got -33"),
    "blur over 64": (request(params=pb.MaskParams(blur=65)), "params.blur: must be in [0, 64], got 65"),
    "negative blur": (request(params=pb.MaskParams(blur=-2)), "params.blur: must be in [0, 64], got -2"),
    "unknown format": (request(format=9), "format: unknown value 9"),
    "unknown priority": (request(priority=7), "priority: unknown value 7"),
    "empty label key": (request(labels={"": "x"}), "labels['']: keys must have 1 to 128 characters"),
    "long request id": (request(request_id="r" * 129), "request_id: 129 characters, at most 128"),
}


@pytest.mark.parametrize("bad", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_are_refused_naming_the_field(server: ServerProcess, bad: tuple[pb.SubmitJobRequest, str]) -> None:
    bad_request, message = bad
    with pytest.raises(grpc.RpcError) as refused:
        server.stub().SubmitJob(bad_request, timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()


def test_a_decompression_bomb_is_refused_without_decoding_it(server: ServerProcess) -> None:
    bomb = png_header_only(50_000, 50_000)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        server.stub().SubmitJob(request(frames=[bomb]), timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "frames[0].data: 50000x50000 PNG" in refused.value.details()
    assert time.monotonic() - started < 8, "decoding 2.5 gigapixels takes far longer (or runs out of memory)"


def test_bad_reads_are_refused_naming_the_field(server: ServerProcess) -> None:
    stub = server.stub()
    calls = {
        "job_id: required": lambda: stub.GetJob(pb.GetJobRequest(), timeout=5),
        "first_frame: must be >= 0": lambda: stub.GetJob(
            pb.GetJobRequest(job_id="0" * 32, include_masks=True, first_frame=-1), timeout=5
        ),
        "from_frame: must be >= 0": lambda: next(
            stub.WatchJob(pb.WatchJobRequest(job_id="j", from_frame=-1), timeout=5)
        ),
        "page_size: must be >= 0": lambda: stub.ListJobs(pb.ListJobsRequest(page_size=-1), timeout=5),
        "page_token: not a page token": lambda: stub.ListJobs(pb.ListJobsRequest(page_token="nonsense"), timeout=5),
        "states[0]: unknown value 42": lambda: stub.ListJobs(pb.ListJobsRequest(states=[42]), timeout=5),
    }
    for message, call in calls.items():
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in refused.value.details()


def test_the_server_still_serves_after_bad_requests(server: ServerProcess) -> None:
    for bad_request, _ in BAD_REQUESTS.values():
        with pytest.raises(grpc.RpcError):
            server.stub().SubmitJob(bad_request, timeout=10)
    job = server.stub().SubmitJob(
        request(
            frames=[
                PNG,
                encoded_image("JPEG"),
                encoded_image("TIFF", mode="I;16"),
                encoded_image("WEBP"),
                encoded_image("BMP"),
            ]
        ),
        timeout=10,
    )
    assert job.state == pb.JOB_STATE_QUEUED
    assert job.progress.total_frames == 5
