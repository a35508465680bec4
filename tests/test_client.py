"""The Python client against the real server and Redis, with no worker running: jobs
stay QUEUED unless cancelled, which is what submitting, reading, listing and cancelling
need. (Masks coming back are tested end to end in test_client_e2e.py.)"""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskfarm.client.client import Client
from maskfarm.client.errors import (
    Busy,
    DeadlineExceeded,
    FrameRefused,
    InvalidRequest,
    JobCancelled,
    JobNotFound,
    RequestTooLarge,
    Unavailable,
)
from maskfarm.client.frames import encode_frame
from maskfarm.client.jobs import JobState
from tests.images import encoded_image
from tests.services import ServerProcess, free_port, maskfarm_server

PNG = encoded_image("PNG")


@pytest.fixture
def client(server: ServerProcess):
    with Client(server.target, timeout=10) as client:
        yield client


def unique_label() -> dict[str, str]:
    return {"test": uuid.uuid4().hex}


def test_the_client_imports_no_torch_redis_or_rq() -> None:
    code = (
        "import sys, maskfarm.client, maskfarm.client.client, maskfarm.client.remote; "
        "print(sorted(m for m in ('torch', 'redis', 'rq') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_a_bad_request_is_invalid_request_naming_the_field(client: Client) -> None:
    with pytest.raises(InvalidRequest, match=r"prompts\[1\]: blank") as raised:
        client.submit([PNG], ["car", "  "])
    assert raised.value.code == "INVALID_ARGUMENT"
    with pytest.raises(InvalidRequest, match=r"params\.smooth"):
        client.submit([PNG], ["car"], smooth=40)
    with pytest.raises(InvalidRequest, match="format"):
        client.submit([PNG], ["car"], format="jpeg")  # type: ignore[arg-type]


def test_an_unknown_job_is_job_not_found_everywhere(client: Client) -> None:
    for call in (client.get, client.cancel, client.wait, lambda job_id: list(client.watch(job_id))):
        with pytest.raises(JobNotFound, match="no job"):
            call("0123456789abcdef")


def test_an_unreachable_server_is_unavailable_after_the_retries() -> None:
    with Client(f"127.0.0.1:{free_port()}", timeout=2, retries=1) as client:
        with pytest.raises(Unavailable):
            client.get("anything")


def test_a_queued_job_can_be_read_waited_for_and_cancelled(client: Client) -> None:
    job = client.submit(
        [("shot.1001.png", PNG), ("shot.1002.png", PNG)],
        ["car", "sky"],
        dilate=-3,
        union=True,
        format="float32",
        priority="low",
        labels={"shot": "sq010"},
    )
    assert job.state is JobState.QUEUED and (job.done, job.total) == (0, 2)
    assert job.frame_names == ("shot.1001.png", "shot.1002.png") and job.prompts == ("car", "sky")
    assert (job.format, job.priority, job.labels) == ("FLOAT32", "LOW", {"shot": "sq010"})
    assert job.message.params.dilate == -3 and job.message.params.union_mask
    assert uuid.UUID(job.request_id), "the client gives every submission a request id"
    assert job.created is not None and job.started is None and job.provenance is None

    assert client.get(job.id) == job
    with pytest.raises(DeadlineExceeded, match="still QUEUED"):
        client.wait(job.id, timeout=0.3)

    cancelled = client.cancel(job.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished is not None
    with pytest.raises(JobCancelled):
        client.wait(job.id)
    events = list(client.watch(job.id))
    assert [event.state for event in events][-1] is JobState.CANCELLED
    assert list(client.results(job.id)) == []


def test_a_repeated_request_id_returns_the_first_job(client: Client) -> None:
    request_id = str(uuid.uuid4())
    first = client.submit([PNG], ["car"], request_id=request_id)
    again = client.submit([PNG, PNG], ["sky"], request_id=request_id)
    assert again.id == first.id and again.total == 1
    client.cancel(first.id)


def test_jobs_are_listed_by_label_and_state(client: Client) -> None:
    label = unique_label()
    made = [client.submit([PNG], ["car"], labels={**label, "n": str(n)}) for n in range(3)]
    other = client.submit([PNG], ["car"], labels=unique_label())
    client.cancel(made[0].id)

    assert [job.id for job in client.jobs(labels=label)] == [job.id for job in reversed(made)]
    assert [job.id for job in client.jobs(labels={**label, "n": "1"})] == [made[1].id]
    assert [job.id for job in client.jobs(labels=label, state="cancelled")] == [made[0].id]
    assert [job.id for job in client.jobs(labels=label, state=["QUEUED"], page_size=1)] == [made[2].id, made[1].id]
    assert other.id not in {job.id for job in client.jobs(labels=label)}
    for job in [*made, other]:
        client.cancel(job.id)


def test_frames_may_be_paths_bytes_pil_images_or_arrays(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "plate.0001.png"
    path.write_bytes(PNG)
    opened = Image.open(path)
    frames = [
        path,
        str(path),
        PNG,
        ("named.png", PNG),
        opened,
        Image.new("CMYK", (9, 7)),
        np.zeros((5, 4), np.uint8),
        np.zeros((5, 4, 3), np.uint16),
        np.ones((5, 4), bool),
        np.full((5, 4, 4), 0.5, np.float32),
    ]
    job = client.submit(frames, ["car"])
    assert job.frame_names == (
        "plate.0001.png",
        "plate.0001.png",
        "",
        "named.png",
        "plate.0001.png",
        "",
        "",
        "",
        "",
        "",
    )
    client.cancel(job.id)


@pytest.mark.parametrize(
    "pixels",
    [
        np.arange(20, dtype=np.uint8).reshape(4, 5),
        np.arange(60, dtype=np.uint8).reshape(4, 5, 3),
        np.arange(80, dtype=np.uint8).reshape(4, 5, 4),
        np.arange(0, 65535, 3277, dtype=np.uint16).reshape(4, 5),
    ],
)
def test_arrays_are_encoded_losslessly(pixels: np.ndarray) -> None:
    decoded = np.asarray(Image.open(io.BytesIO(encode_frame(pixels).data)))
    np.testing.assert_array_equal(decoded, pixels)


def test_sixteen_bit_colour_arrays_become_sixteen_bit_colour_pngs() -> None:
    pixels = np.random.default_rng(0).integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    data = encode_frame(pixels).data
    assert data[24:26] == bytes([16, 2]), "IHDR: 16 bits per sample, RGB"
    import zlib

    raw = np.frombuffer(zlib.decompress(data[41:-16]), np.uint8).reshape(6, 1 + 9 * 3 * 2)
    assert not raw[:, 0].any(), "no filters"
    np.testing.assert_array_equal(raw[:, 1:].copy().view(">u2").reshape(6, 9, 3), pixels)


def test_float_arrays_are_converted_as_the_pipeline_converts_them() -> None:
    pixels = np.array([[0.0, 0.5, 1.0, 1.7, -0.2, 0.999]], np.float64)
    decoded = np.asarray(Image.open(io.BytesIO(encode_frame(pixels).data)))
    np.testing.assert_array_equal(decoded, [[0, 127, 255, 255, 0, 254]])


def test_unusable_frames_are_refused_before_sending() -> None:
    with pytest.raises(TypeError, match="a frame must be"):
        encode_frame(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        encode_frame(np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(TypeError, match="int32"):
        encode_frame(np.zeros((2, 3), np.int32))


def test_frames_over_the_message_limit_are_split_into_several_jobs(server: ServerProcess) -> None:
    rng = np.random.default_rng(3)
    frames = [(f"big.{n}.png", rng.integers(0, 256, (370, 370, 3), dtype=np.uint8)) for n in range(5)]
    assert 0.38 < len(encode_frame(frames[0]).data) / 2**20 < 0.42
    request_id = str(uuid.uuid4())
    with Client(server.target, timeout=20, max_message_mib=1) as client:
        with pytest.raises(RequestTooLarge, match="submit_parts"):
            client.submit(frames, ["car"])
        jobs = client.submit_parts(frames, ["car"], request_id=request_id)
        again = client.submit_parts(frames, ["car"], request_id=request_id)
        with pytest.raises(RequestTooLarge, match=r"frames\[0\]"):
            client.submit_parts([rng.integers(0, 65536, (1000, 1000, 3), dtype=np.uint16)], ["car"])
        for job in jobs:
            client.cancel(job.id)
    assert [job.total for job in jobs] == [2, 2, 1]
    assert [name for job in jobs for name in job.frame_names] == [name for name, _ in frames]
    assert [job.request_id for job in jobs] == [f"{request_id}-{n}" for n in (1, 2, 3)]
    assert [job.id for job in again] == [job.id for job in jobs]


def test_a_refused_frame_is_named_by_its_place_among_all_frames_and_earlier_parts_are_cancelled(
    server: ServerProcess,
) -> None:
    rng = np.random.default_rng(5)
    frames = [(f"big.{n}.png", rng.integers(0, 256, (370, 370, 3), dtype=np.uint8)) for n in range(4)]
    frames.append(("junk.png", b"not an image at all"))
    labels = unique_label()
    with Client(server.target, timeout=20, max_message_mib=1) as client:
        with pytest.raises(FrameRefused) as raised:
            client.submit_parts(frames, ["car"], labels=labels)
        refused_run = list(client.jobs(labels=labels))
        kept = client.submit_leaving_out_refused(frames, ["car"], labels=labels, keep_going=True)
        for job in kept.jobs:
            client.cancel(job.id)
    refusal = raised.value
    assert (refusal.frame_index, refusal.frame_name, refusal.field) == (4, "junk.png", ".data")
    assert refusal.details.startswith("junk.png: not an image") and "frames[" not in refusal.details
    assert refused_run and {job.state.value for job in refused_run} == {"CANCELLED"}  # parts queued before it
    assert kept.kept == [0, 1, 2, 3] and [(r.frame_index, r.frame_name) for r in kept.refused] == [(4, "junk.png")]
    assert [name for job in kept.jobs for name in job.frame_names] == [f"big.{n}.png" for n in range(4)]


def test_a_full_backlog_is_busy_with_the_servers_retry_hint(redis_url: str) -> None:
    with (
        maskfarm_server(
            redis_url, f"mfbusy{uuid.uuid4().hex[:6]}", "--max-backlog-jobs", "1", "--max-message-mib", "1"
        ) as server,
        Client(server.target, timeout=10) as client,
    ):
        client.submit([PNG], ["car"])
        with pytest.raises(Busy) as raised:
            client.submit([PNG], ["car"])
        assert raised.value.retry_after_s is not None and raised.value.retry_after_s > 0
        with pytest.raises(Busy) as too_big:
            client.submit([np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)], ["car"])
        assert too_big.value.retry_after_s is None


def test_the_client_offers_every_output_format_the_proto_has() -> None:
    from typing import get_args

    from maskfarm.client.job_options import FORMATS, Format
    from maskfarm.v1 import segmentation_pb2 as pb

    in_proto = {name.removeprefix("OUTPUT_FORMAT_").lower() for name in pb.OutputFormat.keys()} - {"unspecified"}
    assert set(get_args(Format)) == set(FORMATS) == in_proto
