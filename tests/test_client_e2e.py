"""End to end through ``maskfarm up`` (a private Redis, the server and one worker on the
tiny synthetic model), driven by the client library and the ``maskfarm`` command.

The service must write the very files ``maskfarm segment --local`` writes, byte for byte
(what --local writes is ``worker.local.segment_files_locally``, called here in-process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskfarm.client.client import Client
from maskfarm.client.errors import JobFailed
from maskfarm.client.frames import StoragePath
from maskfarm.client.jobs import Job
from maskfarm.client.masks import FrameResult
from tests.images import png_header_only
from tests.services import Cluster

PROMPTS = ["Red car", "sky"]


def maskfarm(*args: str, target: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MASKFARM_TARGET": target}
    return subprocess.run(
        [sys.executable, "-m", "maskfarm.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir: Path):
    """The pipeline as ``maskfarm segment --local`` loads it (whose files are those of
    ``worker.local.segment_files_locally``, as test_cli_local.py checks): loaded once here."""
    from maskfarm.worker.pipeline import Segmenter

    return Segmenter.load(str(tiny_model_dir), "cpu")


@pytest.fixture(scope="module")
def frame_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(11)
    paths = []
    for number, shape in ((1001, (45, 70, 3)), (1002, (45, 70, 3)), (1003, (30, 20))):
        path = folder / f"shot.{number}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_up_prints_the_target(cluster: Cluster) -> None:
    assert f"serving on {cluster.target}" in cluster.output.read_text()


@pytest.mark.parametrize("fmt", ["png", "png16", "npy"])
def test_the_service_writes_the_same_files_as_local(cluster: Cluster, frame_files, segmenter, tmp_path, fmt) -> None:
    from maskfarm.core.params import MaskParams
    from maskfarm.worker.local import segment_files_locally

    flags = ["-p", PROMPTS[0], "-p", PROMPTS[1], "--union", "--dilate", "2", "--format", fmt]
    frames = [str(path) for path in frame_files]
    service = maskfarm(
        "segment", *frames, *flags, "-o", str(tmp_path / "service"), "--label", "test=e2e", target=cluster.target
    )
    assert service.returncode == 0, service.stderr
    assert "3/3 frames succeeded" in service.stderr
    segment_files_locally(segmenter, frames, PROMPTS, tmp_path / "local", MaskParams(union=True, dilate=2), fmt)

    written = sorted(path.relative_to(tmp_path / "local") for path in (tmp_path / "local").rglob("*.*"))
    assert len(written) == 3 * 3
    assert sorted(path.relative_to(tmp_path / "service") for path in (tmp_path / "service").rglob("*.*")) == written
    for relative in written:
        assert (tmp_path / "service" / relative).read_bytes() == (tmp_path / "local" / relative).read_bytes(), relative


def test_up_gives_its_storage_root_to_the_server_and_the_workers(cluster: Cluster) -> None:
    frame = cluster.storage / "plates" / "shot.1001.png"
    frame.parent.mkdir()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(frame)
    with Client(cluster.target) as client:
        [masks] = client.segment([StoragePath(str(frame))], PROMPTS, output_dir=str(cluster.storage / "masks"))
    assert masks.name == "shot.1001.png" and masks.masks[0].shape == (20, 30)
    assert sorted(
        p.relative_to(cluster.storage / "masks").as_posix() for p in (cluster.storage / "masks").rglob("*.png")
    ) == ["red-car/shot.1001.png", "sky/shot.1001.png"]


def test_watch_delivers_every_frame_once_and_segment_reassembles_split_jobs(cluster: Cluster) -> None:
    rng = np.random.default_rng(5)
    frames = [(f"big.{n}.png", rng.integers(0, 256, (370, 370, 3), dtype=np.uint8)) for n in range(5)]
    with Client(cluster.target, max_message_mib=1) as client:
        job = client.submit(frames[:2], PROMPTS, format="float32")
        events = list(client.watch(job.id))
        late = list(client.watch(job.id))
        masks = client.segment(frames, PROMPTS, union=True, format="float32")
        images = client.segment(frames[:1], PROMPTS, union=True, as_pil=True)

    results = [event for event in events if isinstance(event, FrameResult)]
    assert sorted(result.index for result in results) == [0, 1]
    assert isinstance(events[0], Job) and events[-1].state.value == "SUCCEEDED"
    # A job watched after it ended: its terminal state, its frames, the terminal state again.
    assert sorted(event.index for event in late if isinstance(event, FrameResult)) == [0, 1]
    assert late[0].state.value == late[-1].state.value == "SUCCEEDED"
    assert [frame.index for frame in masks] == list(range(5))
    assert [frame.name for frame in masks] == [name for name, _ in frames]
    for frame in masks:
        assert len(frame.masks) == 2 and frame.union is not None
        assert all(mask.dtype == np.float32 and mask.shape == (370, 370) for mask in frame.masks)
        np.testing.assert_array_equal(frame.union, np.maximum(*frame.masks))
    for result in results:
        np.testing.assert_array_equal(result.decode().masks[0], masks[result.index].masks[0])
    assert images[0].masks[0].mode == "L" and images[0].union.size == (370, 370)


def test_a_failed_job_raises_job_failed_and_the_cli_exits_1(cluster: Cluster, tmp_path: Path) -> None:
    with Client(cluster.target) as client:
        with pytest.raises(JobFailed) as raised:
            client.segment([("broken.png", png_header_only(64, 48))], ["car"])
    assert raised.value.error_code == "INVALID_INPUT" and "broken.png" in raised.value.message

    broken = tmp_path / "broken.png"
    broken.write_bytes(png_header_only(64, 48))
    result = maskfarm("segment", str(broken), "-p", "car", "-o", str(tmp_path / "out"), target=cluster.target)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("maskfarm segment: job ")
    assert "INVALID_INPUT" in result.stderr.splitlines()[-1]


def test_status_jobs_and_workers_commands(cluster: Cluster, tiny_model_dir: Path) -> None:
    listed = maskfarm("jobs", "--label", "test=e2e", "--state", "succeeded", target=cluster.target)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["JOB", "STATE", "FRAMES", "CREATED", "LABELS"]
    assert len(rows) == 1 + 3 and all(" SUCCEEDED " in row and "test=e2e" in row for row in rows[1:])

    job_id = rows[1].split()[0]
    status = maskfarm("status", job_id, target=cluster.target)
    assert status.returncode == 0, status.stderr
    fields = dict(line.split(None, 1) for line in status.stdout.splitlines())
    assert fields["state"] == "SUCCEEDED" and fields["progress"] == "3/3 frames"
    assert fields["model"] == str(tiny_model_dir) and fields["device"] == "cpu" and fields["dtype"] == "float32"
    assert fields["finished"].endswith("UTC")

    workers = maskfarm("workers", target=cluster.target)
    assert workers.returncode == 0, workers.stderr
    assert len(workers.stdout.splitlines()) == 2 and " cpu " in workers.stdout

    unknown = maskfarm("status", "no-such-job", target=cluster.target)
    assert (unknown.returncode, unknown.stderr.strip()) == (
        2,
        "maskfarm status: no job 'no-such-job' (unknown or expired)",
    )


def test_up_stops_its_processes_on_sigterm(cluster: Cluster) -> None:
    with Client(cluster.target) as client:
        worker_pid = client.workers()[0].pid
    cluster.process.send_signal(signal.SIGTERM)
    assert cluster.process.wait(timeout=60) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
    health = maskfarm("health", "--timeout", "1", target=cluster.target)
    assert health.returncode == 1
