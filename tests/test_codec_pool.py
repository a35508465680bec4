"""``CodecPool``: decoding and encoding on threads without giving up order, and jobs run
with one giving the same stored results as without."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from maskfarm.core.jobs import JobSpec, JobState, Provenance
from maskfarm.jobqueue.store import JobStore
from maskfarm.worker.codec_pool import CodecPool, read_ahead
from maskfarm.worker.job import run_job
from maskfarm.worker.pipeline import Segmenter
from maskfarm.worker.runtime import WorkerRuntime, install_runtime
from tests.images import encoded_image, png_header_only

PROMPTS = ["a cat", "a dog"]


def slow_square(n: int) -> int:
    time.sleep(0.01 * (5 - n % 5))  # later items finish first
    return n * n


@pytest.mark.parametrize("threads", [1, 3])
def test_results_come_back_in_order(threads: int) -> None:
    pool = CodecPool(threads)
    assert list(pool.map(slow_square, range(10))) == [n * n for n in range(10)]
    assert [(n, result()) for n, result in pool.in_order(slow_square, range(10))] == [(n, n * n) for n in range(10)]
    pool.close()


def test_in_order_works_ahead_on_the_threads_only() -> None:
    pulled: list[int] = []

    def source():
        for n in range(6):
            pulled.append(n)
            yield n

    pool = CodecPool(3)
    stream = pool.in_order(lambda n: threading.current_thread().name, source())
    first, name = next(stream)
    assert first == 0 and name().startswith("maskfarm-codec") and pulled == [0, 1, 2]
    stream.close()
    serial = CodecPool(1).in_order(lambda n: threading.current_thread().name, iter(range(3)))
    assert next(serial)[1]() == threading.current_thread().name


def test_a_failing_source_yields_what_came_before_then_raises() -> None:
    def source():
        yield from range(3)
        raise ValueError("frame 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="frame 3"):
        for n, result in CodecPool(4).in_order(slow_square, source()):
            seen.append(result())
    assert seen == [0, 1, 4]


def test_an_error_of_one_item_is_raised_for_that_item() -> None:
    def fragile(n: int) -> int:
        if n == 2:
            raise OSError("disk full")
        return n

    results = CodecPool(2).in_order(fragile, range(4))
    assert [next(results)[1](), next(results)[1]()] == [0, 1]
    with pytest.raises(OSError, match="disk full"):
        next(results)[1]()


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CodecPool(0)


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_read_ahead_keeps_order_and_raises_where_the_item_comes() -> None:
    def source():
        yield from range(5)
        raise ValueError("frame 5 is broken")

    seen = []
    with pytest.raises(ValueError, match="frame 5"):
        for item in read_ahead(source(), 2):
            seen.append(item)
    assert seen == list(range(5))
    assert list(read_ahead(iter(range(4)), 0)) == list(range(4))


@pytest.mark.parametrize("depth", [1, 3])
def test_read_ahead_holds_at_most_its_depth(depth: int) -> None:
    pulled, consumed, most_ahead = [0], [0], [0]

    def source():
        for n in range(40):
            pulled[0] += 1
            most_ahead[0] = max(most_ahead[0], pulled[0] - consumed[0])
            yield n

    items = read_ahead(source(), depth)
    for n in range(40):
        assert next(items) == n
        consumed[0] += 1
        if n == 0:  # it does go ahead, as far as its queue lets it
            wait_for(lambda: pulled[0] >= depth + 2, "the reader to fill its queue")
        time.sleep(0.002)
    # the queue's depth, the item the thread holds, and one the reader took but has not counted yet
    assert depth + 1 <= most_ahead[0] <= depth + 2


def test_closing_read_ahead_stops_its_thread() -> None:
    pulled = [0]

    def endless():
        while True:
            pulled[0] += 1
            yield pulled[0]

    items = read_ahead(endless(), 2)
    assert next(items) == 1
    wait_for(lambda: pulled[0] >= 4, "the reader to fill its queue")
    items.close()
    assert not any(thread.name == "maskfarm-read-ahead" for thread in threading.enumerate())
    stopped_at = pulled[0]
    time.sleep(0.05)
    assert pulled[0] == stopped_at <= 4


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir: Path) -> Segmenter:
    return Segmenter.load(str(tiny_model_dir), "cpu", max_batch=4)  # two frames per chunk


@pytest.mark.parametrize("keep_going", [True, False])
def test_a_job_stores_the_same_results_with_codec_threads(
    redis_url: str, segmenter: Segmenter, keep_going: bool
) -> None:
    store = JobStore(redis.Redis.from_url(redis_url), namespace="mfcodec")
    frames = [encoded_image("PNG", (20 + i, 16), noise=True) for i in range(7)]
    frames[5] = png_header_only(40, 30)
    outcomes = []
    for threads in (1, 3):
        spec = JobSpec(
            frames=frames, frame_names=[f"f{i}.png" for i in range(7)], prompts=PROMPTS, keep_going=keep_going
        )
        job, _ = store.create(spec, queue_ttl=60, inputs_ttl=120, result_ttl=60)
        install_runtime(WorkerRuntime(segmenter, store, Provenance(worker="w1"), codec=CodecPool(threads)))
        run_job(job.id)
        record = store.require_job(job.id)
        outcomes.append((record.state, record.error_message, store.frame_results(job.id, range(7))))
    assert outcomes[0] == outcomes[1]
    state, _, results = outcomes[0]
    if keep_going:
        assert state is JobState.SUCCEEDED and [r.index for r in results] == list(range(7)) and results[5].error
    else:
        assert state is JobState.FAILED and [r.index for r in results] == [0, 1, 2, 3, 4]
