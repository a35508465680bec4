"""No read is unbounded and nothing blocks on a file (``maskfarm.core.frame_files``),
through real server and worker processes on a real Redis.

- Bomb files by path: EXR files whose display or data window is huge, a PNG followed by
  a huge sparse tail. The server refuses them from their headers and sizes (it never
  decodes an EXR, so the sizes here are the real attack's); a worker that reads them
  (the server could not see the storage) fails the frame as INVALID_INPUT before any
  decode. The worker's bombs are over limits given to it by flag (``--max-side 64``,
  ``--max-frame-mib 16``) rather than over the defaults, so that should its checks ever
  break, this test fails instead of exhausting the machine's memory.
- A frame path flipped between a regular file and a FIFO, as fast as the test can
  (a symlink replaced atomically): every SubmitJob gets an answer, the FIFO as "not a
  regular file", the server still answers and stops on SIGTERM; the worker fails such a
  job as INVALID_INPUT and runs the next one. (Before, a stat that saw the file and an
  open that met the FIFO blocked for good.)
- keep_going jobs whose masks cannot be written (a directory where a mask file goes):
  the frame is reported failed, the others' masks are written, through the service and
  ``segment --local``.
- The read deadline, in-process: a reader thread that never returns costs the caller
  only the deadline.

Sparse files are made with ``truncate``: nothing here writes more than a few KB.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from maskfarm.v1 import segmentation_pb2 as pb
from tests.exr_files import exr_bytes
from tests.images import encoded_image
from tests.services import ServerProcess, maskfarm_server, maskfarm_worker, wait_for

PROMPTS = ["a red car"]
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
PNG = encoded_image("PNG", (16, 12), noise=True)
HUGE_TAIL = 6 << 30
RACING_SUBMITS = 150
"""SubmitJobs racing the flips: before the fix about 1 in 25 hung (its stat saw the file,
its open the FIFO; the rest met the FIFO at the stat), so 150 hang one in all but ~0.2%
of runs; now each is answered in milliseconds."""
RACING_FRAMES = 50
RACING_KEPT_FRAMES = 300
"""Frames of a keep_going job racing the flips at the worker: each read is a chance for
the old stat-then-open to hang (about 1 in 30), as the job goes on past the FIFO."""


def rgb_exr(height: int, width: int, **windows) -> bytes:
    channels = {name: np.full((height, width), 0.5, np.float32) for name in "RGB"}
    return exr_bytes(channels, **windows)


def with_window(data: bytes, name: bytes, box: tuple[int, int, int, int]) -> bytes:
    """``data``, an EXR, with the ``name`` window attribute of its header set to ``box``
    (the pixel data left as it is: a header that lies)."""
    at = data.index(name + b"\0box2i\0") + len(name) + len(b"\0box2i\0") + 4
    return data[:at] + struct.pack("<4i", *box) + data[at + 16 :]


def sparse_png(path: Path, size: int) -> Path:
    """A valid PNG followed by zeros up to ``size`` bytes, written sparse (no data blocks)."""
    path.write_bytes(PNG)
    os.truncate(path, size)
    return path


class Flipper:
    """Replaces ``path`` (a symlink) over and over, atomically, by one to ``regular``
    then one to ``fifo``, until stopped: whoever stats then opens it may find two
    different files."""

    def __init__(self, path: Path, regular: Path, fifo: Path) -> None:
        self.path, self.targets = path, (regular, fifo)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flip, daemon=True)

    def __enter__(self) -> Flipper:
        self.path.symlink_to(self.targets[0])
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _flip(self) -> None:
        spare = self.path.with_name(self.path.name + ".next")
        while not self._stop.is_set():
            for target in self.targets:
                os.symlink(target, spare)
                os.replace(spare, self.path)


def racing_folder(root: Path) -> tuple[Path, Path, Path]:
    """``root/race`` with a PNG and a FIFO; the path to flip between them."""
    folder = root / "race"
    folder.mkdir()
    (folder / "frame.png").write_bytes(PNG)
    os.mkfifo(folder / "pipe")
    return folder / "flip.png", folder / "frame.png", folder / "pipe"


def submit(server: ServerProcess, frames: list[pb.Frame], **fields) -> pb.Job:
    return server.stub().SubmitJob(pb.SubmitJobRequest(frames=frames, prompts=PROMPTS, **fields), timeout=60)


def get(server: ServerProcess, job_id: str) -> pb.Job:
    return server.stub().GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job


# -- the server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def visible_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root the server sees, holding the bombs of the real attack's size."""
    root = tmp_path_factory.mktemp("visible").resolve()
    small = rgb_exr(1, 1)
    (root / "display.exr").write_bytes(rgb_exr(1, 1, display=(0, 0, 39_999, 39_999)))
    (root / "data.exr").write_bytes(with_window(small, b"dataWindow", (0, 0, 39_999, 39_999)))
    (root / "good.exr").write_bytes(rgb_exr(12, 16))
    sparse_png(root / "tail.png", HUGE_TAIL)
    return root


