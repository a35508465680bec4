"""OpenEXR frames: decoded to the documented sRGB picture (layers, exposure, data window
in display window), and checked by the server from their header alone."""

from __future__ import annotations

import numpy as np
import pytest

from maskfarm.core.exr import exr_to_rgb8
from maskfarm.core.exrheader import read_header, readable_layers
from maskfarm.core.images import ImageError, probe_image
from maskfarm.core.jobs import ExrOptions
from maskfarm.server.validation import ImageLimits, ValidationError, job_spec
from maskfarm.v1 import segmentation_pb2 as pb
from tests.exr_files import OpenEXR, exr_bytes, linear_ramp, reference_srgb8

LIMITS = dict(max_side=16384, max_pixels=100_000_000)


def rgb(height: int = 24, width: int = 32, dtype=np.float32) -> dict[str, np.ndarray]:
    return {name: linear_ramp(height, width, seed).astype(dtype) for seed, name in enumerate("RGB")}


def stacked(channels: dict[str, np.ndarray], names: str = "RGB") -> np.ndarray:
    return np.stack([channels[name].astype(np.float32) for name in names], axis=-1)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("exposure", [0.0, 1.5, -2.0])
def test_rgb_frame_is_the_documented_srgb_conversion(dtype, exposure) -> None:
    channels = rgb(dtype=dtype)
    decoded = exr_to_rgb8(exr_bytes(channels), exposure=exposure)
    assert decoded.dtype == np.uint8 and decoded.shape == (24, 32, 3)
    np.testing.assert_array_equal(decoded, reference_srgb8(stacked(channels), exposure))
    assert len(np.unique(decoded)) > 100


def test_uint_channels_read_as_their_values() -> None:
    values = np.array([[0, 1, 2, 0]], dtype=np.uint32)
    decoded = exr_to_rgb8(exr_bytes({"R": values, "G": values, "B": values}))
    assert decoded[0, :, 0].tolist() == [0, 255, 255, 0]


def test_the_data_window_is_placed_in_the_display_window_black_around() -> None:
    channels = rgb(10, 12)
    data = exr_bytes(channels, data_origin=(5, 3), display=(0, 0, 29, 19))
    decoded = exr_to_rgb8(data)
    assert decoded.shape == (20, 30, 3)
    expected = np.zeros((20, 30, 3), dtype=np.uint8)
    expected[3:13, 5:17] = reference_srgb8(stacked(channels))
    np.testing.assert_array_equal(decoded, expected)


def test_overscan_outside_the_display_window_is_dropped() -> None:
    channels = rgb(10, 12)
    decoded = exr_to_rgb8(exr_bytes(channels, data_origin=(-2, -3), display=(0, 0, 7, 4)))
    assert decoded.shape == (5, 8, 3)
    np.testing.assert_array_equal(decoded, reference_srgb8(stacked(channels))[3:8, 2:10])


def test_display_window_need_not_start_at_zero() -> None:
    channels = rgb(4, 4)
    decoded = exr_to_rgb8(exr_bytes(channels, data_origin=(101, 52), display=(100, 50, 105, 56)))
    expected = np.zeros((7, 6, 3), dtype=np.uint8)
    expected[2:6, 1:5] = reference_srgb8(stacked(channels))
    np.testing.assert_array_equal(decoded, expected)


def test_a_layer_reads_its_own_channels() -> None:
    top, diffuse = rgb(8, 8), {f"diffuse.{k}": v * 0.5 for k, v in rgb(8, 8).items()}
    data = exr_bytes({**top, **diffuse, "diffuse.A": np.ones((8, 8), np.float32), "A": np.zeros((8, 8), np.float32)})
    np.testing.assert_array_equal(exr_to_rgb8(data), reference_srgb8(stacked(top)))
    np.testing.assert_array_equal(
        exr_to_rgb8(data, "diffuse", 1.0),
        reference_srgb8(stacked(diffuse, ["diffuse.R", "diffuse.G", "diffuse.B"]), 1.0),
    )


