"""``maskfarm segment`` over frame sequences, as real processes: in-process (``--local``)
and through the service (private Redis, ``maskfarm server``, one ``maskfarm worker`` on
the tiny synthetic model): patterns and frame lists, chunks of jobs, resuming,
``--overwrite`` and ``--keep-going``. The service must write the very files ``--local``
writes, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskfarm.client.client import Client
from maskfarm.client.errors import FrameRefused
from tests.images import png_header_only
from tests.services import ServerProcess, free_port, maskfarm_worker

PROMPTS = ["Red car", "sky"]
FRAMES = range(1001, 1011)


def maskfarm(*args: str, target: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MASKFARM_TARGET": target}
    return subprocess.run(
        [sys.executable, "-m", "maskfarm.cli", "segment", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def written(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def plates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shot.1001.png .. shot.1010.png, small random frames of two sizes."""
    folder = tmp_path_factory.mktemp("plates")
    rng = np.random.default_rng(3)
    for number in FRAMES:
        shape = (30, 44, 3) if number % 2 else (36, 28)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"shot.{number}.png")
    return folder


@pytest.fixture(scope="module")
def broken_plates(plates: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plates with shot.1005.png replaced by a PNG whose pixels do not decode (it passes
    the server's header check, so only the worker finds it broken)."""
    folder = tmp_path_factory.mktemp("broken")
    for path in plates.iterdir():
        shutil.copy(path, folder / path.name)
    (folder / "shot.1005.png").write_bytes(png_header_only(40, 30))
    return folder


@pytest.fixture(scope="module")
def unreadable_plates(plates: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plates with shot.1006.png replaced by bytes that are no image at all: the server
    refuses the frame (INVALID_ARGUMENT), so no worker ever sees it."""
    folder = tmp_path_factory.mktemp("unreadable")
    for path in plates.iterdir():
        shutil.copy(path, folder / path.name)
    (folder / "shot.1006.png").write_bytes(b"a text file that was saved as .png by mistake")
    return folder


@pytest.fixture(scope="module")
def local_masks(plates: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``segment --local`` writes for the plates (union, png)."""
    out = tmp_path_factory.mktemp("local") / "masks"
    result = maskfarm(
        str(plates / "shot.####.png"),
        "-p",
        PROMPTS[0],
        "-p",
        PROMPTS[1],
        "--union",
        "--local",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    return out


def local(*args: str, model: Path) -> subprocess.CompletedProcess:
    return maskfarm(*args, "--local", "--model", str(model), "--device", "cpu")


# --local


def test_local_masks_are_named_after_the_pattern(local_masks: Path) -> None:
    assert written(local_masks) == sorted(
        f"{folder}/shot.{n}.png" for folder in ("red-car", "sky", "union") for n in FRAMES
    )


def test_local_frame_list_resume_and_overwrite(
    plates: Path, tiny_model_dir: Path, local_masks: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    pattern = str(plates / "shot.%04d.png")
    first = local(pattern, "--frames", "1001-1005x2", "-p", PROMPTS[0], "-o", str(out), model=tiny_model_dir)
    assert first.returncode == 0, first.stderr
    assert written(out) == ["red-car/shot.1001.png", "red-car/shot.1003.png", "red-car/shot.1005.png"]
    assert "3/3 frames succeeded" in first.stderr

    (out / "red-car" / "shot.1003.png").unlink()
    (out / "red-car" / "shot.1005.png").write_bytes(b"stale")
    again = local(pattern, "--frames", "1001-1005x2", "-p", PROMPTS[0], "-o", str(out), model=tiny_model_dir)
    assert again.returncode == 0, again.stderr
    assert "2 of 3 frames skipped: their masks exist" in again.stderr and "1 masks written" in again.stderr
    assert (out / "red-car" / "shot.1003.png").read_bytes() == (local_masks / "red-car" / "shot.1003.png").read_bytes()
    assert (out / "red-car" / "shot.1005.png").read_bytes() == b"stale"

    redo = local(
        pattern, "--frames", "1001-1005x2", "-p", PROMPTS[0], "-o", str(out), "--overwrite", model=tiny_model_dir
    )
    assert redo.returncode == 0, redo.stderr
    assert "skipped" not in redo.stderr and "3 masks written" in redo.stderr
    assert (out / "red-car" / "shot.1005.png").read_bytes() == (local_masks / "red-car" / "shot.1005.png").read_bytes()


def test_local_keep_going_skips_a_corrupt_frame_and_exits_3(
    broken_plates: Path, tiny_model_dir: Path, local_masks: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    pattern = str(broken_plates / "shot.####.png")
    stopped = local(pattern, "-p", PROMPTS[0], "-p", PROMPTS[1], "--union", "-o", str(out), model=tiny_model_dir)
    assert stopped.returncode == 2
    assert "shot.1005.png" in stopped.stderr.splitlines()[-1]

    result = local(
        pattern, "-p", PROMPTS[0], "-p", PROMPTS[1], "--union", "-o", str(out), "--keep-going", model=tiny_model_dir
    )
    assert result.returncode == 3, result.stderr
    assert "maskfarm segment: shot.1005.png: failed, skipped: " in result.stderr
    assert result.stderr.splitlines()[-1] == "maskfarm segment: 1 frame failed and was skipped: shot.1005.png"
    assert written(out) == [name for name in written(local_masks) if "1005" not in name]
    for name in written(out):
        assert (out / name).read_bytes() == (local_masks / name).read_bytes(), name


def test_missing_frames_and_empty_patterns_are_usage_errors(plates: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "masks"
    missing = local(
        str(plates / "shot.####.png"), "--frames", "1009-1013", "-p", "car", "-o", str(out), model=tiny_model_dir
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("frames 1011-1013 missing (--keep-going skips them)")
    assert not out.exists()

    kept = local(
        str(plates / "shot.####.png"),
        "--frames",
        "1009-1013",
        "-p",
        "car",
        "-o",
        str(out),
        "--keep-going",
        model=tiny_model_dir,
    )
    assert kept.returncode == 3, kept.stderr
    assert written(out) == ["car/shot.1009.png", "car/shot.1010.png"]
    assert "frames 1011-1013 missing; skipped" in kept.stderr

    for argument, says in (("take.####.png", "no frames match"), ("*.exr", "no files match")):
        result = local(str(plates / argument), "-p", "car", "-o", str(out), model=tiny_model_dir)
        assert result.returncode == 2 and says in result.stderr, result.stderr
    bad_range = local(
        str(plates / "shot.####.png"), "--frames", "1010-1001", "-p", "car", "-o", str(out), model=tiny_model_dir
    )
    assert bad_range.returncode == 2 and "ends before it starts" in bad_range.stderr
    bad_chunk = maskfarm(str(plates / "shot.1001.png"), "-p", "car", "--chunk", "0")
    assert bad_chunk.returncode == 2 and "--chunk" in bad_chunk.stderr
    folder = local(str(plates), "-p", "car", "-o", str(out), model=tiny_model_dir)
    assert folder.returncode == 2
    assert f"{plates}: is a folder, not a frame: name its frames, e.g. '{plates}/*.png'" in folder.stderr


# through the service


@pytest.fixture(scope="module")
def worker(server: ServerProcess, tiny_model_dir: Path) -> Iterator[ServerProcess]:
    """One worker on the session's server, for this module's jobs."""
    with maskfarm_worker(server, tiny_model_dir, "sequence-worker") as process:
        yield server
        assert process.process.poll() is None, process.output()


def jobs_labelled(target: str, value: str) -> list:
    with Client(target) as client:
        return sorted(client.jobs(labels={"seq": value}), key=lambda job: job.frame_names[0])


def test_a_sequence_in_chunks_is_one_job_per_chunk_and_writes_what_local_writes(
    worker: ServerProcess, plates: Path, local_masks: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    flags = [
        str(plates / "shot.####.png"),
        "--frames",
        "1001-1010",
        "-p",
        PROMPTS[0],
        "-p",
        PROMPTS[1],
        "--union",
        "--chunk",
        "3",
        "--in-flight",
        "2",
        "-o",
        str(out),
        "--label",
        "seq=chunks",
    ]
    result = maskfarm(*flags, target=worker.target)
    assert result.returncode == 0, result.stderr
    assert "10/10 frames succeeded" in result.stderr and "30 masks written" in result.stderr

    jobs = jobs_labelled(worker.target, "chunks")
    assert [job.frame_names for job in jobs] == [
        tuple(f"shot.{n}.png" for n in chunk)
        for chunk in ((1001, 1002, 1003), (1004, 1005, 1006), (1007, 1008, 1009), (1010,))
    ]
    assert all(job.state.value == "SUCCEEDED" for job in jobs)
    assert written(out) == written(local_masks)
    for name in written(out):
        assert (out / name).read_bytes() == (local_masks / name).read_bytes(), name

    (out / "sky" / "shot.1008.png").unlink()
    (out / "union" / "shot.1002.png").unlink()
    resumed = maskfarm(*flags, target=worker.target)
    assert resumed.returncode == 0, resumed.stderr
    assert "8 of 10 frames skipped: their masks exist" in resumed.stderr
    assert "10/10 frames succeeded" in resumed.stderr
    again = jobs_labelled(worker.target, "chunks")
    assert len(again) == 5 and ("shot.1002.png", "shot.1008.png") in [job.frame_names for job in again]
    assert written(out) == written(local_masks)


def test_keep_going_through_the_service_skips_the_corrupt_frame(
    worker: ServerProcess, broken_plates: Path, local_masks: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    flags = [
        str(broken_plates / "shot.####.png"),
        "-p",
        PROMPTS[0],
        "-p",
        PROMPTS[1],
        "--union",
        "--chunk",
        "4",
        "-o",
        str(out),
    ]
    result = maskfarm(*flags, "--keep-going", "--label", "seq=keep-going", target=worker.target)
    assert result.returncode == 3, result.stderr
    assert "maskfarm segment: shot.1005.png: failed, skipped: frames[0] (shot.1005.png)" in result.stderr
    assert "10/10 frames done, 1 failed" in result.stderr
    assert result.stderr.splitlines()[-1] == "maskfarm segment: 1 frame failed and was skipped: shot.1005.png"
    assert written(out) == [name for name in written(local_masks) if "1005" not in name]
    for name in written(out):
        assert (out / name).read_bytes() == (local_masks / name).read_bytes(), name

    jobs = jobs_labelled(worker.target, "keep-going")
    assert [(job.state.value, job.total, job.done, job.failed, job.keep_going) for job in jobs] == [
        ("SUCCEEDED", 4, 4, 0, True),
        ("SUCCEEDED", 4, 4, 1, True),
        ("SUCCEEDED", 2, 2, 0, True),
    ]
    with Client(worker.target) as client:
        results = list(client.results(jobs[1].id))
    assert [(r.index, r.name, bool(r.error), len(r.masks)) for r in results] == [
        (0, "shot.1005.png", True, 0),
        (1, "shot.1006.png", False, 3),
        (2, "shot.1007.png", False, 3),
        (3, "shot.1008.png", False, 3),
    ]

    stopped = maskfarm(*flags, "--overwrite", "--label", "seq=stops", target=worker.target)
    assert stopped.returncode == 1
    assert "INVALID_INPUT" in stopped.stderr.splitlines()[-1] and "shot.1005.png" in stopped.stderr.splitlines()[-1]
    failed = [job for job in jobs_labelled(worker.target, "stops") if job.state.value == "FAILED"]
    assert len(failed) == 1 and failed[0].frame_names[0] == "shot.1005.png" and failed[0].failed == 0


def test_keep_going_through_the_service_skips_a_frame_the_server_refuses(
    worker: ServerProcess, unreadable_plates: Path, local_masks: Path, tmp_path: Path
) -> None:
    out = tmp_path / "masks"
    flags = [
        str(unreadable_plates / "shot.####.png"),
        "-p",
        PROMPTS[0],
        "-p",
        PROMPTS[1],
        "--union",
        "--chunk",
        "4",
        "-o",
        str(out),
    ]
    result = maskfarm(*flags, "--keep-going", target=worker.target)
    assert result.returncode == 3, result.stderr
    assert "maskfarm segment: shot.1006.png: failed, skipped: not an image in a supported format" in result.stderr
    assert "10/10 frames done, 1 failed" in result.stderr
    assert result.stderr.splitlines()[-1] == "maskfarm segment: 1 frame failed and was skipped: shot.1006.png"
    assert written(out) == [name for name in written(local_masks) if "1006" not in name]
    for name in written(out):
        assert (out / name).read_bytes() == (local_masks / name).read_bytes(), name

    stopped = maskfarm(*flags, "--overwrite", target=worker.target)
    assert stopped.returncode == 2
    assert stopped.stderr.splitlines()[-1].startswith("maskfarm segment: shot.1006.png: not an image in a supported")
    assert stopped.stderr.splitlines()[-1].endswith("(--keep-going skips such frames)")
    assert "frames[" not in stopped.stderr


def test_client_segment_keep_going_returns_failed_frames_in_place(worker: ServerProcess, plates: Path) -> None:
    frames = [plates / "shot.1001.png", ("broken.png", png_header_only(40, 30)), plates / "shot.1002.png"]
    with Client(worker.target) as client:
        masks = client.segment(frames, PROMPTS, keep_going=True)
    assert [(frame.index, frame.name, frame.failed, len(frame.masks)) for frame in masks] == [
        (0, "shot.1001.png", False, 2),
        (1, "broken.png", True, 0),
        (2, "shot.1002.png", False, 2),
    ]
    assert "frames[1] (broken.png)" in masks[1].error


def test_client_segment_keep_going_returns_refused_frames_in_place(worker: ServerProcess, plates: Path) -> None:
    frames = [plates / "shot.1001.png", ("junk.png", b"not an image"), plates / "shot.1002.png"]
    with Client(worker.target) as client:
        masks = client.segment(frames, PROMPTS, keep_going=True)
        with pytest.raises(FrameRefused, match=r"^INVALID_ARGUMENT: junk\.png: not an image") as raised:
            client.segment(frames, PROMPTS)
    assert [(frame.index, frame.name, frame.failed, len(frame.masks)) for frame in masks] == [
        (0, "shot.1001.png", False, 2),
        (1, "junk.png", True, 0),
        (2, "shot.1002.png", False, 2),
    ]
    assert masks[1].error.startswith("not an image in a supported format")
    assert raised.value.frame_index == 1


def test_a_server_that_cannot_be_reached_gets_a_hint(plates: Path, tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    frame = str(plates / "shot.1001.png")
    for args in (("jobs",), ("status", "0123456789abcdef"), ("segment", frame, "-p", "car", "-o", str(tmp_path))):
        result = subprocess.run(
            [sys.executable, "-m", "maskfarm.cli", *args, "--target", nowhere],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            timeout=120,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines()[-1] == (
            f"maskfarm {args[0]}: is a maskfarm server running at {nowhere}? Start one with `maskfarm up`, "
            "or point --target (or MASKFARM_TARGET) at yours"
        )


def test_output_into_a_closed_pipe_ends_quietly(worker: ServerProcess, plates: Path) -> None:
    """``maskfarm status JOB | head -1``: the reader goes before the command writes."""
    with Client(worker.target) as client:
        job = client.submit([plates / "shot.1001.png"], ["car"])
    for args in (("status", job.id), ("jobs",), ("workers",)):
        command = [sys.executable, "-m", "maskfarm.cli", *args, "--target", worker.target]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        process.stdout.close()
        stderr = process.stderr.read()
        assert process.wait(timeout=120) == 141, stderr
        assert stderr == b"", stderr
