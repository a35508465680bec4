"""Hostile SubmitJob requests against one real server: a clear answer, every time.

Property: whatever is in any field of a SubmitJob (broken, empty, random or bomb-sized
frames; huge, NUL-laden or odd-unicode prompts; out-of-range, NaN or infinite
parameters; unknown enum numbers; huge or odd labels and request ids), the server
answers OK or INVALID_ARGUMENT with a message naming the field, stays SERVING, and any
job it accepted is queued and can be cancelled, so nothing is left stuck.

One ``maskfarm server`` process for the session (the ``server`` fixture, namespace
``mftest``); examples are bounded so the module runs in well under a minute.
"""

from __future__ import annotations

import math

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image, png_header_only
from tests.services import ServerProcess

INT32 = st.integers(-(2**31), 2**31 - 1)
VALID_FRAMES = [encoded_image(kind, (16, 12)) for kind in ("PNG", "JPEG", "TIFF", "WEBP", "BMP")]
BOMB_SIDES = [0, 1, 16384, 16385, 50000, 2**31 - 1]


@st.composite
def frame_data(draw) -> bytes:
    """Frame bytes: valid, truncated, wrong magic, empty, random, or a bomb's header."""
    valid = draw(st.sampled_from(VALID_FRAMES))
    return draw(
        st.one_of(
            st.just(valid),
            st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),
            st.just(b"\x00\x00\x00\x00" + valid[4:]),
            st.binary(max_size=2000),
            st.tuples(st.sampled_from(BOMB_SIDES), st.sampled_from(BOMB_SIDES)).map(lambda wh: png_header_only(*wh)),
        )
    )


odd_text = st.text(max_size=300) | st.sampled_from(["\0", "a\0b", "\u202e\u200b", "🚗" * 100, " ", "../x", "."])

hostile_frames = st.lists(st.builds(pb.Frame, name=odd_text, data=frame_data()), max_size=4)
hostile_prompts = st.lists(odd_text | st.text(min_size=990, max_size=1100), max_size=5)
hostile_params = st.builds(
    pb.MaskParams,
    threshold=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    smooth=st.none() | INT32,
    dilate=st.none() | INT32,
    blur=st.none() | INT32,
    soft=st.booleans(),
    invert=st.booleans(),
    union_mask=st.booleans(),
)
hostile_labels = st.dictionaries(
    odd_text | st.text(min_size=120, max_size=140), odd_text | st.text(min_size=1000, max_size=1100), max_size=70
)
hostile_request_ids = odd_text | st.text(min_size=120, max_size=140)


def sometimes(valid, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """A field that is valid three times in four, so the checks after it are reached too."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), hostile)


def submit(server: ServerProcess, request: pb.SubmitJobRequest) -> tuple[grpc.StatusCode, str, pb.Job | None]:
    """SubmitJob's status code, its details and the job (None unless OK)."""
    try:
        return grpc.StatusCode.OK, "", server.stub().SubmitJob(request, timeout=30)
    except grpc.RpcError as error:
        return error.code(), error.details() or "", None


def assert_clear_answer(server: ServerProcess, request: pb.SubmitJobRequest, reused_request_id: bool) -> str:
    """OK with a queued, cancellable job, or INVALID_ARGUMENT naming a field; returns
    "OK" or the field."""
    code, details, job = submit(server, request)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), f"{code}: {details}"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        field, _, reason = details.partition(": ")
        assert field and reason, f"no field named in {details!r}"
        return field.split("[")[0]
    allowed = {pb.JOB_STATE_QUEUED} | ({pb.JOB_STATE_CANCELLED} if reused_request_id else set())
    assert job.state in allowed
    cancelled = server.stub().CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=10)
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    return "OK"


def assert_serving(server: ServerProcess) -> None:
    assert server.process.poll() is None, "the server died"
    assert server.health() == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def used_request_ids() -> set[str]:
    return set()


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(
    frames=sometimes([pb.Frame(name="f.png", data=VALID_FRAMES[0])], hostile_frames),
    prompts=sometimes(["car"], hostile_prompts),
    params=sometimes(pb.MaskParams(), hostile_params),
    format=sometimes(pb.OUTPUT_FORMAT_PNG8, INT32),
    priority=sometimes(pb.PRIORITY_NORMAL, INT32),
    labels=sometimes({}, hostile_labels),
    request_id=sometimes("", hostile_request_ids),
)
def test_any_submit_job_gets_a_clear_answer_and_leaves_nothing_stuck(
    server, used_request_ids, frames, prompts, params, format, priority, labels, request_id
):
    request = pb.SubmitJobRequest(
        frames=frames,
        prompts=prompts,
        params=params,
        format=format,
        priority=priority,
        labels=labels,
        request_id=request_id,
    )
    reused = request_id in used_request_ids
    used_request_ids.add(request_id)
    event(f"answer: {assert_clear_answer(server, request, reused)}")
    assert_serving(server)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"params": pb.MaskParams(threshold=math.nan)}, id="nan-threshold"),
        pytest.param({"params": pb.MaskParams(threshold=-math.inf)}, id="infinite-threshold"),
        pytest.param({"frames": [pb.Frame(name="bomb.png", data=png_header_only(50000, 50000))]}, id="png-bomb"),
        pytest.param({"format": 99}, id="unknown-format"),
        pytest.param({"priority": -1}, id="unknown-priority"),
        pytest.param({"prompts": ["car\0sky"]}, id="nul-in-prompt"),
    ],
)
def test_known_hostile_fields_are_refused_or_accepted_clearly(server, fields):
    request = pb.SubmitJobRequest(
        **{"frames": [pb.Frame(name="f.png", data=VALID_FRAMES[0])], "prompts": ["car"], **fields}
    )
    assert_clear_answer(server, request, reused_request_id=False)
    assert_serving(server)


def test_the_obvious_hostile_values_are_refused(server):
    for fields, field in (
        ({"params": pb.MaskParams(threshold=math.nan)}, "params.threshold"),
        ({"frames": [pb.Frame(name="bomb.png", data=png_header_only(50000, 50000))]}, "frames[0].data"),
        ({"format": 99}, "format"),
    ):
        request = pb.SubmitJobRequest(
            **{"frames": [pb.Frame(name="f.png", data=VALID_FRAMES[0])], "prompts": ["car"], **fields}
        )
        code, details, _ = submit(server, request)
        assert (code, details.partition(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, field), details


@pytest.mark.parametrize(
    "frame_count, prompt_count, answer",
    [(3000, 1, "OK"), (10_001, 1, "frames"), (1, 256, "OK"), (1, 3000, "prompts")],
    ids=["3000-frames", "10001-frames", "256-prompts", "3000-prompts"],
)
def test_thousands_of_frames_or_prompts_get_a_clear_answer(server, frame_count, prompt_count, answer):
    request = pb.SubmitJobRequest(
        frames=[pb.Frame(name=f"f.{i:05d}.png", data=VALID_FRAMES[0]) for i in range(frame_count)],
        prompts=[f"prompt {i}" for i in range(prompt_count)],
    )
    assert assert_clear_answer(server, request, reused_request_id=False) == answer
    assert_serving(server)
