"""Shared storage: frames and output folders given by path, under the storage roots only.

The root checks in-process (``StorageRoots``, ``SharedStorage``); the server's refusals
through a real server process; and jobs end to end through real Redis, server and worker
processes: masks written as files under output_dir (atomically, with the configured
mode, the same bytes as a job that returns them), and the worker's own re-check catching
what changed on the storage after the server's check.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from maskfarm.core.storage import StoragePathError, StorageRoots
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image, png_header_only
from tests.services import ServerProcess, maskfarm_server, maskfarm_worker, wait_for

PROMPTS = ["a red car", "the sky"]
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
PNG = encoded_image("PNG", (40, 30), noise=True)


# -- the root checks ------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``tmp/root`` (the storage root) holding ``shots/a.png`` and a symlinked folder
    ``linked -> shots``, and ``tmp/outside/secret.png`` beside it."""
    root = tmp_path / "root"
    (root / "shots").mkdir(parents=True)
    (root / "shots" / "a.png").write_bytes(PNG)
    (root / "linked").symlink_to(root / "shots")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(PNG)
    return root


def refused(check, path: str) -> str:
    with pytest.raises(StoragePathError) as error:
        check(path)
    return str(error.value)


def test_a_path_inside_a_root_is_accepted_and_normalised(tree: Path) -> None:
    roots = StorageRoots((str(tree),))
    assert roots.frame_file(f"{tree}/shots/a.png") == f"{tree}/shots/a.png"
    assert roots.frame_file(f"{tree}//shots/./a.png") == f"{tree}/shots/a.png"


def test_a_symlinked_folder_inside_the_root_is_accepted(tree: Path) -> None:
    assert StorageRoots((str(tree),)).frame_file(f"{tree}/linked/a.png") == f"{tree}/linked/a.png"


def test_dot_dot_is_refused_even_when_it_stays_inside(tree: Path) -> None:
    roots = StorageRoots((str(tree),))
    assert "must not contain '..'" in refused(roots.frame_file, f"{tree}/shots/../shots/a.png")
    assert "must not contain '..'" in refused(roots.output_dir, f"{tree}/../outside")


def test_a_symlink_leading_outside_is_refused(tree: Path) -> None:
    (tree / "shots" / "escape.png").symlink_to(tree.parent / "outside" / "secret.png")
    (tree / "away").symlink_to(tree.parent / "outside")
    roots = StorageRoots((str(tree),))
    assert "leads outside the storage roots through a symlink" in refused(roots.frame_file, f"{tree}/shots/escape.png")
    assert "leads outside" in refused(roots.frame_file, f"{tree}/away/secret.png")
    assert "leads outside" in refused(roots.output_dir, f"{tree}/away/not/yet/made")


def test_relative_nul_outside_and_prefix_lookalike_paths_are_refused(tree: Path) -> None:
    roots = StorageRoots((str(tree),))
    assert "must be an absolute path" in refused(roots.frame_file, "shots/a.png")
    assert "NUL" in refused(roots.frame_file, f"{tree}/shots/a.png\0.jpg")
    assert "is not under a storage root" in refused(roots.frame_file, f"{tree.parent}/outside/secret.png")
    (tree.parent / "rootother").mkdir()
    assert "is not under a storage root" in refused(roots.output_dir, f"{tree}other/out")


def test_frames_must_be_existing_regular_files(tree: Path) -> None:
    roots = StorageRoots((str(tree),))
    assert "no such file" in refused(roots.frame_file, f"{tree}/shots/missing.png")
    assert "is not a regular file" in refused(roots.frame_file, f"{tree}/shots")
    assert roots.frame_file(f"{tree}/shots/missing.png", must_exist=False) == f"{tree}/shots/missing.png"


