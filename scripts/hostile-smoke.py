"""One owner attacks the service; the other must keep being served (loopback only).

    .venv/bin/python scripts/hostile-smoke.py MODEL_DIR     # e.g. a `maskfarm model synthetic` dir

Starts a private Redis, a server with two bearer-token owners (alice, bob) each with their own
write root under one storage root, and two workers; then alice sends what a careless or hostile
user would (paths escaping her roots, a FIFO, /dev/zero, header bombs in several formats, a
file with a 3 GiB sparse tail, huge labels and prompts, masks aimed at her own plates or bob's
root, a plate swapped for a FIFO mid-job, 40 unread watches). Each line says what came back;
bob's job must still run after each round, no process may die, and SIGTERM must stop the
server. Exit 1 when any check is BAD. Records: docs/SECURITY.md.
"""

import io
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import grpc
import numpy as np
from PIL import Image

from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pbg
from tests.services import free_port, redis_server

ROOT = tempfile.mkdtemp(prefix="atk-")
os.makedirs(f"{ROOT}/alice/plates")
os.makedirs(f"{ROOT}/bob/plates")
os.makedirs(f"{ROOT}/alice/out")
for who in ("alice", "bob"):
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(
            f"{ROOT}/{who}/plates/p.{i}.png"
        )
TA, TB = "a" * 32, "b" * 32
tokens = f"{ROOT}.tokens"
open(tokens, "w").write(f"{TA} alice\n{TB} bob\nstorage alice write {ROOT}/alice\nstorage bob write {ROOT}/bob\n")
results = []


def note(name, ok, detail):
    results.append((name, ok, detail))
    print(("OK  " if ok else "BAD ") + name + ": " + detail[:230], flush=True)