@pytest.mark.parametrize("name", ["Y", "depth.Z"])
def test_luminance_or_a_single_channel_reads_as_grey(name) -> None:
    values = linear_ramp(6, 9)
    layer = name.rpartition(".")[0]
    decoded = exr_to_rgb8(exr_bytes({name: values, **({"A": values} if not layer else {})}), layer)
    grey = reference_srgb8(values[..., None])[..., 0]
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], grey)


def test_nan_is_black_and_infinity_white() -> None:
    values = np.array([[np.nan, np.inf, -np.inf, 0.5]], dtype=np.float32)
    decoded = exr_to_rgb8(exr_bytes({"R": values, "G": values, "B": values.astype(np.float16)}), exposure=3)
    assert decoded[0, :, 0].tolist() == [0, 255, 0, 255]
    assert decoded[0, :, 2].tolist() == [0, 255, 0, 255]


def test_an_unknown_layer_is_refused_naming_the_layers() -> None:
    data = exr_bytes(
        {
            **rgb(4, 4),
            "diffuse.R": np.zeros((4, 4), np.float32),
            "spec.R": np.zeros((4, 4), np.float32),
            "spec.G": np.zeros((4, 4), np.float32),
        }
    )
    with pytest.raises(ValueError, match=r"no readable layer 'specular' \(layers: '', 'diffuse'\)"):
        exr_to_rgb8(data, "specular")


def test_decode_frame_reads_exr_with_its_options() -> None:
    from maskfarm.worker.frames import decode_frame, to_rgb_uint8

    channels = rgb(5, 7)
    frame = decode_frame(exr_bytes(channels), ExrOptions(exposure=0.5))
    np.testing.assert_array_equal(to_rgb_uint8(frame).numpy(), reference_srgb8(stacked(channels), 0.5))
    np.testing.assert_array_equal(
        to_rgb_uint8(decode_frame(exr_bytes(channels))).numpy(), reference_srgb8(stacked(channels))
    )


def test_corrupt_pixel_data_is_a_value_error_at_the_worker() -> None:
    from maskfarm.worker.frames import decode_frame

    flat = np.full((40, 50), 0.25, dtype=np.float32)  # compresses, so the chunks hold zlib streams
    data = bytearray(exr_bytes({"R": flat, "G": flat, "B": flat}))
    data[-20:-10] = b"\x55" * 10  # the header and every chunk's extent are intact: the server lets it by
    probe_image(bytes(data), **LIMITS)
    with pytest.raises(ValueError, match="cannot decode EXR"):
        decode_frame(bytes(data))


# The server's check: the header only.


@pytest.mark.parametrize("compression", ["NO", "RLE", "ZIPS", "ZIP", "PIZ", "PXR24", "B44", "DWAA", "DWAB"])
def test_probe_accepts_good_headers(compression) -> None:
    data = exr_bytes(
        rgb(40, 50),
        data_origin=(3, 2),
        display=(0, 0, 63, 47),
        compression=getattr(OpenEXR, f"{compression}_COMPRESSION"),
    )
    info = probe_image(data, **LIMITS)
    assert (info.format, info.width, info.height, info.layers) == ("EXR", 64, 48, ("",))


def test_probe_reads_tiled_and_multipart_headers() -> None:
    import io

    values = linear_ramp(40, 50)
    tiles = OpenEXR.TileDescription()
    tiles.xSize, tiles.ySize = 16, 8
    parts = [
        OpenEXR.Part(
            {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION},
            {"R": values, "G": values, "B": values},
            name="rgb",
        ),
        OpenEXR.Part(
            {"type": OpenEXR.tiledimage, "compression": OpenEXR.PIZ_COMPRESSION, "tiles": tiles},
            {"diffuse.Y": values},
            name="diffuse",
        ),
    ]
    buffer = io.BytesIO()
    OpenEXR.File(parts).write(buffer)
    header = read_header(buffer.getvalue())
    assert [part.chunk_count for part in header.parts] == [3, 20]
    assert readable_layers(header.channel_names) == ["", "diffuse"]
    np.testing.assert_array_equal(
        exr_to_rgb8(buffer.getvalue(), "diffuse"), reference_srgb8(np.repeat(values[..., None], 3, axis=2))
    )