def test_an_output_dir_may_not_exist_yet_but_must_be_a_folder_if_it_does(tree: Path) -> None:
    roots = StorageRoots((str(tree),))
    assert roots.output_dir(f"{tree}/out/sq010/") == f"{tree}/out/sq010"
    assert roots.output_dir(f"{tree}/linked/masks") == f"{tree}/linked/masks"
    assert "not a directory" in refused(roots.output_dir, f"{tree}/shots/a.png")


def test_no_roots_refuses_everything_and_roots_parse_from_flags_and_variables(tree: Path) -> None:
    assert "not enabled" in refused(StorageRoots().check, f"{tree}/shots/a.png")
    assert StorageRoots.parse(f"/a{os.pathsep}/b/, /c").roots == ("/a", "/b", "/c")
    assert StorageRoots.parse(["/a", "/b:/c"]).roots == ("/a", "/b", "/c")
    with pytest.raises(ValueError, match="absolute"):
        StorageRoots.parse("relative/root")


def test_server_and_worker_settings_take_roots_from_flags_or_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from maskfarm.server.settings import ServerSettings
    from maskfarm.worker.settings import WorkerSettings

    def server_settings(*flags: str) -> ServerSettings:
        parser = argparse.ArgumentParser()
        ServerSettings.add_arguments(parser)
        return ServerSettings.from_args(parser.parse_args(list(flags)))

    monkeypatch.setenv("MASKFARM_STORAGE_ROOTS", f"/shows{os.pathsep}/scratch")
    assert server_settings().storage_roots == ("/shows", "/scratch")
    assert server_settings("--storage-root", "/a", "--storage-root", "/b").storage_roots == ("/a", "/b")
    monkeypatch.delenv("MASKFARM_STORAGE_ROOTS")
    assert not server_settings().storage
    with pytest.raises(ValueError, match="absolute"):
        server_settings("--storage-root", "relative")
    worker = WorkerSettings(storage_roots=["/shows"], output_mode=0o640)
    assert (worker.storage.roots.roots, worker.storage.mode) == (("/shows",), 0o640)
    with pytest.raises(ValueError, match="output mode"):
        WorkerSettings(output_mode=0o10000)


def test_the_worker_writes_whole_files_with_their_mode_and_reads_only_inside(tree: Path) -> None:
    from maskfarm.worker.shared_storage import SharedStorage

    storage = SharedStorage(StorageRoots((str(tree),)), mode=0o640)
    target = f"{tree}/out/red-car/a.png"
    assert storage.write_file(target, b"first") == target
    storage.write_file(target, b"second")
    assert Path(target).read_bytes() == b"second"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert os.listdir(f"{tree}/out/red-car") == ["a.png"]
    assert storage.read_frame(f"{tree}/linked/a.png") == PNG

    (tree / "out" / "away").symlink_to(tree.parent / "outside")
    with pytest.raises(StoragePathError, match="leads outside"):
        storage.write_file(f"{tree}/out/away/a.png", b"x")
    (tree / "shots" / "escape.png").symlink_to(tree.parent / "outside" / "secret.png")
    with pytest.raises(StoragePathError, match="leads outside"):
        storage.read_frame(f"{tree}/shots/escape.png")
    with pytest.raises(StoragePathError, match="not enabled on this worker"):
        SharedStorage().read_frame(f"{tree}/shots/a.png")


# -- the server's refusals ------------------------------------------------------------


@pytest.fixture(scope="module")
def storage_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The storage root of this module's server and worker: frames in ``shots/``."""
    root = tmp_path_factory.mktemp("storage").resolve()
    (root / "shots").mkdir()
    for i, size in enumerate([(40, 30), (24, 36), (33, 17)]):
        (root / "shots" / f"shot.{1001 + i}.png").write_bytes(encoded_image("PNG", size, noise=True))
    (root / "shots" / "notes.txt").write_text("not an image")
    (root / "shots" / "bomb.png").write_bytes(png_header_only(50_000, 50_000))
    (root / "away").symlink_to(root.parent)
    return root


