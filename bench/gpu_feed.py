#!/usr/bin/env python
"""Can a worker's CPUs feed a GPU? The real job path around a stand-in model, no GPU needed.

    python bench/gpu_feed.py                       # 1024x1024, 64 frames a case, threads 1..cores
    python bench/gpu_feed.py --size 2048x1080 --threads 1,2,4
    python bench/gpu_feed.py --size 64x48 --frames 4 --threads 1,2   # a smoke run

The worker's own ``run_job`` runs each job: frames loaded from a private redis-server,
decoded on the ``CodecPool`` (the next chunk while the model runs this one), the model
(bench/stand_in.py: ``--model-ms`` per frame asleep, as a GPU's time is: 2 ms is 500
frames/s), the masks encoded on the pool and stored in Redis. Cases: every input format
(png8, jpeg q90, exr half zip when the OpenEXR package is there) with png8 masks, and every
output format (png8, png16, exr, float32: the raw floats, what npy holds) from png8 frames,
each at every ``--threads``. One prompt, 64-frame chunks (a GPU's ``max_batch``).

Per case: frames/s; the CPU it took per frame (this process, every thread, plus the
redis-server's ``INFO cpu``), which at ``--fps`` frames/s is the cores the worker needs per
GPU; and the CPU per frame of the job's own thread (its Python: chunking, the store's calls,
the GIL's share), whose inverse is the frames/s no number of codec threads gets past.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e  # noqa: E402  (the private redis-server)
import numpy as np  # noqa: E402
from codec import exr_bytes, smooth_png  # noqa: E402
from PIL import Image  # noqa: E402
from stand_in import stand_in_segmenter  # noqa: E402

from maskfarm.core.jobs import JobSpec, JobState, OutputFormat, Provenance  # noqa: E402
from maskfarm.worker.frames import decode_frame  # noqa: E402

OUTPUTS = {
    "png8": OutputFormat.PNG8,
    "png16": OutputFormat.PNG16,
    "exr": OutputFormat.EXR,
    "float32": OutputFormat.FLOAT32,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0))
    default_threads = ",".join(str(n) for n in sorted({1, 2, cores}))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1024x1024", help="frame WIDTHxHEIGHT (default 1024x1024)")
    parser.add_argument("--frames", type=int, default=64, help="frames per job (default 64)")
    parser.add_argument("--threads", default=default_threads, help=f"codec threads (default {default_threads})")
    parser.add_argument("--model-ms", type=float, default=2.0, help="stand-in model ms per frame (default 2)")
    parser.add_argument("--fps", type=float, default=500.0, help="the GPU's frames/s to size for (default 500)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    return parser.parse_args(argv)


@dataclass
class Case:
    input: str
    output: str
    threads: int
    frames_per_s: float
    cpu_ms_per_frame: float
    redis_ms_per_frame: float
    job_thread_ms_per_frame: float

    def cores_per_gpu(self, fps: float) -> float:
        return fps * (self.cpu_ms_per_frame + self.redis_ms_per_frame) / 1000


def inputs(width: int, height: int) -> dict[str, list[bytes]]:
    """Four distinct photo-like frames in every input format the bench reads."""
    rng = np.random.default_rng(0)
    pngs = [smooth_png(rng, width, height) for _ in range(4)]
    frames = [np.asarray(decode_frame(data).convert("RGB")) for data in pngs]
    files = {"png8": pngs, "jpeg": [jpeg_bytes(frame) for frame in frames]}
    try:
        files["exr"] = [exr_bytes(((f / 255) ** 2.2).astype(np.float16), "zip") for f in frames]
    except ImportError:  # no OpenEXR package: no EXR input case
        pass
    return files


def jpeg_bytes(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def redis_cpu_s(connection) -> float:
    info = connection.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_case(store, connection, segmenter, files: list[bytes], fmt: OutputFormat, threads: int, count: int):
    """One job of ``count`` frames through ``run_job``: wall, process CPU, Redis CPU and
    job-thread CPU, in seconds."""
    from maskfarm.worker.codec_pool import CodecPool
    from maskfarm.worker.job import run_job
    from maskfarm.worker.runtime import WorkerRuntime, install_runtime

    frames = [files[n % len(files)] for n in range(count)]
    spec = JobSpec(frames=frames, frame_names=[f"f.{n:04d}.png" for n in range(count)], prompts=["car"], format=fmt)
    job, _ = store.create(spec, queue_ttl=600, inputs_ttl=600, result_ttl=600)
    codec = CodecPool(threads)
    install_runtime(WorkerRuntime(segmenter, store, Provenance(worker="bench/gpu_feed.py"), codec=codec))
    redis_before, cpu_before, own_before = redis_cpu_s(connection), time.process_time(), time.thread_time()
    start = time.perf_counter()
    run_job(job.id)
    wall = time.perf_counter() - start
    own, cpu = time.thread_time() - own_before, time.process_time() - cpu_before
    redis_cpu = redis_cpu_s(connection) - redis_before
    codec.close()
    record = store.require_job(job.id)
    if record.state is not JobState.SUCCEEDED:
        raise RuntimeError(f"job {job.id} ended {record.state.value}: {record.error_message}")
    connection.flushdb()  # the private Redis holds one case's job at a time
    return wall, cpu, redis_cpu, own


def measure(args: argparse.Namespace) -> list[Case]:
    import redis

    from maskfarm.jobqueue.store import JobStore

    width, height = map(int, args.size.lower().split("x"))
    files = inputs(width, height)
    threads = [int(n) for n in args.threads.split(",")]
    cases = [(name, "png8") for name in files] + [("png8", name) for name in OUTPUTS if name != "png8"]
    segmenter = stand_in_segmenter(args.model_ms)
    services = e2e.Services(Path(tempfile.mkdtemp(prefix="maskfarm-gpu-feed-")), f"gf{os.getpid()}")
    results = []
    try:
        services.start_redis()
        connection = redis.Redis.from_url(services.redis_url)
        store = JobStore(connection, services.namespace)
        run_case(store, connection, segmenter, files["png8"], OutputFormat.PNG8, max(threads), 4)  # warm-up
        for input_name, output_name in cases:
            for count in threads:
                wall, cpu, redis_cpu, own = run_case(
                    store, connection, segmenter, files[input_name], OUTPUTS[output_name], count, args.frames
                )
                per = 1000 / args.frames
                case = Case(input_name, output_name, count, args.frames / wall, cpu * per, redis_cpu * per, own * per)
                results.append(case)
                print(
                    f"  {input_name} -> {output_name}, {count} threads: {case.frames_per_s:.1f} frames/s",
                    flush=True,
                )
    finally:
        services.stop_all()
    return results


def report(args: argparse.Namespace, cases: list[Case]) -> None:
    cores = len(os.sched_getaffinity(0))
    print(
        f"\n{args.frames} frames {args.size} per job, 1 prompt, stand-in model {args.model_ms:g} ms/frame "
        f"(alone: {1000 / args.model_ms:.0f} frames/s); {cores} cores, {threading.active_count()} threads now"
    )
    header = f"{'input -> output':<18}{'threads':>8}{'frames/s':>10}{'CPU ms/frame':>14}{'Redis ms':>10}"
    print(header + f"{'job thread ms':>15}{'its ceiling':>13}")
    for case in cases:
        ceiling = 1000 / case.job_thread_ms_per_frame if case.job_thread_ms_per_frame else math.inf
        print(
            f"{case.input + ' -> ' + case.output:<18}{case.threads:>8}{case.frames_per_s:>10.1f}"
            f"{case.cpu_ms_per_frame:>14.2f}{case.redis_ms_per_frame:>10.2f}"
            f"{case.job_thread_ms_per_frame:>15.2f}{ceiling:>11.0f}/s"
        )
    print(f"\ncores per GPU at {args.fps:.0f} frames/s (CPU per frame x {args.fps:.0f}, the most threads' run):")
    most = max(case.threads for case in cases)
    for case in cases:
        if case.threads == most:
            ceiling = 1000 / case.job_thread_ms_per_frame if case.job_thread_ms_per_frame else math.inf
            limit = "" if ceiling >= args.fps else f" (the job thread alone caps it at {ceiling:.0f} frames/s)"
            print(f"  {case.input} -> {case.output}: {math.ceil(case.cores_per_gpu(args.fps))} cores{limit}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = measure(args)
    report(args, cases)
    if args.json:
        figures = {"size": args.size, "frames": args.frames, "model_ms": args.model_ms, "fps": args.fps}
        figures["cases"] = [asdict(case) | {"cores_per_gpu": case.cores_per_gpu(args.fps)} for case in cases]
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