@pytest.mark.parametrize("cut", [1, 40, 400, 3000])
def test_probe_refuses_truncated_files(cut) -> None:
    data = exr_bytes(rgb(40, 50))
    with pytest.raises(ImageError, match="truncated or corrupt EXR"):
        probe_image(data[: len(data) - cut], **LIMITS)


def test_probe_refuses_a_header_cut_short() -> None:
    data = exr_bytes(rgb(4, 4))
    for size in (6, 20, 100):
        with pytest.raises(ImageError, match="truncated or corrupt EXR .*truncated header"):
            probe_image(data[:size], **LIMITS)


def test_a_huge_display_window_is_refused_from_the_header() -> None:
    bomb = exr_bytes(rgb(2, 2), display=(0, 0, 99_999, 99_999))
    with pytest.raises(ImageError, match="100000x100000 EXR: a side is over 16384"):
        probe_image(bomb, **LIMITS)
    wide = exr_bytes(rgb(2, 2), display=(0, 0, 11_999, 8_999))
    with pytest.raises(ImageError, match="12000x9000 EXR: 108000000 pixels, over 100000000"):
        probe_image(wide, **LIMITS)


def test_a_huge_data_window_is_refused_from_the_header() -> None:
    data = bytearray(exr_bytes(rgb(2, 2)))
    at = data.index(b"dataWindow\0box2i\0") + len(b"dataWindow\0box2i\0") + 4
    data[at + 8 : at + 16] = np.array([99_999, 1], dtype="<i4").tobytes()  # x_max, y_max
    with pytest.raises(ImageError, match="100000x2 EXR data window: a side is over 16384"):
        probe_image(bytes(data), **LIMITS)


def test_corrupt_header_values_are_refused() -> None:
    data = exr_bytes(rgb(4, 4))
    empty_window = bytearray(data)
    at = empty_window.index(b"displayWindow\0box2i\0") + len(b"displayWindow\0box2i\0") + 4
    empty_window[at + 8 : at + 12] = np.array([-5], dtype="<i4").tobytes()
    with pytest.raises(ImageError, match="empty displayWindow"):
        probe_image(bytes(empty_window), **LIMITS)
    with pytest.raises(ImageError, match="unsupported OpenEXR version 7"):
        probe_image(data[:4] + b"\x07" + data[5:], **LIMITS)


def request(frame: bytes, layer: str = "") -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(
        frames=[pb.Frame(data=frame, name="shot.1001.exr")],
        prompts=["car"],
        exr=pb.ExrOptions(layer=layer, exposure=1.0),
    )


def test_the_server_takes_an_exr_job_with_its_options() -> None:
    spec = job_spec(request(exr_bytes({**rgb(4, 4), "diffuse.Y": linear_ramp(4, 4)}), "diffuse"), ImageLimits())
    assert spec.exr == ExrOptions("diffuse", 1.0)


def test_the_server_names_the_field_of_a_bad_exr_frame() -> None:
    with pytest.raises(ValidationError) as raised:
        job_spec(request(exr_bytes(rgb(2, 2), display=(0, 0, 99_999, 9))), ImageLimits())
    assert raised.value.field == "frames[0].data"
    assert "a side is over 16384" in raised.value.reason


def test_a_layer_the_header_lacks_is_refused_at_the_server() -> None:
    with pytest.raises(ValidationError) as raised:
        job_spec(request(exr_bytes(rgb(4, 4)), "diffuse"), ImageLimits())
    assert raised.value.field == "exr.layer"
    assert raised.value.reason == "frames[0] (shot.1001.exr): no readable layer 'diffuse' (layers: '')"


def test_mangled_headers_are_image_errors_never_crashes() -> None:
    """Any byte of the header and offset table changed: refused as ``ImageError`` or
    accepted, never another exception."""
    data = exr_bytes({**rgb(20, 10), "diffuse.Y": linear_ramp(20, 10)}, compression=OpenEXR.PIZ_COMPRESSION)
    end = read_header(data).offsets_end
    rng = np.random.default_rng(1)
    for _ in range(1000):
        mangled = bytearray(data)
        for at in rng.integers(0, end, rng.integers(1, 4)):
            mangled[at] = rng.integers(0, 256)
        try:
            probe_image(bytes(mangled), **LIMITS)
        except ImageError:
            pass