@pytest.fixture(scope="module")
def storage_server(redis_url: str, storage_root: Path) -> Iterator[ServerProcess]:
    with maskfarm_server(redis_url, "mfstorage", "--storage-root", str(storage_root)) as server:
        yield server


def submit(server: ServerProcess, frames: list[pb.Frame], **fields) -> pb.Job:
    request = pb.SubmitJobRequest(frames=frames, prompts=PROMPTS, **fields)
    return server.stub().SubmitJob(request, timeout=10)


def refusal(server: ServerProcess, frames: list[pb.Frame], **fields) -> str:
    with pytest.raises(grpc.RpcError) as error:
        submit(server, frames, **fields)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return error.value.details()


def test_a_server_without_storage_roots_refuses_paths(server: ServerProcess, storage_root: Path) -> None:
    off = "shared storage is not enabled on this server (--storage-root)"
    frame = pb.Frame(path=f"{storage_root}/shots/shot.1001.png")
    assert refusal(server, [frame]) == f"frames[0].path: {off}"
    assert refusal(server, [pb.Frame(data=PNG, name="a.png")], output_dir=f"{storage_root}/out") == f"output_dir: {off}"


def test_the_server_refuses_bad_paths_naming_the_field(storage_server: ServerProcess, storage_root: Path) -> None:
    shots = f"{storage_root}/shots"
    good = pb.Frame(path=f"{shots}/shot.1001.png")
    cases = {
        "frames[1]: give data or path, not both": [good, pb.Frame(data=PNG, path=f"{shots}/shot.1002.png")],
        "frames[1].data: empty": [good, pb.Frame(name="nothing.png")],
        "frames[1].path: must be an absolute path": [good, pb.Frame(path="shots/shot.1002.png")],
        "frames[0].path: must not contain '..'": [pb.Frame(path=f"{shots}/../shots/shot.1001.png")],
        "frames[0].path: /etc/hostname is not under a storage root": [pb.Frame(path="/etc/hostname")],
        "frames[0].path: " + f"{storage_root}/away/x.png leads outside": [pb.Frame(path=f"{storage_root}/away/x.png")],
        "frames[0].path: " + f"{shots}/missing.png: no such file": [pb.Frame(path=f"{shots}/missing.png")],
        "frames[0].path: " + f"{shots} is not a regular file": [pb.Frame(path=shots)],
        "frames[0].path: " + f"{shots}/notes.txt: not an image": [pb.Frame(path=f"{shots}/notes.txt")],
        "frames[0].path: " + f"{shots}/bomb.png: 50000x50000 PNG": [pb.Frame(path=f"{shots}/bomb.png")],
        "frames[0].path: contains a NUL": [pb.Frame(path=f"{shots}/shot.1001.png\0")],
    }
    for message, frames in cases.items():
        assert message in refusal(storage_server, frames)


def test_the_server_refuses_bad_output_dirs_naming_the_field(storage_server: ServerProcess, storage_root: Path) -> None:
    frames = [pb.Frame(path=f"{storage_root}/shots/shot.1001.png")]
    cases = {
        "output_dir: must be an absolute path": "out",
        "output_dir: must not contain '..'": f"{storage_root}/../out",
        "output_dir: /tmp is not under a storage root": "/tmp",
        "leads outside": f"{storage_root}/away/out",
        "is not a directory": f"{storage_root}/shots/shot.1001.png",
    }
    for message, output_dir in cases.items():
        details = refusal(storage_server, frames, output_dir=output_dir)
        assert details.startswith("output_dir: ") and message in details, details
    unnamed = refusal(storage_server, [pb.Frame(data=PNG)], output_dir=f"{storage_root}/out")
    assert unnamed.startswith("frames[0].name: required with output_dir")
    twins = [frames[0], pb.Frame(data=PNG, name="shot.1001.jpg")]
    assert refusal(storage_server, twins, output_dir=f"{storage_root}/out").startswith(
        "frames[1].name: 'shot.1001.jpg' names the same mask files as frames[0]"
    )


