"""``segment_files_locally`` (``--local``) with frames decoded ahead and masks written behind on
threads: the same files, callbacks and errors as the sequential path, and a bounded number
of frames held at once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskfarm.core.params import MaskParams
from maskfarm.worker import local
from maskfarm.worker.local import segment_files_locally
from maskfarm.worker.pipeline import Segmenter

PROMPTS = ["a cat", "a dog"]
SEQUENTIAL = {"read_ahead": 0, "write_threads": 1}


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir: Path) -> Segmenter:
    return Segmenter.load(str(tiny_model_dir), "cpu", max_batch=4)  # two frames per chunk


def frame_files(folder: Path, count: int, broken: tuple[int, ...] = ()) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for n in range(count):
        path = folder / f"shot.{1001 + n}.png"
        if n in broken:
            path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        else:
            Image.fromarray(rng.integers(0, 256, (30 + n, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("fmt", ["png", "png16", "npy"])
def test_overlapped_files_and_callbacks_are_the_sequential_ones(segmenter: Segmenter, tmp_path: Path, fmt: str):
    paths = frame_files(tmp_path / "frames", 9, broken=(4,))
    params = MaskParams(union=True, dilate=1)
    outcomes = []
    for name, options in (("sequential", SEQUENTIAL), ("overlapped", {"read_ahead": 2, "write_threads": 3})):
        events: list[tuple[str, str]] = []
        written = segment_files_locally(
            segmenter,
            paths,
            PROMPTS,
            tmp_path / name,
            params,
            fmt,
            keep_going=True,
            on_failed=lambda frame, error: events.append(("failed", frame)),
            on_done=lambda frame: events.append(("done", frame)),
            **options,
        )
        outcomes.append(([p.relative_to(tmp_path / name) for p in written], events, files(tmp_path / name)))
    assert outcomes[0] == outcomes[1]
    written, events, contents = outcomes[0]
    assert len(contents) == 8 * 3 and ("failed", "shot.1005.png") in events
    assert [frame for kind, frame in events if kind == "done"] == [p.name for n, p in enumerate(paths) if n != 4]


@pytest.mark.parametrize("options", [SEQUENTIAL, {"read_ahead": 3, "write_threads": 2}])
def test_a_bad_frame_stops_the_run_naming_its_file_after_the_frames_before(
    segmenter: Segmenter, tmp_path: Path, options: dict
):
    paths = frame_files(tmp_path / "frames", 6, broken=(3,))
    done: list[str] = []
    with pytest.raises(ValueError, match="shot.1004.png"):
        segment_files_locally(segmenter, paths, PROMPTS, tmp_path / "out", on_done=done.append, **options)
    assert done == ["shot.1001.png", "shot.1002.png", "shot.1003.png"]


def test_frames_held_at_once_stay_within_the_bound(segmenter: Segmenter, tmp_path: Path, monkeypatch):
    """Writes are slowed, so an unbounded reader would load every frame before the first
    masks are written; the bound is the read-ahead queue, the frame its thread holds, one
    model chunk (two with frame threads: the next one is in the model while one is given
    out), the frames being written, and one counted late."""
    paths = frame_files(tmp_path / "frames", 24)
    loaded, finished, most = [0], [0], [0]
    real_load, real_write = local._load, local.write_file

    def counted_load(*args):
        frame = real_load(*args)
        loaded[0] += 1
        most[0] = max(most[0], loaded[0] - finished[0])
        return frame

    def slow_write(path, data):
        time.sleep(0.01)
        return real_write(path, data)

    def counted_done(name: str) -> None:
        finished[0] += 1

    monkeypatch.setattr(local, "_load", counted_load)
    monkeypatch.setattr(local, "write_file", slow_write)
    read_ahead, write_threads = 2, 2
    chunk = segmenter.max_batch // len(PROMPTS) * (2 if segmenter.frame_threads > 1 else 1)
    segment_files_locally(
        segmenter,
        paths,
        PROMPTS,
        tmp_path / "out",
        on_done=counted_done,
        read_ahead=read_ahead,
        write_threads=write_threads,
    )
    assert finished[0] == 24
    assert most[0] <= read_ahead + 1 + chunk + write_threads + 1
