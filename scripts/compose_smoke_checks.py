"""The client side of scripts/compose-smoke.sh: each check talks to the deployment only
through the maskfarm client, as a user's program would, and exits non-zero on failure.

    compose_smoke_checks.py wait-healthy --workers N
    compose_smoke_checks.py one-job --output DIR
    compose_smoke_checks.py kill-worker-mid-job
    compose_smoke_checks.py mid-job --during "SHELL COMMAND"
    compose_smoke_checks.py submit --frames N [--wait] --save FILE
    compose_smoke_checks.py finished --load FILE
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maskfarm.client.client import Client
from maskfarm.client.errors import MaskfarmError, Unavailable

LONG_JOB_FRAMES = 1500
"""Frames of the jobs that are interrupted: enough to be caught running on a CPU worker."""
PATIENCE_S = 600.0


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def frames(count: int, size: int = 64) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(count)
    named = []
    for number in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        named.append((f"smoke.{number:04d}.png", buffer.getvalue()))
    return named


def patiently(call, what: str):
    """``call()``, retried while the service is unavailable (Redis restarting, say)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            return call()
        except Unavailable as error:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what}: still unavailable after {PATIENCE_S:g} s: {error}") from error
            time.sleep(1)


def wait_healthy(client: Client, workers: int) -> int:
    deadline = time.monotonic() + PATIENCE_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            seen = [w.name for w in client.workers()]
            if len(seen) == workers:
                log(f"{workers} worker(s): {', '.join(seen)}")
                return 0
        except MaskfarmError as error:
            seen = [f"({error.__class__.__name__})"]
        time.sleep(2)
    log(f"wanted {workers} worker(s), saw {seen}")
    return 1


def one_job(output: Path) -> int:
    """The CLI, as a user types it: three frames on disk, masks written under ``output``."""
    folder = output.parent / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in frames(3):
        (folder / name).write_bytes(data)
    cli = shutil.which("maskfarm", path=str(Path(sys.executable).parent)) or "maskfarm"
    subprocess.run([cli, "segment", str(folder / "smoke.####.png"), "-p", "thing", "-o", str(output)], check=True)
    written = sorted((output / "thing").glob("*.png"))
    log(f"masks written: {[p.name for p in written]}")
    return 0 if len(written) == 3 else 1


def running(client: Client, job_id: str):
    """Waits until the job is running with some frames done; returns it."""
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        job = patiently(lambda: client.get(job_id), "GetJob")
        if job.state.terminal:
            raise SystemExit(
                f"job {job_id} ended ({job.state.value}) before it could be interrupted: give it more frames"
            )
        if job.done > 0 and job.provenance is not None:
            return job
        time.sleep(0.2)
    raise SystemExit(f"job {job_id} did not start within {PATIENCE_S:g} s")


def completely_done(client: Client, job_id: str) -> int:
    """Waits for the job's end: 0 when it succeeded with every frame's masks."""
    job = patiently(lambda: client.wait(job_id, timeout=PATIENCE_S), "wait")
    stored = sum(1 for _ in patiently(lambda: list(client.results(job_id)), "results"))
    log(
        f"job {job_id}: {job.state.value}, {job.done}/{job.total} done, {job.failed} failed, "
        f"{stored} results, last run on {job.provenance.worker if job.provenance else '?'}"
    )
    return 0 if job.done == job.total == stored and job.failed == 0 else 1


def kill_worker_mid_job(client: Client) -> int:
    job = client.submit(frames(LONG_JOB_FRAMES), ["thing"])
    job = running(client, job.id)
    host = job.provenance.worker.rsplit(".", 1)[0]  # <container hostname = id>.<pid>
    log(f"job {job.id} at {job.done}/{job.total} on {job.provenance.worker}: docker kill -s KILL {host}")
    subprocess.run(["docker", "kill", "--signal", "KILL", host], check=True, stdout=subprocess.DEVNULL)
    return completely_done(client, job.id)


def mid_job(client: Client, during: str) -> int:
    job = client.submit(frames(LONG_JOB_FRAMES), ["thing"])
    job = running(client, job.id)
    log(f"job {job.id} at {job.done}/{job.total}: {during}")
    subprocess.run(during, shell=True, check=True, stdout=subprocess.DEVNULL)
    return completely_done(client, job.id)


def submit(client: Client, count: int, wait: bool, save: Path) -> int:
    job = client.submit(frames(count), ["thing"])
    if wait:
        client.wait(job.id, timeout=PATIENCE_S)
    saved = json.loads(save.read_text()) if save.exists() else []
    save.write_text(json.dumps(saved + [job.id]))
    log(f"job {job.id} {'finished' if wait else 'queued'}")
    return 0


def finished(client: Client, load: Path) -> int:
    return max(completely_done(client, job_id) for job_id in json.loads(load.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    checks = parser.add_subparsers(dest="check", required=True)
    checks.add_parser("wait-healthy").add_argument("--workers", type=int, required=True)
    checks.add_parser("one-job").add_argument("--output", type=Path, required=True)
    checks.add_parser("kill-worker-mid-job")
    checks.add_parser("mid-job").add_argument("--during", required=True)
    submitting = checks.add_parser("submit")
    submitting.add_argument("--frames", type=int, required=True)
    submitting.add_argument("--wait", action="store_true")
    submitting.add_argument("--save", type=Path, required=True)
    checks.add_parser("finished").add_argument("--load", type=Path, required=True)
    args = parser.parse_args()
    if args.check == "one-job":
        return one_job(args.output)
    with Client() as client:
        if args.check == "wait-healthy":
            return wait_healthy(client, args.workers)
        if args.check == "kill-worker-mid-job":
            return kill_worker_mid_job(client)
        if args.check == "mid-job":
            return mid_job(client, args.during)
        if args.check == "submit":
            return submit(client, args.frames, args.wait, args.save)
        return finished(client, args.load)


if __name__ == "__main__":
    sys.exit(main())