def test_a_path_frame_is_named_after_its_file(storage_server: ServerProcess, storage_root: Path) -> None:
    job = submit(
        storage_server,
        [
            pb.Frame(path=f"{storage_root}/shots/shot.1001.png"),
            pb.Frame(path=f"{storage_root}/shots/shot.1002.png", name="given.png"),
        ],
    )
    assert list(job.frame_names) == ["shot.1001.png", "given.png"]
    storage_server.stub().CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=10)


# -- end to end -----------------------------------------------------------------------


@dataclass
class Outcome:
    jobs: dict[str, pb.GetJobResponse]
    segmented: list  # Client.segment's FrameMasks of the path frames, output_dir set
    cli: subprocess.CompletedProcess
    worker_log: str


def _get(server: ServerProcess, job_id: str) -> pb.GetJobResponse:
    return server.stub().GetJob(pb.GetJobRequest(job_id=job_id, include_masks=True), timeout=10)


@pytest.fixture(scope="module")
def outcome(storage_server: ServerProcess, storage_root: Path, tiny_model_dir: Path) -> Outcome:
    """Jobs submitted before the worker starts, then run by one worker that sees the
    storage (mode 0640); among them two whose frames change after the server's check."""
    from maskfarm.client.client import Client
    from maskfarm.client.frames import StoragePath

    shots = storage_root / "shots"
    names = ["shot.1001.png", "shot.1002.png", "shot.1003.png"]
    by_path = [pb.Frame(path=str(shots / name)) for name in names]
    by_bytes = [pb.Frame(data=(shots / name).read_bytes(), name=name) for name in names]
    union = pb.MaskParams(union_mask=True)
    soft = dict(format=pb.OUTPUT_FORMAT_FLOAT32, params=pb.MaskParams(soft=True))
    (shots / "late.png").write_bytes(PNG)
    (shots / "gone.png").write_bytes(PNG)
    ids = {
        "bytes": submit(storage_server, by_bytes, params=union).id,
        "files": submit(storage_server, by_path, params=union, output_dir=f"{storage_root}/out/png").id,
        "bytes32": submit(storage_server, by_bytes, **soft).id,
        "files32": submit(storage_server, by_path, output_dir=f"{storage_root}/out/f32", **soft).id,
        "escape": submit(storage_server, [by_path[0], pb.Frame(path=str(shots / "late.png"))]).id,
        "gone": submit(storage_server, [pb.Frame(path=str(shots / "gone.png"))]).id,
    }
    (shots / "late.png").unlink()
    (shots / "late.png").symlink_to(storage_root.parent / "elsewhere.png")
    (storage_root.parent / "elsewhere.png").write_bytes(PNG)
    (shots / "gone.png").unlink()

    flags = ("--storage-root", str(storage_root), "--output-mode", "0640")
    with maskfarm_worker(storage_server, tiny_model_dir, "storage-worker", *flags) as worker:
        wait_for(lambda: all(_get(storage_server, i).job.state in TERMINAL for i in ids.values()), "the jobs")
        with Client(storage_server.target) as client:
            segmented = client.segment(
                [StoragePath(shots / name) for name in names],
                PROMPTS,
                timeout=60,
                union=True,
                output_dir=str(storage_root / "out" / "client"),
            )
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "maskfarm.cli",
                "segment",
                *(str(shots / name) for name in names),
                "-p",
                PROMPTS[0],
                "-p",
                PROMPTS[1],
                "-o",
                str(storage_root / "out" / "cli"),
                "--shared-storage",
                "--target",
                storage_server.target,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        log = worker.output()
    return Outcome({name: _get(storage_server, job_id) for name, job_id in ids.items()}, segmented, cli, log)


