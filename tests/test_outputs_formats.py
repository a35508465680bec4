"""EXR, 16-bit TIFF and the worker's PNG masks: what they hold, read back by every reader
maskfarm has, and the preview overlays."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from maskfarm.client.masks import Mask
from maskfarm.client.previews import overlay, preview_path
from maskfarm.core.jobs import OutputFormat
from maskfarm.core.outputs import decode_mask, encode_mask, mask_path, quantise, read_mask, write_mask
from tests.exr_files import OpenEXR

MASK = np.concatenate(
    [np.random.default_rng(3).random((20, 30), dtype=np.float32) * 1.2 - 0.1, np.full((2, 30), 0.5, np.float32)]
)
"""Soft values, some outside [0, 1] (bicubic overshoot), and exact halves."""


def test_exr_mask_is_float32_y_zip_holding_the_npy_values() -> None:
    data = encode_mask(MASK, "exr")
    assert data == encode_mask(MASK, "exr")
    part = OpenEXR.File(io.BytesIO(data), separate_channels=True).parts[0]
    assert list(part.channels) == ["Y"]
    assert part.channels["Y"].pixels.dtype == np.float32
    assert part.header["compression"] == OpenEXR.ZIP_COMPRESSION
    np.testing.assert_array_equal(part.channels["Y"].pixels, quantise(MASK, "npy"))


def test_tiff16_mask_holds_the_png16_values() -> None:
    image = Image.open(io.BytesIO(encode_mask(MASK, "tiff16")))
    assert (image.format, image.mode) == ("TIFF", "I;16")
    png16 = np.asarray(Image.open(io.BytesIO(encode_mask(MASK, "png16"))))
    np.testing.assert_array_equal(np.asarray(image), png16)
    np.testing.assert_array_equal(np.asarray(image), np.round(np.clip(MASK, 0, 1) * 65535).astype(np.uint16))


@pytest.mark.parametrize("fmt, ext", [("exr", ".exr"), ("tiff16", ".tif")])
def test_files_are_named_and_read_back(tmp_path, fmt, ext) -> None:
    path = write_mask(mask_path(tmp_path, "car", "shot.1001.exr", fmt), MASK, fmt)
    assert path == tmp_path / "car" / f"shot.1001{ext}"
    expected = quantise(MASK, "npy") if fmt == "exr" else quantise(MASK, "png16") / np.float32(65535)
    np.testing.assert_array_equal(read_mask(path), expected)


@pytest.mark.parametrize(
    "fmt, service",
    [
        ("exr", OutputFormat.EXR),
        ("tiff16", OutputFormat.TIFF16),
        ("png", OutputFormat.PNG8),
        ("png16", OutputFormat.PNG16),
    ],
)
def test_service_results_are_the_local_files(fmt, service) -> None:
    """What a worker stores is what ``--local`` writes (both ``encode_file``); EXR and TIFF16
    are ``encode_mask``'s very bytes."""
    from maskfarm.worker.encoding import encode_file, encode_output

    assert encode_output(MASK, service) == encode_file(MASK, fmt)
    if fmt in ("exr", "tiff16"):
        assert encode_file(MASK, fmt) == encode_mask(MASK, fmt)


@pytest.mark.parametrize("fmt, mode", [("png", "L"), ("png16", "I;16")])
def test_worker_pngs_hold_the_pixels_pillow_writes(fmt, mode) -> None:
    """The worker encodes PNGs through OpenCV (one row filter, faster): other bytes, the
    same grey pixels as ``encode_mask``'s Pillow file, read back by Pillow and by maskfarm."""
    from maskfarm.worker.encoding import PNG_OPTIONS, encode_file

    ours, theirs = encode_file(MASK, fmt), encode_mask(MASK, fmt)
    assert (ours != theirs) == (PNG_OPTIONS is not None)
    image = Image.open(io.BytesIO(ours))
    assert (image.format, image.mode, image.size) == ("PNG", mode, (MASK.shape[1], MASK.shape[0]))
    np.testing.assert_array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(theirs))))
    np.testing.assert_array_equal(decode_mask(ours, fmt), decode_mask(theirs, fmt))


def mask(fmt: str, data: bytes) -> Mask:
    return Mask(0, "car", False, fmt, data, MASK.shape[1], MASK.shape[0])


def test_client_masks_decode_exr_and_tiff16() -> None:
    exr = mask("EXR", encode_mask(MASK, "exr"))
    np.testing.assert_array_equal(exr.array(), quantise(MASK, "npy"))
    assert exr.image().mode == "F"
    tiff = mask("TIFF16", encode_mask(MASK, "tiff16"))
    np.testing.assert_array_equal(tiff.array(), mask("PNG16", encode_mask(MASK, "png16")).array())
    assert tiff.image().mode == "I;16"


def test_exr_masks_without_openexr_say_what_to_install(monkeypatch) -> None:
    data = encode_mask(MASK, "exr")
    monkeypatch.setitem(sys.modules, "OpenEXR", None)
    with pytest.raises(ImportError, match="pip install OpenEXR"):
        mask("EXR", data).array()


def test_overlay_tints_in_proportion_to_the_mask() -> None:
    frame = np.full((2, 3, 3), 100, np.uint8)
    soft = np.array([[0, 0.5, 1], [1, 1, 0]], np.float32)
    image = overlay(frame, soft)
    assert (image.mode, image.size) == ("RGB", (3, 2))
    pixels = np.asarray(image)
    assert pixels[0, 0].tolist() == [100, 100, 100]
    assert pixels[0, 1].tolist() == [round(100 * 0.75 + 255 * 0.25), 75, 75]
    assert pixels[0, 2].tolist() == [178, 50, 50]
    with pytest.raises(ValueError, match="does not fit"):
        overlay(frame, soft.T)


def test_preview_files_sit_next_to_the_masks() -> None:
    assert preview_path("out", "red-car", "shot.1001.exr").as_posix() == "out/preview/red-car/shot.1001.jpg"


def test_a_fifo_or_symlink_in_the_output_folder_is_never_opened(tmp_path) -> None:
    """The mask file is written to a partial file created new, then renamed over whatever
    stood at its name: a FIFO planted where a partial file used to go (``.name.partial``)
    or at the mask's own name blocks nothing, and a symlink there is replaced, not followed."""
    import os
    import threading

    target = tmp_path / "outside.txt"
    target.write_text("keep")
    os.mkfifo(tmp_path / ".a.png.partial")
    os.mkfifo(tmp_path / "b.png")
    (tmp_path / "c.png").symlink_to(target)
    mask = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    done = []
    writer = threading.Thread(
        target=lambda: done.extend(write_mask(tmp_path / name, mask) for name in ("a.png", "b.png", "c.png")),
        daemon=True,
    )
    writer.start()
    writer.join(timeout=60)
    if writer.is_alive():  # unblock the writer stuck on the FIFO before failing
        os.close(os.open(tmp_path / ".a.png.partial", os.O_RDONLY | os.O_NONBLOCK))
        pytest.fail("writing a mask opened a FIFO found in the output folder")
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / name).is_file() and not (tmp_path / name).is_symlink()
        assert np.array_equal(np.round(read_mask(tmp_path / name) * 255).astype(np.uint8), quantise(mask, "png"))
    assert target.read_text() == "keep"
