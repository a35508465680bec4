"""``maskfarm segment --local`` and ``maskfarm model synthetic``, run as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskfarm.core.outputs import mask_path, prompt_folders, quantise, read_mask
from maskfarm.core.params import MaskParams
from maskfarm.worker.frames import decode_frame
from maskfarm.worker.pipeline import Segmenter


def maskfarm(*args: str, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "maskfarm.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def frame_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(7)
    paths = []
    for number in (1001, 1002):
        path = folder / f"shot.{number}.png"
        Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    sixteen = folder / "plate.0001.png"
    Image.fromarray(rng.integers(0, 65536, (30, 20), dtype=np.uint16)).save(sixteen)
    return paths + [sixteen]


@pytest.mark.parametrize("fmt", ["png", "png16", "npy"])
def test_local_segment_writes_one_file_per_frame_and_prompt(tiny_model_dir, frame_files, tmp_path, fmt):
    prompts = ["Red car", "red car!", "sky"]
    result = maskfarm(
        "segment",
        *map(str, frame_files),
        "-p",
        prompts[0],
        "-p",
        prompts[1],
        "-p",
        prompts[2],
        "--union",
        "--dilate",
        "2",
        "--format",
        fmt,
        "--local",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "masks"),
    )
    assert result.returncode == 0, result.stderr
    assert "meaningless" in result.stderr

    folders = prompt_folders(prompts, union=True)
    assert folders == ["red-car", "red-car-2", "sky", "union"]
    written = sorted(p.relative_to(tmp_path / "masks").as_posix() for p in (tmp_path / "masks").rglob("*.*"))
    expected_ext = ".npy" if fmt == "npy" else ".png"
    assert written == sorted(f"{folder}/{frame.stem}{expected_ext}" for folder in folders for frame in frame_files)

    segmenter = Segmenter.load(str(tiny_model_dir), device="cpu")
    frames = [decode_frame(path.read_bytes()) for path in frame_files]
    params = MaskParams(dilate=2, union=True)
    for frame_path, result_masks in zip(frame_files, segmenter.stream(frames, prompts, params)):
        for folder, mask in zip(folders, result_masks.masks):
            on_disk = read_mask(mask_path(tmp_path / "masks", folder, frame_path.name, fmt))
            assert on_disk.shape == mask.shape
            if fmt == "npy":
                np.testing.assert_array_equal(on_disk, mask)
            else:
                top = 255 if fmt == "png" else 65535
                np.testing.assert_array_equal(np.round(on_disk * top), quantise(mask, fmt))


def test_bad_parameter_is_refused_with_its_name(tiny_model_dir, frame_files, tmp_path):
    result = maskfarm(
        "segment",
        str(frame_files[0]),
        "-p",
        "car",
        "--smooth",
        "40",
        "--local",
        "--model",
        str(tiny_model_dir),
        "-o",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert "smooth" in result.stderr and "[0, 32]" in result.stderr


def test_undecodable_frame_is_reported_with_its_path(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = maskfarm(
        "segment", str(broken), "-p", "car", "--local", "--model", str(tiny_model_dir), "-o", str(tmp_path)
    )
    assert result.returncode == 2
    assert "broken.png" in result.stderr


def test_frame_threads_out_of_range_are_said_plainly(tiny_model_dir, frame_files, tmp_path):
    args = ["segment", str(frame_files[0]), "-p", "car", "--local", "--model", str(tiny_model_dir), "-o"]
    result = maskfarm(*args, str(tmp_path), "--frame-threads", "0")
    assert result.returncode == 2
    assert "frame threads (--frame-threads) must be at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr
    result = maskfarm(*args, str(tmp_path), "--frame-threads", "1")
    assert result.returncode == 0, result.stderr


def test_missing_model_says_how_to_point_at_a_local_copy(tmp_path, frame_files):
    result = maskfarm(
        "segment",
        str(frame_files[0]),
        "-p",
        "car",
        "--local",
        "--model",
        str(tmp_path / "nowhere"),
        "-o",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert "MASKFARM_MODEL" in result.stderr


def test_model_synthetic_writes_a_loadable_model(tmp_path):
    result = maskfarm("model", "synthetic", "--preset", "tiny", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert "meaningless" in result.stderr
    segmenter = Segmenter.load(str(tmp_path / "m"), device="cpu")
    assert segmenter.loaded.synthetic
    assert segmenter.segment([np.zeros((10, 10, 3), np.uint8)], "car")[0].masks.shape == (1, 10, 10)


def test_full_preset_has_the_cidas_architecture():
    from maskfarm.worker.synthetic import synthetic_config

    config = synthetic_config("full")
    assert config.vision_config.patch_size == 16
    assert config.vision_config.hidden_size == 768 and config.vision_config.num_hidden_layers == 12
    assert config.extract_layers == [3, 6, 9]
    assert config.reduce_dim == 64 and config.use_complex_transposed_convolution
    assert config.text_config.hidden_size == 512 and config.projection_dim == 512


def test_model_check_answers_quickly_without_weights(tiny_model_dir, tmp_path):
    assert maskfarm("model", "check", str(tiny_model_dir)).returncode == 0
    offline = maskfarm("model", "check", "CIDAS/clipseg-rd64-refined", HF_HOME=str(tmp_path / "empty-cache"))
    assert offline.returncode == 1 and "no weights" in offline.stderr
    missing = maskfarm("model", "check", str(tmp_path))
    assert missing.returncode == 1 and "config.json" in missing.stderr


def test_synthetic_model_files_are_readable_by_other_users(tiny_model_dir):
    """The worker image runs as its own user: a model written here and mounted into it
    must be readable by others (safetensors writes its file owner-only)."""
    for path in Path(tiny_model_dir).iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, f"{path.name} is not readable by group and others"


def test_bytes_that_are_no_image_are_said_to_be_so_without_python_object_names():
    from maskfarm.worker.frames import decode_frame

    with pytest.raises(ValueError) as raised:
        decode_frame(b"a text file, not an image")
    assert str(raised.value) == "cannot decode image: not an image Pillow can read"