def test_masks_are_written_as_files_identical_to_the_returned_bytes(outcome: Outcome, storage_root: Path) -> None:
    returned, written = outcome.jobs["bytes"], outcome.jobs["files"]
    assert written.job.state == pb.JOB_STATE_SUCCEEDED, written.job.error.message
    assert written.job.output_dir == f"{storage_root}/out/png"
    folders = ["a-red-car", "the-sky", "union"]
    for frame, reference in zip(written.frames, returned.frames):
        stem = frame.frame_name.removesuffix(".png")
        expected_paths = [f"{storage_root}/out/png/{folder}/{stem}.png" for folder in folders]
        assert [mask.path for mask in frame.masks] == expected_paths
        assert [mask.is_union for mask in frame.masks] == [False, False, True]
        assert all(not mask.data for mask in frame.masks)
        assert [Path(path).read_bytes() for path in expected_paths] == [mask.data for mask in reference.masks]
        assert [(m.width, m.height) for m in frame.masks] == [(m.width, m.height) for m in reference.masks]


def test_float32_masks_are_exact_npy_files(outcome: Outcome, storage_root: Path) -> None:
    returned, written = outcome.jobs["bytes32"], outcome.jobs["files32"]
    assert written.job.state == pb.JOB_STATE_SUCCEEDED, written.job.error.message
    for frame, reference in zip(written.frames, returned.frames):
        for mask, expected in zip(frame.masks, reference.masks):
            assert mask.path.endswith(".npy")
            values = np.load(mask.path)
            assert values.dtype == np.float32 and values.shape == (mask.height, mask.width)
            assert values.tobytes() == expected.data


def test_files_get_the_configured_mode_and_no_temporary_file_is_left(outcome: Outcome, storage_root: Path) -> None:
    files = [path for path in (storage_root / "out").rglob("*") if path.is_file()]
    assert len(files) == 3 * 3 + 3 * 2 + 3 * 3 + 3 * 2  # png (+ union), float32, Client.segment, the CLI
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o640 for path in files)
    assert not [path for path in files if path.name.startswith(".") or "partial" in path.name]


def test_client_segment_reads_the_masks_back_from_the_files(outcome: Outcome) -> None:
    reference = outcome.jobs["bytes"]
    assert [frame.name for frame in outcome.segmented] == ["shot.1001.png", "shot.1002.png", "shot.1003.png"]
    for masks, frame in zip(outcome.segmented, reference.frames):
        expected = [np.asarray(_png_values(mask.data), np.float32) / 255 for mask in frame.masks]
        assert all(np.array_equal(got, want) for got, want in zip([*masks.masks, masks.union], expected))


def test_the_cli_has_the_workers_write_the_masks_on_shared_storage(outcome: Outcome, storage_root: Path) -> None:
    assert outcome.cli.returncode == 0, outcome.cli.stderr
    for frame in outcome.jobs["files"].frames:
        for mask in frame.masks[:2]:
            written = Path(mask.path.replace("/out/png/", "/out/cli/"))
            assert written.read_bytes() == Path(mask.path).read_bytes()


def test_the_worker_rechecks_a_frame_that_became_an_escaping_symlink(outcome: Outcome) -> None:
    job = outcome.jobs["escape"].job
    assert job.state == pb.JOB_STATE_FAILED
    assert job.error.code == pb.ERROR_CODE_INVALID_INPUT
    assert "frames[1] (late.png)" in job.error.message and "leads outside" in job.error.message


def test_a_frame_the_worker_cannot_see_fails_its_job_and_the_worker_serves_on(outcome: Outcome) -> None:
    job = outcome.jobs["gone"].job
    assert (job.state, job.error.code) == (pb.JOB_STATE_FAILED, pb.ERROR_CODE_INVALID_INPUT)
    assert "frames[0] (gone.png)" in job.error.message and "no such file" in job.error.message
    assert outcome.jobs["files32"].job.state == pb.JOB_STATE_SUCCEEDED


def _png_values(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))
