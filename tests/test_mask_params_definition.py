"""A mask parameter is defined once (maskfarm.core.params) and everything else follows it:
the API message, the server's checks, the CLI's flags, the prompt overrides, JobOptions."""

from __future__ import annotations

import dataclasses

import pytest

from maskfarm.cli import build_parser
from maskfarm.client.job_options import JobOptions
from maskfarm.core.params import MASK_PARAMS, PER_PROMPT, MaskParams, api_name
from maskfarm.core.prompts import OVERRIDES, Overrides
from maskfarm.server.validation import ValidationError, mask_params
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1.params_messages import params_given, params_message

NON_DEFAULT = {"threshold": 0.25, "smooth": 3, "dilate": -2, "blur": 6, "soft": True, "invert": True, "union": True}


def test_every_parameter_has_its_field_in_the_api_and_in_job_options() -> None:
    assert [api_name(knob) for knob in MASK_PARAMS] == [field.name for field in pb.MaskParams.DESCRIPTOR.fields]
    assert {knob.name for knob in MASK_PARAMS} <= {field.name for field in dataclasses.fields(JobOptions)}
    assert set(NON_DEFAULT) == {knob.name for knob in MASK_PARAMS}, "NON_DEFAULT names every parameter"


def test_params_go_through_the_api_and_back_unchanged() -> None:
    params = MaskParams(**NON_DEFAULT)
    assert mask_params(params_message(params)) == params
    assert mask_params(pb.MaskParams()) == MaskParams(), "unset fields take the defaults"
    assert params_given(JobOptions(**NON_DEFAULT).request(["car"]).params) == NON_DEFAULT


@pytest.mark.parametrize("name, bad", [("threshold", 1.5), ("smooth", 33), ("dilate", -33), ("blur", -1)])
def test_the_server_names_a_parameter_out_of_its_range(name: str, bad: float) -> None:
    with pytest.raises(ValidationError) as raised:
        mask_params(pb.MaskParams(**{name: bad}))
    assert raised.value.field == f"params.{name}"


def test_the_cli_has_a_flag_per_parameter_with_its_default() -> None:
    args = build_parser().parse_args(["segment", "shot.png", "-p", "car"])
    assert MaskParams(**{knob.name: getattr(args, knob.name) for knob in MASK_PARAMS}) == MaskParams()
    flags = ["segment", "shot.png", "-p", "car"]
    for name, value in NON_DEFAULT.items():
        flags += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    args = build_parser().parse_args(flags)
    assert {name: getattr(args, name) for name in NON_DEFAULT} == NON_DEFAULT


def test_prompt_overrides_are_the_per_prompt_parameters() -> None:
    assert OVERRIDES == PER_PROMPT == tuple(Overrides.__annotations__)