@pytest.fixture(scope="module")
def hidden_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root that does not exist while jobs are submitted, so the server
    cannot check their files and leaves them to the worker."""
    return tmp_path_factory.mktemp("hidden").resolve() / "storage"


@pytest.fixture(scope="module")
def storage_server(redis_url: str, visible_root: Path, hidden_root: Path) -> Iterator[ServerProcess]:
    roots = f"{visible_root}{os.pathsep}{hidden_root}"
    with maskfarm_server(redis_url, "mfframefiles", "--storage-root", roots) as server:
        yield server


def refusal(server: ServerProcess, path: Path) -> str:
    with pytest.raises(grpc.RpcError) as error:
        submit(server, [pb.Frame(path=str(path))])
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return error.value.details()


def test_the_server_refuses_bomb_files_by_path_from_their_headers(
    storage_server: ServerProcess, visible_root: Path
) -> None:
    assert refusal(storage_server, visible_root / "display.exr") == (
        f"frames[0].path: {visible_root}/display.exr: 40000x40000 EXR: a side is over 16384 pixels"
    )
    assert refusal(storage_server, visible_root / "data.exr") == (
        f"frames[0].path: {visible_root}/data.exr: 40000x40000 EXR data window: a side is over 16384 pixels"
    )
    assert refusal(storage_server, visible_root / "tail.png") == (
        f"frames[0].path: {visible_root}/tail.png: over 1024 MiB (the frame file size limit)"
    )
    job = submit(storage_server, [pb.Frame(path=str(visible_root / "good.exr"))])
    assert job.state == pb.JOB_STATE_QUEUED
    storage_server.stub().CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=10)


def test_a_fifo_swapped_in_gets_a_clear_error_and_the_server_serves_on_and_stops(
    redis_url: str, tmp_path: Path
) -> None:
    root = tmp_path.resolve()
    flip, regular, fifo = racing_folder(root)
    frames = [pb.Frame(path=str(flip), name=f"f{i}.png") for i in range(RACING_FRAMES)]
    with maskfarm_server(redis_url, "mffifo", "--storage-root", str(root)) as server:
        refusals = []
        with Flipper(flip, regular, fifo):
            for _ in range(RACING_SUBMITS):
                try:
                    job = submit(server, frames)
                    server.stub().CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=10)
                except grpc.RpcError as error:
                    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
                    refusals.append(error.details())
        assert refusals, "the FIFO was never met: the path did not flip while the server read it"
        assert all(f"{flip} is not a regular file" in details for details in refusals), refusals
        assert submit(server, [pb.Frame(path=str(regular))]).state == pb.JOB_STATE_QUEUED
        assert server.health() == 1  # SERVING
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) is not None


# -- the worker -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_jobs(storage_server: ServerProcess, hidden_root: Path, tiny_model_dir: Path) -> dict[str, list[pb.Job]]:
    """Jobs submitted while the server cannot see ``hidden_root``, then run by one
    worker that sees it, with small limits, while ``race/flip.png`` flips; each name's
    jobs once they have all ended."""
    root = hidden_root
    path = lambda name: pb.Frame(path=f"{root}/{name}")  # noqa: E731
    flip = root / "race" / "flip.png"
    racing = [pb.Frame(path=str(flip), name=f"f{i}.png") for i in range(RACING_FRAMES)]
    ids = {
        "display": [submit(storage_server, [path("display.exr")]).id],
        "data": [submit(storage_server, [path("data.exr")]).id],
        "tail": [submit(storage_server, [path("tail.png")]).id],
        "pillow": [submit(storage_server, [pb.Frame(data=encoded_image("PNG", (100, 100)), name="big.png")]).id],
        "unwritable": [
            submit(
                storage_server, [path("a.png"), path("b.png"), path("c.png")], keep_going=True, output_dir=f"{root}/out"
            ).id
        ],
        "racing": [submit(storage_server, racing).id],
        "racing_kept": [submit(storage_server, racing * (RACING_KEPT_FRAMES // RACING_FRAMES), keep_going=True).id],
    }
    root.mkdir()
    (root / "display.exr").write_bytes(rgb_exr(1, 1, display=(0, 0, 199, 199)))
    (root / "data.exr").write_bytes(rgb_exr(200, 200, display=(0, 0, 7, 7)))
    sparse_png(root / "tail.png", 64 << 20)
    for name in "abc":
        (root / f"{name}.png").write_bytes(PNG)
    (root / "out" / "a-red-car" / "b.png").mkdir(parents=True)
    flags = ("--storage-root", str(root), "--max-side", "64", "--max-pixels", "4096", "--max-frame-mib", "16")
    with Flipper(*racing_folder(root)), maskfarm_worker(storage_server, tiny_model_dir, "frame-files", *flags):
        wait_for(
            lambda: all(get(storage_server, i).state in TERMINAL for group in ids.values() for i in group),
            "the jobs to end",
            timeout=300,
        )
        ids["after"] = [submit(storage_server, [path("a.png")]).id]
        wait_for(lambda: get(storage_server, ids["after"][0]).state in TERMINAL, "the next job", timeout=120)
    return {name: [get(storage_server, i) for i in group] for name, group in ids.items()}


@pytest.mark.parametrize(
    "name, reason",
    [
        ("display", "display.exr: 200x200 EXR: a side is over 64 pixels"),
        ("data", "data.exr: 200x200 EXR data window: a side is over 64 pixels"),
        ("tail", "tail.png: over 16 MiB (the frame file size limit)"),
    ],
)
def test_the_worker_refuses_bomb_files_before_decoding_them(
    worker_jobs, hidden_root: Path, name: str, reason: str
) -> None:
    (job,) = worker_jobs[name]
    assert (job.state, job.error.code) == (pb.JOB_STATE_FAILED, pb.ERROR_CODE_INVALID_INPUT), job.error.message
    assert job.error.message.startswith("frames[0] (") and f"{hidden_root}/{reason}" in job.error.message


def test_the_workers_pillow_guard_follows_its_max_pixels(worker_jobs) -> None:
    """The worker sets Pillow's bomb guard from --max-pixels (4096: it refuses over twice
    that) as the server does from its own, so set alike they agree; here the server's
    default let a 100x100 frame through and the worker's smaller setting stops it."""
    (job,) = worker_jobs["pillow"]
    assert (job.state, job.error.code) == (pb.JOB_STATE_FAILED, pb.ERROR_CODE_INVALID_INPUT), job.error.message
    assert job.error.message.startswith(
        "frames[0] (big.png): cannot decode image: Image size (10000 pixels) exceeds limit of 8192 pixels"
    ), job.error.message