with redis_server() as redis_url:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    srv = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "maskfarm.cli",
            "server",
            "--listen",
            target,
            "--redis-url",
            redis_url,
            "--auth-tokens",
            tokens,
            "--storage-root",
            ROOT,
            "--frame-read-timeout-s",
            "5",
        ],
        env=env,
        stdout=open(f"{ROOT}.server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "maskfarm.cli",
                "worker",
                "--redis-url",
                redis_url,
                "--name",
                f"w{i}",
                "--model",
                sys.argv[1],
                "--device",
                "cpu",
                "--storage-root",
                ROOT,
                "--frame-read-timeout-s",
                "5",
                "--log-level",
                "WARNING",
            ],
            env=env,
            stdout=open(f"{ROOT}.w{i}.log", "w"),
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    time.sleep(8)
    ch = grpc.insecure_channel(target)
    stub = pbg.SegmentationStub(ch)
    A = [("authorization", f"Bearer {TA}")]
    B = [("authorization", f"Bearer {TB}")]

    def submit(md, timeout=20, **kw):
        return stub.SubmitJob(pb.SubmitJobRequest(**kw), metadata=md, timeout=timeout)

    def expect_error(name, codes, md=A, **kw):
        t = time.monotonic()
        try:
            r = submit(md, **kw)
            note(name, False, f"accepted: job {r.id}")
        except grpc.RpcError as e:
            d = e.details() or ""
            note(name, e.code().name in codes and len(d) < 2100, f"{e.code().name} in {time.monotonic() - t:.2f}s: {d}")

    def bob_served(label):
        t = time.monotonic()
        j = submit(B, frames=[pb.Frame(path=f"{ROOT}/bob/plates/p.0.png")], prompts=["car"])
        for ev in stub.WatchJob(pb.WatchJobRequest(job_id=j.id), metadata=B, timeout=120):
            pass
        g = stub.GetJob(pb.GetJobRequest(job_id=j.id), metadata=B, timeout=10)
        note(
            f"bob served after {label}",
            g.job.state == pb.JOB_STATE_SUCCEEDED,
            f"{pb.JobState.Name(g.job.state)} in {time.monotonic() - t:.2f}s",
        )

    bob_served("start")
    os.symlink(f"{ROOT}/bob/plates/p.0.png", f"{ROOT}/alice/plates/evil.png")
    expect_error(
        "symlink into bob's plates",
        {"NOT_FOUND", "INVALID_ARGUMENT"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/evil.png")],
        prompts=["x"],
    )
    expect_error(
        "bob's path directly", {"NOT_FOUND"}, frames=[pb.Frame(path=f"{ROOT}/bob/plates/p.1.png")], prompts=["x"]
    )
    expect_error(
        "dot-dot escape",
        {"NOT_FOUND", "INVALID_ARGUMENT"},
        frames=[pb.Frame(path=f"{ROOT}/alice/../bob/plates/p.1.png")],
        prompts=["x"],
    )
    expect_error(
        "directory as frame", {"INVALID_ARGUMENT"}, frames=[pb.Frame(path=f"{ROOT}/alice/plates")], prompts=["x"]
    )
    os.mkfifo(f"{ROOT}/alice/plates/fifo.png")
    expect_error(
        "fifo as frame", {"INVALID_ARGUMENT"}, frames=[pb.Frame(path=f"{ROOT}/alice/plates/fifo.png")], prompts=["x"]
    )
    os.symlink("/dev/zero", f"{ROOT}/alice/plates/zero.png")
    expect_error(
        "symlink to /dev/zero",
        {"INVALID_ARGUMENT", "NOT_FOUND"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/zero.png")],
        prompts=["x"],
    )
    # TIFF header claiming 100000 x 100000
    tif = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 3)
        + struct.pack("<HHII", 256, 4, 1, 100000)
        + struct.pack("<HHII", 257, 4, 1, 100000)
        + struct.pack("<HHII", 258, 3, 1, 8)
        + b"\0" * 4
    )
    open(f"{ROOT}/alice/plates/big.tif", "wb").write(tif)
    expect_error(
        "tiff bomb by path", {"INVALID_ARGUMENT"}, frames=[pb.Frame(path=f"{ROOT}/alice/plates/big.tif")], prompts=["x"]
    )
    expect_error("tiff bomb as bytes", {"INVALID_ARGUMENT"}, frames=[pb.Frame(name="big.tif", data=tif)], prompts=["x"])
    # WebP/GIF header claiming huge
    gif = b"GIF89a" + struct.pack("<HH", 60000, 60000) + b"\x00\x00\x00" + b"\x3b"
    expect_error("gif bomb as bytes", {"INVALID_ARGUMENT"}, frames=[pb.Frame(name="g.gif", data=gif)], prompts=["x"])
    # JPEG SOF claiming 65000x65000
    jpg = (
        b"\xff\xd8\xff\xc0\x00\x11\x08"
        + struct.pack(">HH", 65000, 65000)
        + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9"
    )
    open(f"{ROOT}/alice/plates/big.jpg", "wb").write(jpg)
    expect_error(
        "jpeg bomb by path", {"INVALID_ARGUMENT"}, frames=[pb.Frame(path=f"{ROOT}/alice/plates/big.jpg")], prompts=["x"]
    )
    # sparse 3 GiB JPEG tail
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    with open(f"{ROOT}/alice/plates/tail.jpg", "wb") as f:
        f.write(buf.getvalue())
        f.truncate(3 * 2**30)
    expect_error(
        "jpeg with 3 GiB tail",
        {"INVALID_ARGUMENT"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/tail.jpg")],
        prompts=["x"],
    )
    expect_error(
        "100 KB label",
        {"INVALID_ARGUMENT"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.0.png")],
        prompts=["x"],
        labels={"k": "v" * 100_000},
    )
    expect_error(
        "1 MB prompt",
        {"INVALID_ARGUMENT"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.0.png")],
        prompts=["p" * 1_000_000],
    )
    expect_error(
        "5000 prompts",
        {"INVALID_ARGUMENT"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.0.png")],
        prompts=[f"p{i}" for i in range(5000)],
    )
    expect_error(
        "NUL in path",
        {"INVALID_ARGUMENT"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.0.png\x00.png")],
        prompts=["x"],
    )
    expect_error("relative path", {"INVALID_ARGUMENT"}, frames=[pb.Frame(path="alice/plates/p.0.png")], prompts=["x"])
    expect_error(
        "output over own plates",
        {"INVALID_ARGUMENT"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.0.png")],
        prompts=["plates"],
        output_dir=f"{ROOT}/alice",
    )
    expect_error(
        "output into bob's root",
        {"PERMISSION_DENIED", "NOT_FOUND"},
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.0.png")],
        prompts=["x"],
        output_dir=f"{ROOT}/bob/out",
    )
    expect_error(
        "no token", {"UNAUTHENTICATED"}, md=[], frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.0.png")], prompts=["x"]
    )
    bob_served("bad submissions")
    # truncated PNG accepted by header, worker must fail the frame
    raw = open(f"{ROOT}/alice/plates/p.1.png", "rb").read()
    open(f"{ROOT}/alice/plates/cut.png", "wb").write(raw[: len(raw) // 2])
    j = submit(
        A,
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/cut.png"), pb.Frame(path=f"{ROOT}/alice/plates/p.2.png")],
        prompts=["x"],
        keep_going=True,
    )
    for ev in stub.WatchJob(pb.WatchJobRequest(job_id=j.id), metadata=A, timeout=120):
        pass
    g = stub.GetJob(pb.GetJobRequest(job_id=j.id), metadata=A, timeout=10).job
    note(
        "truncated png under keep_going",
        g.state == pb.JOB_STATE_SUCCEEDED and g.progress.failed_frames == 1,
        f"{pb.JobState.Name(g.state)} failed={g.progress.failed_frames}",
    )
    # swap a plate for a FIFO after submit, many frames
    j = submit(
        A,
        frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.{i % 3}.png") for i in range(30)],
        prompts=["x"],
        keep_going=True,
    )
    os.rename(f"{ROOT}/alice/plates/p.2.png", f"{ROOT}/alice/plates/p.2.bak")
    os.mkfifo(f"{ROOT}/alice/plates/p.2.png")
    for ev in stub.WatchJob(pb.WatchJobRequest(job_id=j.id), metadata=A, timeout=300):
        pass
    g = stub.GetJob(pb.GetJobRequest(job_id=j.id), metadata=A, timeout=10).job
    note(
        "plate swapped for fifo mid-job",
        g.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED),
        f"{pb.JobState.Name(g.state)} done={g.progress.done_frames} failed={g.progress.failed_frames} {g.error.message[:120]}",
    )
    bob_served("fifo swap")
    # unread streams from 40 channels (own connections)
    big = submit(A, frames=[pb.Frame(path=f"{ROOT}/alice/plates/p.0.png")], prompts=["x"])
    chans, streams, refused = [], [], 0
    for i in range(40):
        c = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        chans.append(c)
        s = pbg.SegmentationStub(c).WatchJob(pb.WatchJobRequest(job_id=big.id), metadata=A, timeout=300)
        try:
            next(s)
            streams.append(s)
        except grpc.RpcError as e:
            refused += 1 if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else 0
    note("40 watches by one owner", refused >= 8, f"held {len(streams)}, refused {refused}")
    bob_served("watch flood")
    h = subprocess.run(
        [sys.executable, "-m", "maskfarm.cli", "health", "--target", target],
        capture_output=True,
        text=True,
        timeout=30,
    )
    note("health", h.returncode == 0, h.stdout.strip() + h.stderr.strip())
    for s in streams:
        s.cancel()
    alive = [p.poll() is None for p in [srv, *workers]]
    note("no process died", all(alive), str(alive))
    srv.send_signal(signal.SIGTERM)
    t = time.monotonic()
    rc = srv.wait(timeout=30)
    note("server stops on SIGTERM", rc == 0, f"rc={rc} in {time.monotonic() - t:.1f}s")
    for w in workers:
        w.terminate()
        w.wait(timeout=60)
bad = [r[0] for r in results if not r[1]]
print(json.dumps({"bad": bad, "total": len(results)}))
sys.exit(1 if bad else 0)
