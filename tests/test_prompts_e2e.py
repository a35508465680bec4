"""Prompts beyond one phrase end to end: through ``maskfarm up`` (a private Redis, the
server and a worker on the tiny synthetic model) with the client library and the CLI, and
through ``maskfarm segment --local``; every mask against tests/reference.py.

The reference is fed maskfarm's own pixel values (their parity with the processor's is
test_pipeline's: random weights amplify the last grey level), then runs the plain model
call and the node's post-processing; a negative's reference mask is subtracted from its
positive's, an image prompt's comes from ``conditional_pixel_values``.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

from maskfarm.client.client import Client
from maskfarm.client.errors import InvalidRequest
from maskfarm.client.prompts import Prompt, image_prompt
from maskfarm.core.params import MaskParams
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.worker.frames import decode_frame, to_rgb_uint8
from maskfarm.worker.preprocess import PixelSpec, pixel_values
from tests.reference import reference_masks
from tests.test_client_e2e import maskfarm

JOB = MaskParams(smooth=0, blur=4)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return (
        CLIPSegForImageSegmentation.from_pretrained(tiny_model_dir).eval(),
        CLIPSegProcessor.from_pretrained(tiny_model_dir),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("prompt-frames")
    rng = np.random.default_rng(16)
    paths = {}
    for name, shape in (("shot.1001.png", (45, 70, 3)), ("shot.1002.png", (33, 20, 3)), ("red-car.png", (40, 40, 3))):
        paths[name] = folder / name
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[name])
    return paths


def values(model, path: Path) -> torch.Tensor:
    return pixel_values(
        [to_rgb_uint8(decode_frame(path.read_bytes()))],
        PixelSpec.from_processor(model[1]),
        torch.device("cpu"),
        torch.float32,
    )


def logits(model, frame: Path, condition: str | Path) -> torch.Tensor:
    plain, processor = model
    with torch.no_grad():
        if isinstance(condition, Path):
            return plain(pixel_values=values(model, frame), conditional_pixel_values=values(model, condition)).logits
        tokens = processor.tokenizer([condition], return_tensors="pt")
        return plain(pixel_values=values(model, frame), **tokens).logits


def reference(model, frame: Path, condition: str | Path, params: MaskParams = JOB) -> np.ndarray:
    size = np.asarray(Image.open(frame)).shape[:2]
    mask = reference_masks(
        logits(model, frame, condition),
        size,
        params.threshold,
        params.smooth,
        params.dilate,
        params.blur,
        soft=params.soft,
    )[0]
    return mask.clamp(0, 1).numpy()


def median(model, frames, condition) -> float:
    return float(torch.sigmoid(torch.cat([logits(model, frame, condition).flatten() for frame in frames])).median())


def assert_close(ours, expected) -> None:
    close = np.abs(np.asarray(ours, dtype=np.float32) - expected) <= 1e-4
    assert close.mean() >= 0.999, close.mean()


@pytest.fixture(scope="module")
def thresholds(model, files) -> dict[str, float]:
    frames = [files["shot.1001.png"], files["shot.1002.png"]]
    return {condition: round(median(model, frames, condition), 4) for condition in ("person", "sky", "car")}


def test_negatives_and_per_prompt_thresholds_through_the_service(cluster, model, files, thresholds):
    frames = [files["shot.1001.png"], files["shot.1002.png"]]
    person = MaskParams(threshold=thresholds["person"], smooth=0, blur=4)
    sky, car = (MaskParams(threshold=thresholds[name], smooth=0, blur=4) for name in ("sky", "car"))
    prompts = [
        Prompt("person", negatives=("shadow",), threshold=person.threshold),
        Prompt("sky", threshold=sky.threshold),
        Prompt("car", threshold=car.threshold),
    ]
    with Client(cluster.target, timeout=300) as client:
        results = client.segment(frames, prompts, format="float32", smooth=0, blur=4)
    for frame, result in zip(frames, results):
        assert len(result.masks) == 3
        positive = reference(model, frame, "person", person)
        expected = np.clip(positive - reference(model, frame, "shadow", person), 0, 1)
        assert np.abs(expected - positive).max() > 0.1, "the negative changes nothing: a weak test"
        assert_close(result.masks[0], expected)
        assert_close(result.masks[1], reference(model, frame, "sky", sky))
        assert_close(result.masks[2], reference(model, frame, "car", car))


def test_an_image_prompt_through_the_service(cluster, model, files):
    frames = [files["shot.1001.png"], files["shot.1002.png"]]
    threshold = round(median(model, frames, files["red-car.png"]), 4)
    params = MaskParams(threshold=threshold, smooth=0, blur=4)
    with Client(cluster.target, timeout=300) as client:
        results = client.segment(
            frames, [image_prompt(files["red-car.png"])], format="float32", threshold=threshold, smooth=0, blur=4
        )
    for frame, result in zip(frames, results):
        expected = reference(model, frame, files["red-car.png"], params)
        assert 0 < expected.mean() < 1, "an all-or-nothing mask: a weak test"
        assert_close(result.masks[0], expected)


@pytest.mark.parametrize("where", ["local", "service"])
def test_the_cli_subtracts_negatives_and_takes_per_prompt_thresholds(
    cluster, model, files, thresholds, tmp_path, where, tiny_model_dir
):
    frames = [files["shot.1001.png"], files["shot.1002.png"]]
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text(
        f"# one prompt a line\ncar --threshold {thresholds['car']}\n--image-prompt {files['red-car.png']} --not sky\n"
    )
    flags = [
        "-p",
        "person",
        "--not",
        "shadow",
        "--prompt-threshold",
        str(thresholds["person"]),
        "-p",
        "sky",
        "--prompt-threshold",
        str(thresholds["sky"]),
        "--prompts-file",
        str(prompts_file),
        "--smooth",
        "0",
        "--blur",
        "4",
        "--format",
        "npy",
        "-o",
        str(tmp_path / "out"),
    ]
    if where == "local":
        run = maskfarm(
            "segment", *map(str, frames), *flags, "--local", "--model", str(tiny_model_dir), "--device", "cpu"
        )
    else:
        run = maskfarm("segment", *map(str, frames), *flags, target=cluster.target)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["car", "person", "red-car", "sky"]
    for frame in frames:
        stem = frame.name.removesuffix(".png")
        read = lambda folder: np.load(tmp_path / "out" / folder / f"{stem}.npy")  # noqa: E731
        person = MaskParams(threshold=thresholds["person"], smooth=0, blur=4)
        expected = np.clip(reference(model, frame, "person", person) - reference(model, frame, "shadow", person), 0, 1)
        assert_close(read("person"), expected)
        sky = MaskParams(threshold=thresholds["sky"], smooth=0, blur=4)
        assert_close(read("sky"), reference(model, frame, "sky", sky))
        car = MaskParams(threshold=thresholds["car"], smooth=0, blur=4)
        assert_close(read("car"), reference(model, frame, "car", car))
        exemplar = np.clip(reference(model, frame, files["red-car.png"]) - reference(model, frame, "sky"), 0, 1)
        assert_close(read("red-car"), exemplar)


@pytest.mark.parametrize(
    "spec,field",
    [
        (pb.Prompt(text="person", negatives=[" "]), "prompt_specs[0].negatives[0]"),
        (pb.Prompt(text="sky", params=pb.MaskParams(threshold=1.5)), "prompt_specs[0].params.threshold"),
        (pb.Prompt(text="sky", params=pb.MaskParams(soft=True)), "prompt_specs[0].params.soft"),
        (pb.Prompt(image=pb.Frame(data=b"not an image", name="x.png")), "prompt_specs[0].image.data"),
        (pb.Prompt(), "prompt_specs[0]"),
    ],
)
def test_bad_prompt_specs_are_refused_naming_the_field(cluster, files, spec, field):
    frame = pb.Frame(data=files["shot.1001.png"].read_bytes(), name="shot.1001.png")
    channel = grpc.insecure_channel(cluster.target)
    from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

    with pytest.raises(grpc.RpcError) as raised:
        request = pb.SubmitJobRequest(frames=[frame], prompt_specs=[spec])
        pb_grpc.SegmentationStub(channel).SubmitJob(request, timeout=60)
    channel.close()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}:"), raised.value.details()


def test_a_client_refuses_one_prompt_given_alone():
    from maskfarm.client.job_options import JobOptions

    with pytest.raises(InvalidRequest, match="prompts"):
        JobOptions().request(Prompt("sky"))  # type: ignore[arg-type]


def test_an_image_prompt_on_shared_storage_is_read_by_the_worker(cluster, model, files):
    import shutil

    from maskfarm.client.frames import StoragePath

    exemplar = cluster.storage / "refs" / "red-car.png"
    exemplar.parent.mkdir(exist_ok=True)
    shutil.copy(files["red-car.png"], exemplar)
    frame = files["shot.1002.png"]
    params = MaskParams(threshold=round(median(model, [frame], files["red-car.png"]), 4), smooth=0, blur=4)
    with Client(cluster.target, timeout=300) as client:
        job = client.submit(
            [frame],
            [image_prompt(StoragePath(str(exemplar)))],
            format="float32",
            threshold=params.threshold,
            smooth=0,
            blur=4,
        )
        assert job.prompts == ("red-car",)
        result = client.segment(
            [frame],
            [image_prompt(StoragePath(str(exemplar)))],
            format="float32",
            threshold=params.threshold,
            smooth=0,
            blur=4,
        )[0]
        assert_close(result.masks[0], reference(model, frame, files["red-car.png"], params))
        with pytest.raises(InvalidRequest, match=r"prompt_specs\[0\]\.image\.path"):
            client.submit([frame], [image_prompt(StoragePath(str(files["red-car.png"])))])


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--not", "shadow", "-p", "person"], "--not belongs to a prompt"),
        (["-p", "sky", "--prompt-threshold", "2"], "sky: --prompt-threshold must be in [0, 1]"),
        (["--prompts-file", "{bad}"], "{bad}, line 2: give a text or --image-prompt IMAGE, exactly one"),
        (["--prompts-file", "{missing}"], "{missing}: No such file or directory"),
        (["--image-prompt", "{missing}"], "--image-prompt {missing}: No such file or directory"),
    ],
)
def test_bad_prompt_flags_are_refused_naming_them(files, tmp_path, flags, message):
    bad = tmp_path / "bad.txt"
    bad.write_text("sky\n--threshold 0.3\n")
    names = {"bad": str(bad), "missing": str(tmp_path / "missing.png")}
    run = maskfarm("segment", str(files["shot.1001.png"]), *(flag.format(**names) for flag in flags), "--local")
    assert run.returncode == 2, run.stderr
    assert message.format(**names) in run.stderr, run.stderr


def test_an_image_prompt_s_bytes_are_kept_beside_the_frames_not_in_the_job_record(server, files):
    """Every GetJob and ListJobs reads job records: an exemplar there would be read each time."""
    from redis import Redis

    from maskfarm.jobqueue.store import JobStore

    exemplar = files["red-car.png"].read_bytes()
    request = pb.SubmitJobRequest(
        frames=[pb.Frame(data=files["shot.1001.png"].read_bytes(), name="a.png")],
        prompt_specs=[pb.Prompt(image=pb.Frame(data=exemplar, name="red-car.png"))],
    )
    from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

    store = JobStore(Redis.from_url(server.redis_url), server.namespace)
    with server.channel() as channel:
        job = pb_grpc.SegmentationStub(channel).SubmitJob(request, timeout=60)
        try:
            assert list(job.prompts) == ["red-car"]
            record = store.redis.hgetall(store.keys.job(job.id))
            assert sum(len(value) for value in record.values()) < len(exemplar) / 2
            assert store.load_exemplar(job.id, 0) == exemplar
            assert store.get_job(job.id).prompt_specs[0].image.name == "red-car.png"
        finally:
            pb_grpc.SegmentationStub(channel).CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=60)


def test_a_job_shows_its_prompts_as_given(cluster, files):
    prompts = [
        "car",
        Prompt("person", negatives=("shadow", "cast shadow"), threshold=0.3, dilate=2),
        image_prompt(files["red-car.png"], negatives=("road",)),
    ]
    with Client(cluster.target, timeout=300) as client:
        job = client.submit([files["shot.1001.png"]], prompts)
        plain = client.submit([files["shot.1001.png"]], ["car", "sky"])
        fetched = client.get(job.id)
    assert fetched.prompts == ("car", "person", "red-car")
    assert fetched.prompt_specs[:2] == (Prompt("car"), prompts[1])
    assert fetched.prompt_specs[2].image.name == "red-car.png" and not fetched.prompt_specs[2].image.data
    assert plain.prompt_specs == ()
    status = maskfarm("status", job.id, target=cluster.target)
    assert status.returncode == 0, status.stderr
    described = "car, person (not shadow, cast shadow; threshold 0.3; dilate 2), image red-car.png (not road)"
    assert described in status.stdout, status.stdout
