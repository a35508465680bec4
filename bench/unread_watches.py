#!/usr/bin/env python
"""Unread WatchJob streams: what they cost the server, and whether other clients are still served.

    python bench/unread_watches.py                          # 1000 unread watches, 2 MB masks
    python bench/unread_watches.py --watches 300 --mask-mib 1

A client that opens WatchJob streams and never reads them makes the server hold, per
stream, the message it is trying to send (a frame's masks). This starts a private
``redis-server`` and one ``maskfarm server`` with bearer tokens for two callers, stores a
running job of ``--frames`` frames with one ``--mask-mib`` mask each for caller
``mallory`` (through ``JobStore``, as a worker would), and opens ``--watches`` streams on
it from mallory over ``--channels`` connections, none of them read. Printed: the server's
resident memory before, with the streams open, and after they are cancelled; how many
streams were refused (RESOURCE_EXHAUSTED) and how many held; and how long the other
caller, ``alice``, waits for a GetJob and for the first event of a WatchJob meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e  # noqa: E402  (the benchmark's process plumbing)

MALLORY = "mallory-token-" + "m" * 24
ALICE = "alice-token-" + "a" * 24
SETTLE_TIMEOUT_S = 300.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watches", type=int, default=1000, help="unread WatchJob streams (default 1000)")
    parser.add_argument("--channels", type=int, default=10, help="connections they are opened over (default 10)")
    parser.add_argument("--frames", type=int, default=4, help="frames of the watched job (default 4)")
    parser.add_argument("--mask-mib", type=float, default=2.0, help="size of each frame's mask, MiB (default 2)")
    parser.add_argument("--probes", type=int, default=5, help="alice's calls timed (default 5)")
    return parser.parse_args(argv)


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid``, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def stored_job(stub, store, frames: list[tuple[str, bytes]], token: str, mask_bytes: int) -> str:
    """A job submitted with ``token``, running, with every frame's masks stored."""
    from maskfarm.core.jobs import Provenance, StoredFrame
    from maskfarm.v1 import segmentation_pb2 as pb

    request = pb.SubmitJobRequest(frames=[pb.Frame(name=name, data=data) for name, data in frames], prompts=["car"])
    job_id = stub.SubmitJob(request, metadata=bearer(token), timeout=60).id
    store.mark_running(
        job_id,
        Provenance(model="none", dtype="float32", device="cpu", maskfarm_version="", worker="bench/unread_watches.py"),
    )
    for index in range(len(frames)):
        mask = os.urandom(mask_bytes)
        store.store_frame_result(job_id, StoredFrame(index=index, width=8, height=8, masks=[mask]))
    return job_id


def settled(calls: list, held_at_most: int) -> tuple[int, int]:
    """Waits until every call beyond ``held_at_most`` has ended (or SETTLE_TIMEOUT_S);
    (refused with RESOURCE_EXHAUSTED, still open)."""
    import grpc

    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while sum(call.done() for call in calls) < len(calls) - held_at_most and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)  # let the held ones reach their blocked send
    refused = sum(call.done() and call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED for call in calls)
    return refused, sum(not call.done() for call in calls)


def probe_ms(stub, job_id: str, probes: int) -> tuple[float, float]:
    """alice's median GetJob time and median time to a WatchJob's first event, ms."""
    from maskfarm.v1 import segmentation_pb2 as pb

    get, watch = [], []
    for _ in range(probes):
        start = time.perf_counter()
        stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=bearer(ALICE), timeout=30)
        get.append(time.perf_counter() - start)
        start = time.perf_counter()
        stream = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=bearer(ALICE), timeout=30)
        next(stream)
        watch.append(time.perf_counter() - start)
        stream.cancel()
    return 1000 * statistics.median(get), 1000 * statistics.median(watch)


def main(argv: list[str] | None = None) -> int:
    import grpc
    import redis

    from maskfarm.jobqueue.store import JobStore
    from maskfarm.server.settings import ServerSettings
    from maskfarm.v1 import segmentation_pb2 as pb
    from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

    args = parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="maskfarm-unread-"))
    (logs / "tokens").write_text(f"{MALLORY} mallory\n{ALICE} alice\n")
    os.environ["MASKFARM_AUTH_TOKENS"] = str(logs / "tokens")  # the server inherits it
    cap = int(os.environ.get("MASKFARM_MAX_WATCHES_PER_OWNER", ServerSettings.max_watches_per_owner))
    services = e2e.Services(logs, f"uw{os.getpid()}")
    channels = []
    try:
        services.start_redis()
        services.start_server()
        pid = services.server.pid
        store = JobStore(redis.Redis.from_url(services.redis_url), services.namespace)
        frames = e2e.frame_pool(64)[: args.frames]
        with grpc.insecure_channel(services.target) as alice_channel:
            alice = pb_grpc.SegmentationStub(alice_channel)  # alice's calls; mallory's job is submitted on it too
            mallory_job = stored_job(alice, store, frames, MALLORY, int(args.mask_mib * 2**20))
            alice_job = stored_job(alice, store, frames[:1], ALICE, 4000)
            probe_ms(alice, alice_job, 1)  # warm
            before = rss_mib(pid)
            get_ms, watch_ms = probe_ms(alice, alice_job, args.probes)
            print(
                f"{args.watches} unread watches over {args.channels} connections of a {args.frames}-frame job, "
                f"{args.mask_mib:g} MiB masks; MASKFARM_MAX_WATCHES_PER_OWNER={cap}; {e2e.CORES} cores"
            )
            print(
                f"before: server RSS {before:.0f} MiB; alice GetJob {get_ms:.1f} ms, first WatchJob event "
                f"{watch_ms:.1f} ms"
            )
            # a connection each (channels to one target share one unless told not to)
            channels = [
                grpc.insecure_channel(services.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(args.channels)
            ]
            stubs = [pb_grpc.SegmentationStub(channel) for channel in channels]
            request = pb.WatchJobRequest(job_id=mallory_job)
            calls = [
                stubs[n % len(stubs)].WatchJob(request, metadata=bearer(MALLORY), timeout=SETTLE_TIMEOUT_S * 2)
                for n in range(args.watches)
            ]
            refused, held = settled(calls, cap)
            during = rss_mib(pid)
            get_ms, watch_ms = probe_ms(alice, alice_job, args.probes)
            print(
                f"with them open: server RSS {during:.0f} MiB (+{during - before:.0f}); {refused} refused "
                f"(RESOURCE_EXHAUSTED), {held} held; alice GetJob {get_ms:.1f} ms, first WatchJob event "
                f"{watch_ms:.1f} ms"
            )
            for call in calls:
                call.cancel()
            time.sleep(3.0)
            after = rss_mib(pid)
            print(f"after cancelling them: server RSS {after:.0f} MiB (+{after - before:.0f})")
            verdict = "PASS" if during - before < 500 and max(get_ms, watch_ms) < 1000 else "MISS"
            print(f"goal (+500 MiB at most, alice served within 1 s): {verdict}")
    finally:
        for channel in channels:
            channel.close()
        services.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