def test_a_fifo_swapped_in_fails_the_workers_frame_and_the_worker_serves_on(
    worker_jobs, storage_server: ServerProcess, hidden_root: Path
) -> None:
    not_regular = f"{hidden_root}/race/flip.png is not a regular file"
    (job,) = worker_jobs["racing"]
    assert (job.state, job.error.code) == (pb.JOB_STATE_FAILED, pb.ERROR_CODE_INVALID_INPUT), job.error.message
    assert not_regular in job.error.message, job.error.message
    (kept,) = worker_jobs["racing_kept"]
    assert kept.state == pb.JOB_STATE_SUCCEEDED and kept.progress.failed_frames > 0
    frames = storage_server.stub().GetJob(pb.GetJobRequest(job_id=kept.id, include_masks=True), timeout=10).frames
    assert len(frames) == RACING_KEPT_FRAMES and all(not_regular in f.error for f in frames if f.error)
    assert worker_jobs["after"][0].state == pb.JOB_STATE_SUCCEEDED


def test_keep_going_skips_a_frame_whose_masks_cannot_be_written(
    worker_jobs, storage_server: ServerProcess, hidden_root: Path
) -> None:
    (job,) = worker_jobs["unwritable"]
    assert (job.state, job.progress.done_frames, job.progress.failed_frames) == (pb.JOB_STATE_SUCCEEDED, 3, 1)
    frames = storage_server.stub().GetJob(pb.GetJobRequest(job_id=job.id, include_masks=True), timeout=10).frames
    assert [frame.error.startswith("frames[1] (b.png): its masks cannot be written") for frame in frames] == [
        False,
        True,
        False,
    ]
    assert [path.name for path in sorted((hidden_root / "out" / "a-red-car").iterdir())] == ["a.png", "b.png", "c.png"]
    assert (hidden_root / "out" / "a-red-car" / "b.png").is_dir()


# -- segment --local ------------------------------------------------------------------


def test_local_keep_going_skips_a_frame_whose_masks_cannot_be_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    frames = []
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(PNG)
        frames.append(str(tmp_path / name))
    out = tmp_path / "masks"
    (out / "car" / "b.png").mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "maskfarm.cli",
        "segment",
        *frames,
        "-p",
        "car",
        "--local",
        "--keep-going",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "-o",
        str(out),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 3, result.stderr
    assert "b.png: failed, skipped: its masks cannot be written" in result.stderr
    assert sorted(path.name for path in (out / "car").iterdir() if path.is_file()) == ["a.png", "c.png"]


# -- the read deadline ----------------------------------------------------------------


def test_a_read_that_never_returns_costs_the_caller_only_the_deadline() -> None:
    from maskfarm.core.frame_files import _READERS, READER_THREADS, FrameFileError

    release = threading.Event()
    try:
        for _ in range(READER_THREADS + 1):  # every reader stuck, and one more waiting in line
            with pytest.raises(FrameFileError, match=r"/mnt/hung/a\.png: not read within 0\.2 s"):
                _READERS.run(lambda: release.wait(120), 0.2, "/mnt/hung/a.png")
    finally:
        release.set()
    assert _READERS.run(lambda: "read", 30, "/mnt/a.png") == "read"
