#!/usr/bin/env python
"""Streaming benchmark: how fast one server delivers a job's frames to a WatchJob stream.

    python bench/stream.py                     # 1000 frames stored back to back, 3 rounds
    python bench/stream.py --interval-ms 2     # one frame every 2 ms (a ~500 frames/s GPU worker)

A GPU worker stores a frame's masks every few milliseconds; every one of them goes through
the server: a pub/sub wake-up, a read from Redis, a gRPC message. This measures that path
alone. It starts a private ``redis-server`` and one ``maskfarm server`` (as bench/e2e.py
does), submits a job of ``--frames`` small frames with no worker running, and stores the
frames' masks itself through ``JobStore`` (what a worker's ``store_frame_result`` does,
without the model) while a client thread watches the job. Printed per round: the server's
CPU time per frame (from /proc) and how long after the first store the watcher had every
frame (frames/s delivered).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e  # noqa: E402  (the benchmark's process plumbing)

MASK_BYTES = 4000
"""The size of each stored mask (a small PNG's)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames of the job (default 1000)")
    parser.add_argument(
        "--interval-ms", type=float, default=0.0, help="pause between two stored frames (default 0: back to back)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="jobs streamed, one after another (default 3)")
    return parser.parse_args(argv)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream_round(
    client, store, server_pid: int, frames: list[tuple[str, bytes]], interval_s: float
) -> tuple[float, float]:
    """One job streamed; (server CPU ms per frame, ms from the first store to the last frame received)."""
    from maskfarm.client.masks import FrameResult as ReceivedFrame
    from maskfarm.core.jobs import Provenance, StoredFrame

    job = client.submit(frames, ["car"])
    store.mark_running(
        job.id, Provenance(model="none", dtype="float32", device="cpu", maskfarm_version="", worker="bench/stream.py")
    )
    received: list[float] = []

    def watch() -> None:
        for event in client.watch(job.id, timeout=300):
            if isinstance(event, ReceivedFrame):
                received.append(time.perf_counter())

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.5)  # the stream is open and has sent the job
    cpu_before, start = cpu_seconds(server_pid), time.perf_counter()
    for index in range(len(frames)):
        store.store_frame_result(job.id, StoredFrame(index=index, width=8, height=8, masks=[b"m" * MASK_BYTES]))
        if interval_s:
            time.sleep(interval_s)
    store.mark_succeeded(job.id)
    watcher.join()
    if len(received) != len(frames):
        raise RuntimeError(f"job {job.id}: {len(received)} of {len(frames)} frames arrived")
    return 1000 * (cpu_seconds(server_pid) - cpu_before) / len(frames), 1000 * (received[-1] - start)


def main(argv: list[str] | None = None) -> int:
    import redis

    from maskfarm.client.client import Client
    from maskfarm.jobqueue.store import JobStore

    args = parse_args(argv)
    services = e2e.Services(Path(tempfile.mkdtemp(prefix="maskfarm-stream-")), f"st{os.getpid()}")
    try:
        services.start_redis()
        services.start_server()
        pool = e2e.frame_pool(64)
        frames = [pool[index % len(pool)] for index in range(args.frames)]
        store = JobStore(redis.Redis.from_url(services.redis_url), services.namespace)
        print(f"{args.frames} frames per job, {args.interval_ms:g} ms between stores, {e2e.CORES} cores")
        with Client(services.target, timeout=60) as client:
            for round_ in range(1, args.rounds + 1):
                cpu_ms, wall_ms = stream_round(client, store, services.server.pid, frames, args.interval_ms / 1000)
                print(
                    f"round {round_}: server CPU {cpu_ms:.2f} ms/frame; every frame received "
                    f"{wall_ms:.0f} ms after the first store ({1000 * args.frames / wall_ms:.0f} frames/s)"
                )
    finally:
        services.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
