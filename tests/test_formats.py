"""One definition per mask format (``maskfarm.core.formats``): every list of formats that
the CLI, the client, the API and the worker offer is that one, and each format's file is
what its definition says."""

from __future__ import annotations

import argparse
from typing import get_args

import numpy as np
import pytest

from maskfarm.core.formats import FILE_FORMAT_NAMES, MASK_FORMATS, file_format, output_format
from maskfarm.core.jobs import OutputFormat
from maskfarm.core.outputs import decode_mask, encode_mask, mask_path, quantise, read_mask, write_mask
from maskfarm.v1 import segmentation_pb2 as pb

MASK = np.linspace(-0.1, 1.1, 12 * 10, dtype=np.float32).reshape(12, 10)


def segment_choices() -> tuple[str, ...]:
    from maskfarm.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    segment = commands.choices["segment"]
    return tuple(next(a for a in segment._actions if a.dest == "format").choices)


def test_every_list_of_formats_is_the_core_one() -> None:
    from maskfarm.client.job_options import FORMATS, Format
    from maskfarm.server import messages, validation

    assert segment_choices() == FILE_FORMAT_NAMES == tuple(fmt.name for fmt in MASK_FORMATS)
    assert {fmt.output for fmt in MASK_FORMATS} == set(OutputFormat)
    assert set(get_args(Format)) == set(FORMATS) == {fmt.value for fmt in OutputFormat}
    in_proto = set(pb.OutputFormat.keys()) - {"OUTPUT_FORMAT_UNSPECIFIED"}
    assert in_proto == {f"OUTPUT_FORMAT_{fmt.name}" for fmt in OutputFormat}
    assert {pb.OutputFormat.Name(number) for number in messages.OUTPUT_FORMATS.values()} == in_proto
    for number, fmt in validation.FORMATS.items():
        if number != pb.OUTPUT_FORMAT_UNSPECIFIED:
            assert messages.OUTPUT_FORMATS[fmt] == number


@pytest.mark.parametrize("fmt", MASK_FORMATS, ids=FILE_FORMAT_NAMES)
def test_a_format_file_is_what_its_definition_says(tmp_path, fmt) -> None:
    if fmt.container == "EXR":
        pytest.importorskip("OpenEXR")
    assert output_format(fmt.output) is fmt is file_format(fmt.name)
    values = quantise(MASK, fmt.name)
    assert values.dtype == (np.float32 if fmt.is_float else np.dtype(f"uint{fmt.bits}"))
    assert values.max() == fmt.top
    path = write_mask(mask_path(tmp_path, "car", "shot.1001.exr", fmt.name), MASK, fmt.name)
    assert path.name == f"shot.1001{fmt.extension}"
    np.testing.assert_array_equal(read_mask(path), values.astype(np.float32) / np.float32(fmt.top))
    np.testing.assert_array_equal(decode_mask(encode_mask(MASK, fmt), fmt), read_mask(path))


def test_an_unknown_format_is_named_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"format must be one of png, png16, npy, exr, tiff16, got 'jpg'"):
        file_format("jpg")
