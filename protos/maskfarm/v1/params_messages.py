"""``MaskParams`` (maskfarm.core.params) as the API's MaskParams message and back, for client
and server alike, by the parameters' own metadata: no list of names to keep in step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maskfarm.core.params import MASK_PARAMS, MaskParams, api_name
from maskfarm.v1 import segmentation_pb2 as pb

__all__ = ["params_from_values", "params_given", "params_message"]


def params_from_values(values: Mapping[str, Any]) -> pb.MaskParams:
    """A MaskParams message of the parameters named in ``values`` (core's names); those
    None or absent stay unset (the server's defaults)."""
    given = {api_name(knob): values[knob.name] for knob in MASK_PARAMS if values.get(knob.name) is not None}
    return pb.MaskParams(**given)


def params_message(params: MaskParams) -> pb.MaskParams:
    """Every parameter of ``params``, set."""
    return params_from_values({knob.name: getattr(params, knob.name) for knob in MASK_PARAMS})


def params_given(message: pb.MaskParams, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The parameters a message sets (of ``names``, when given), by core's names, unchecked.
    A switch (soft, invert, union) is always set: proto3 has no unset bool."""
    given = {}
    for knob in MASK_PARAMS:
        name = api_name(knob)
        if (names is None or knob.name in names) and (isinstance(knob.default, bool) or message.HasField(name)):
            given[knob.name] = getattr(message, name)
    return given
