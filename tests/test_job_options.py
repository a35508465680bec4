"""``JobOptions``: a job's options as one typed object, the only thing that builds a SubmitJob request."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from maskfarm.client import Client, InvalidRequest, JobOptions, Prompt
from maskfarm.v1 import segmentation_pb2 as pb


def test_the_request_carries_every_option() -> None:
    options = JobOptions(
        threshold=0.3, smooth=5, dilate=-2, blur=4, soft=True, invert=True, union=True, format="exr",
        priority="high", labels={"shot": "sq010"}, keep_going=True, exr_layer="beauty", exposure=-1.0,
        output_dir="/mnt/masks",
    )  # fmt: skip
    request = options.request(["car", Prompt("sky", threshold=0.2)])
    assert (request.params.threshold, request.params.smooth, request.params.dilate, request.params.blur) == (
        pytest.approx(0.3),
        5,
        -2,
        4,
    )
    assert (request.params.soft, request.params.invert, request.params.union_mask) == (True, True, True)
    assert request.format == pb.OUTPUT_FORMAT_EXR and request.priority == pb.PRIORITY_HIGH
    assert dict(request.labels) == {"shot": "sq010"} and request.keep_going
    assert (request.exr.layer, request.exr.exposure, request.output_dir) == ("beauty", -1.0, "/mnt/masks")
    assert [prompt.text for prompt in request.prompt_specs] == ["car", "sky"]


def test_unset_mask_parameters_are_left_to_the_server() -> None:
    params = JobOptions().request(["car"]).params
    assert not any(params.HasField(name) for name in ("threshold", "smooth", "dilate", "blur"))


def test_keywords_change_the_options_and_an_unknown_one_is_named() -> None:
    shot = JobOptions(format="png16", labels={"shot": "a"})
    assert shot.changed(dilate=3) == dataclasses.replace(shot, dilate=3)
    assert shot.changed() is shot
    with pytest.raises(TypeError, match="unknown job option.*'dilat'"):
        shot.changed(dilat=3)
    with pytest.raises(InvalidRequest, match="format: unknown value 'png9'"):
        JobOptions(format="png9").request(["car"])  # type: ignore[arg-type]


def test_the_client_methods_take_options_not_keyword_lists() -> None:
    """One definition: submit, submit_parts and segment name no option of their own."""
    fields = {field.name for field in dataclasses.fields(JobOptions)}
    for method in (Client.submit, Client.submit_parts, Client.submit_leaving_out_refused, Client.segment):
        parameters = set(inspect.signature(method).parameters)
        assert "options" in parameters and not parameters & fields, method.__name__
