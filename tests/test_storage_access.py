"""Shared storage separated by owner, and masks that never replace their job's frames.

The token file's ``storage`` lines and the checks in-process; then a real server with two
token holders and a storage root, and a real worker: each owner reads and writes only
under its own roots (NOT_FOUND / PERMISSION_DENIED naming the field and the path), the
worker refusing again what changed on the storage after the server's check; and a job
whose output_dir and prompt name its own plates is refused at the server, and by the
worker when the collision appears later (the plates left whole).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from maskfarm.core.jobs import OutputFormat
from maskfarm.core.mask_files import InputFrames, InputOverwrite
from maskfarm.core.storage import StoragePathError
from maskfarm.core.storage_access import NotReadable, NotWritable, StorageAccess
from maskfarm.server.tokens import TokenFile, parse_storage_rules
from maskfarm.v1 import segmentation_pb2 as pb
from tests.images import encoded_image
from tests.services import ServerProcess, maskfarm_server, maskfarm_worker, wait_for

ALICE = "alice-token-" + uuid.uuid4().hex
BOB = "bob-token-" + uuid.uuid4().hex
CAROL = "carol-token-" + uuid.uuid4().hex
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


def png(seed: int) -> bytes:
    return encoded_image("PNG", (24 + seed, 20), noise=True)


# -- the rules, in-process -------------------------------------------------------------


def test_storage_lines_give_each_owner_its_roots_and_bad_lines_take_access_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "\n".join(
        [
            f"{ALICE} alice",
            "storage alice read /shows/library /shows/ref  # reference plates",
            "storage alice write /shows/alice/",
            "storage bob write shows/bob",  # relative: skipped
            "storage carol rw /shows",  # neither read nor write: skipped
        ]
    )
    with caplog.at_level(logging.WARNING):
        rules = parse_storage_rules(text, "tokens")
    assert rules == {"alice": StorageAccess(read=("/shows/library", "/shows/ref"), write=("/shows/alice",))}
    assert "tokens line 4 skipped: a root must be an absolute path" in caplog.text
    assert "tokens line 5 skipped: expected 'storage NAME read|write" in caplog.text
    assert parse_storage_rules(f"{ALICE} alice\n# storage alice read /x\n") is None
    assert parse_storage_rules(f"{ALICE} alice\nstorage alice read-write /x\n") == {}  # rules on: no roots


def test_the_token_file_answers_each_callers_roots(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{ALICE} alice\n{BOB} bob\n")
    assert TokenFile(path).storage_access("alice") is None  # no rules: the storage roots for all
    path.write_text(f"{ALICE} alice\n{BOB} bob\nstorage alice write /shows/alice\n")
    tokens = TokenFile(path)
    assert tokens.name_of(ALICE) == "alice" and tokens.name_of("storage") is None
    assert tokens.storage_access("alice") == StorageAccess(write=("/shows/alice",))
    assert tokens.storage_access("bob") == StorageAccess()  # rules on, none for bob: nothing


def test_an_owner_reads_under_its_read_and_write_roots_and_writes_under_its_write_roots(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()
    (tmp_path / "alice" / "to-bob").symlink_to(tmp_path / "bob")
    access = StorageAccess(read=(f"{tmp_path}/library",), write=(f"{tmp_path}/alice",))
    assert access.check_read(f"{tmp_path}/library/a.png") == f"{tmp_path}/library/a.png"
    assert access.check_read(f"{tmp_path}/alice//out/a.png") == f"{tmp_path}/alice/out/a.png"
    assert access.check_write(f"{tmp_path}/alice/out") == f"{tmp_path}/alice/out"
    with pytest.raises(NotReadable, match="you may not read there: .*/bob/a.png is not under"):
        access.check_read(f"{tmp_path}/bob/a.png")
    with pytest.raises(NotReadable, match="through a symlink"):
        access.check_read(f"{tmp_path}/alice/to-bob/a.png")
    with pytest.raises(NotWritable, match="you may not write there"):
        access.check_write(f"{tmp_path}/library/out")
    with pytest.raises(NotWritable, match="you may write no storage root"):
        StorageAccess(read=(f"{tmp_path}/library",)).check_write(f"{tmp_path}/library")
    with pytest.raises(StoragePathError, match="must not contain '..'") as malformed:
        access.check_read(f"{tmp_path}/alice/../bob/a.png")
    assert not isinstance(malformed.value, NotReadable)  # malformed: INVALID_ARGUMENT, not a refusal


def test_a_mask_file_that_is_one_of_the_frames_is_found_by_name_or_through_symlinks(tmp_path: Path) -> None:
    plates = tmp_path / "sh010" / "plates"
    plates.mkdir(parents=True)
    (plates / "sh010.1001.png").write_bytes(png(0))
    (tmp_path / "linked").symlink_to(tmp_path / "sh010")
    frames = InputFrames(["", f"{plates}/sh010.1001.png"])  # a frame sent as bytes has no file
    with pytest.raises(InputOverwrite, match=r"plates/sh010.1001.png would replace the job's input frames\[1\]"):
        frames.check(f"{tmp_path}/sh010", ["a-car", "plates"], ["x.exr", "sh010.1001.png"], OutputFormat.PNG8)
    with pytest.raises(InputOverwrite):  # the same folder through a symlink
        frames.check(f"{tmp_path}/linked", ["plates"], ["sh010.1001.exr"], OutputFormat.PNG8)
    frames.check(f"{tmp_path}/sh010", ["plates"], ["sh010.1001.png"], OutputFormat.FLOAT32)  # .npy: another file
    frames.check(f"{tmp_path}/sh010", ["plates-2"], ["sh010.1001.png"], OutputFormat.PNG8)
    unseen = InputFrames(["/not/here/plates/a.png"])  # storage this host does not see: by path
    with pytest.raises(InputOverwrite):
        unseen.check("/not/here", ["plates"], ["a.tif"], OutputFormat.PNG8)


def test_a_mask_folder_that_is_the_plates_folder_mounted_elsewhere_is_found(tmp_path: Path) -> None:
    """A bind mount: another path to the same folder that no symlink resolution sees
    (same device and inode). Run in a user and mount namespace of its own."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no unshare, or user namespaces are not allowed here")
    plates, mounted = tmp_path / "sh010" / "plates", tmp_path / "v2" / "plates"
    plates.mkdir(parents=True)
    mounted.mkdir(parents=True)
    (plates / "sh010.1001.png").write_bytes(png(0))
    script = "\n".join(
        [
            "import subprocess",
            "from maskfarm.core.jobs import OutputFormat",
            "from maskfarm.core.mask_files import InputFrames, InputOverwrite",
            f"subprocess.run(['mount', '--bind', {str(plates)!r}, {str(mounted)!r}], check=True)",
            "try:",
            f"    InputFrames([{str(plates / 'sh010.1001.png')!r}]).check({str(mounted.parent)!r}, ['plates'],",
            "                                                           ['sh010.1001.png'], OutputFormat.PNG8)",
            "except InputOverwrite as error:",
            "    print('refused:', error)",
        ]
    )
    run = subprocess.run(["unshare", "-rm", sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"refused: the mask file {mounted}/sh010.1001.png would replace the job's input frames[0]" in run.stdout


# -- a server with two owners, and a worker ---------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The storage root: ``alice/`` and ``bob/`` (each owner's write root), each with a
    shot's plates, and ``library/`` that alice may only read."""
    root = tmp_path_factory.mktemp("owned").resolve()
    for seed, owner in enumerate(["alice", "bob"]):
        plates = root / owner / "sh010" / "plates"
        plates.mkdir(parents=True)
        for frame in (1001, 1002):
            (plates / f"sh010.{frame}.png").write_bytes(png(seed * 10 + frame - 1000))
    (root / "library").mkdir()
    (root / "library" / "ref.png").write_bytes(png(7))
    return root


@pytest.fixture(scope="module")
def owned_server(redis_url: str, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tokens = tmp_path_factory.mktemp("owned-tokens") / "tokens"
    tokens.write_text(
        "\n".join(
            [
                f"{ALICE} alice",
                f"{BOB} bob",
                f"{CAROL} carol",
                f"storage alice read {root}/library",
                f"storage alice write {root}/alice",
                f"storage bob write {root}/bob",
            ]
        )
        + "\n"
    )
    namespace = "mfowned" + uuid.uuid4().hex[:6]
    with maskfarm_server(redis_url, namespace, "--auth-tokens", str(tokens), "--storage-root", str(root)) as server:
        yield server


def submit(server: ServerProcess, token: str, frames: list[str], prompts: list[str], **fields) -> pb.Job:
    request = pb.SubmitJobRequest(frames=[pb.Frame(path=path) for path in frames], prompts=prompts, **fields)
    return server.stub().SubmitJob(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)


def refusal(server: ServerProcess, token: str, frames: list[str], prompts: list[str], **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        submit(server, token, frames, prompts, **fields)
    return error.value


def test_an_owner_cannot_read_another_owners_frames_whether_or_not_they_exist(
    owned_server: ServerProcess, root: Path
) -> None:
    mine = f"{root}/alice/sh010/plates/sh010.1001.png"
    answers = {}
    for path in (f"{root}/bob/sh010/plates/sh010.1001.png", f"{root}/bob/sh010/plates/missing.png"):
        error = refusal(owned_server, ALICE, [mine, path], ["car"])
        assert error.code() is grpc.StatusCode.NOT_FOUND, error.details()
        assert error.details().startswith(f"frames[1].path: you may not read there: {path} is not under")
        answers[path] = error.details().replace(path, "PATH")
    assert len(set(answers.values())) == 1  # the same answer: nothing learnt about bob's files
    error = refusal(owned_server, CAROL, [f"{root}/library/ref.png"], ["car"])  # no storage lines: no roots
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details().startswith(f"frames[0].path: {root}/library/ref.png: you may read no storage root")


def test_an_owner_cannot_write_into_another_owners_or_a_read_only_root(owned_server: ServerProcess, root: Path) -> None:
    frames = [f"{root}/alice/sh010/plates/sh010.1001.png"]
    for output_dir in (f"{root}/bob/masks", f"{root}/library/masks", str(root)):
        error = refusal(owned_server, ALICE, frames, ["car"], output_dir=output_dir)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert error.details().startswith(f"output_dir: you may not write there: {output_dir} is not under")
    long = f"{root}/bob/" + "x" * 5000
    error = refusal(owned_server, ALICE, frames, ["car"], output_dir=long)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert long[:100] in error.details() and len(error.details()) < 600  # the path cut, not echoed whole
    malformed = refusal(owned_server, ALICE, frames, ["car"], output_dir=f"{root}/alice/../bob")
    assert malformed.code() is grpc.StatusCode.INVALID_ARGUMENT  # malformed is malformed, whoever asks


def test_a_job_writing_over_its_own_plates_is_refused_at_the_server(owned_server: ServerProcess, root: Path) -> None:
    shot = f"{root}/alice/sh010"
    frames = [f"{shot}/plates/sh010.1001.png", f"{shot}/plates/sh010.1002.png"]
    error = refusal(owned_server, ALICE, frames, ["car", "plates"], output_dir=shot)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        f"output_dir: the mask file {shot}/plates/sh010.1001.png would replace the job's "
        f"input frames[0] ({shot}/plates/sh010.1001.png)"
    )
    submit(owned_server, ALICE, frames, ["car", "plates"], output_dir=shot, format=pb.OUTPUT_FORMAT_FLOAT32)


@pytest.fixture(scope="module")
def unruled_server(redis_url: str, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Tokens without ``storage`` lines: every caller has the whole storage root, as
    before per-owner rules existed."""
    tokens = tmp_path_factory.mktemp("unruled-tokens") / "tokens"
    tokens.write_text(f"{ALICE} alice\n{BOB} bob\n")
    namespace = "mfunruled" + uuid.uuid4().hex[:6]
    with maskfarm_server(redis_url, namespace, "--auth-tokens", str(tokens), "--storage-root", str(root)) as server:
        yield server


def test_without_storage_lines_every_caller_has_the_storage_roots_but_never_over_its_plates(
    unruled_server: ServerProcess, root: Path
) -> None:
    bobs = f"{root}/bob/sh010"
    job = submit(unruled_server, ALICE, [f"{bobs}/plates/sh010.1001.png"], ["car"], output_dir=f"{bobs}/alice")
    unruled_server.stub().CancelJob(
        pb.CancelJobRequest(job_id=job.id), metadata=(("authorization", f"Bearer {ALICE}"),), timeout=10
    )
    error = refusal(unruled_server, ALICE, [f"{bobs}/plates/sh010.1001.png"], ["plates"], output_dir=bobs)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"output_dir: the mask file {bobs}/plates/sh010.1001.png would replace")


@dataclass
class Outcome:
    jobs: dict[str, pb.Job]
    worker_log: str


@pytest.fixture(scope="module")
def outcome(owned_server: ServerProcess, root: Path, tiny_model_dir: Path) -> Outcome:
    """Jobs the server accepted, then run by one worker after the storage changed under
    some of them: a folder or frame of alice's replaced by a symlink into bob's, and an
    output folder replaced by a symlink onto the plates' shot."""
    alice, bob = root / "alice", root / "bob"
    plates = f"{alice}/sh010/plates"
    (alice / "late.png").write_bytes(png(3))
    (alice / "other").mkdir()
    (alice / "other" / "sh010.1003.png").write_bytes(png(4))
    jobs = {
        "alice": submit(
            owned_server,
            ALICE,
            [f"{plates}/sh010.1001.png", f"{root}/library/ref.png"],
            ["car", "sky"],
            output_dir=f"{alice}/masks",
        ),
        "bob": submit(owned_server, BOB, [f"{bob}/sh010/plates/sh010.1001.png"], ["car"], output_dir=f"{bob}/masks"),
        "write_escape": submit(owned_server, ALICE, [f"{plates}/sh010.1002.png"], ["car"], output_dir=f"{alice}/out"),
        "read_escape": submit(owned_server, ALICE, [f"{alice}/late.png"], ["car"]),
        "over_plates": submit(owned_server, ALICE, [f"{plates}/sh010.1001.png"], ["plates"], output_dir=f"{alice}/v2"),
        "keep_going": submit(
            owned_server,
            ALICE,
            [f"{plates}/sh010.1002.png", f"{alice}/other/sh010.1003.png"],
            ["plates"],
            output_dir=f"{alice}/v3",
            keep_going=True,
        ),
    }
    (alice / "out").symlink_to(bob)
    (alice / "late.png").unlink()
    (alice / "late.png").symlink_to(bob / "sh010" / "plates" / "sh010.1002.png")
    (alice / "v2").symlink_to(alice / "sh010")
    (alice / "v3").symlink_to(alice / "sh010")

    def ended() -> dict[str, pb.Job] | None:
        now = {name: get(owned_server, job.id, token=BOB if name == "bob" else ALICE) for name, job in jobs.items()}
        return now if all(job.state in TERMINAL for job in now.values()) else None

    with maskfarm_worker(owned_server, tiny_model_dir, "owned-worker", "--storage-root", str(root)) as worker:
        finished = wait_for(ended, "the jobs", timeout=120)
        log = worker.output()
    return Outcome(finished, log)


def get(server: ServerProcess, job_id: str, token: str) -> pb.Job:
    reply = server.stub().GetJob(
        pb.GetJobRequest(job_id=job_id), metadata=(("authorization", f"Bearer {token}"),), timeout=10
    )
    return reply.job


def test_both_owners_legitimate_jobs_write_their_masks(outcome: Outcome, root: Path) -> None:
    for owner, files in {"alice": ["car/sh010.1001.png", "sky/ref.png"], "bob": ["car/sh010.1001.png"]}.items():
        job = outcome.jobs[owner]
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.error.message
        assert all((root / owner / "masks" / name).is_file() for name in files)


def test_the_worker_refuses_a_folder_that_now_leads_into_another_owners_root(outcome: Outcome, root: Path) -> None:
    job = outcome.jobs["write_escape"]
    assert (job.state, job.error.code) == (pb.JOB_STATE_FAILED, pb.ERROR_CODE_INVALID_INPUT)
    assert "frames[0] (sh010.1002.png): its masks cannot be written: you may not write there" in job.error.message
    assert not (root / "bob" / "car").exists()


def test_the_worker_refuses_a_frame_that_now_leads_into_another_owners_root(outcome: Outcome) -> None:
    job = outcome.jobs["read_escape"]
    assert (job.state, job.error.code) == (pb.JOB_STATE_FAILED, pb.ERROR_CODE_INVALID_INPUT)
    assert "frames[0] (late.png): you may not read there" in job.error.message


def test_the_worker_never_writes_a_mask_over_the_jobs_own_plate(outcome: Outcome, root: Path) -> None:
    plates = root / "alice" / "sh010" / "plates"
    job = outcome.jobs["over_plates"]
    assert (job.state, job.error.code) == (pb.JOB_STATE_FAILED, pb.ERROR_CODE_INVALID_INPUT)
    assert f"would replace the job's input frames[0] ({plates}/sh010.1001.png)" in job.error.message
    assert (plates / "sh010.1001.png").read_bytes() == png(1)
    assert (plates / "sh010.1002.png").read_bytes() == png(2)


def test_under_keep_going_the_colliding_frame_is_skipped_and_the_rest_written(outcome: Outcome, root: Path) -> None:
    job = outcome.jobs["keep_going"]
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error.message
    assert (job.progress.done_frames, job.progress.failed_frames) == (2, 1)
    plates = root / "alice" / "sh010" / "plates"
    assert (plates / "sh010.1002.png").read_bytes() == png(2)
    assert (plates / "sh010.1003.png").is_file()  # frame 1's mask, beside the plates it spares


def test_the_client_library_names_a_refused_path_as_such_not_as_a_missing_job(
    owned_server: ServerProcess, root: Path
) -> None:
    from maskfarm.client.client import Client
    from maskfarm.client.errors import JobNotFound, StorageDenied
    from maskfarm.client.frames import StoragePath

    with Client(owned_server.target, token=ALICE) as client:
        mine = StoragePath(f"{root}/alice/sh010/plates/sh010.1001.png")
        with pytest.raises(StorageDenied) as reading:
            client.submit([mine, StoragePath(f"{root}/bob/sh010/plates/sh010.1001.png")], ["car"])
        assert reading.value.code == "NOT_FOUND" and not isinstance(reading.value, JobNotFound)
        assert "frames[1].path: you may not read there" in reading.value.details
        with pytest.raises(StorageDenied) as writing:
            client.submit([mine], ["car"], output_dir=f"{root}/bob/masks")
        assert writing.value.code == "PERMISSION_DENIED"
        with pytest.raises(JobNotFound):
            client.get("0" * 32)
