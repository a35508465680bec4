"""Core's enums (``maskfarm.core.jobs``: ``JobState``, ``OutputFormat``, ``Priority``,
``ErrorCode``) as the API's enum numbers and back, for client and server alike.

One rule instead of a table per enum: a member is the value of the proto enum of the same
class name whose name is the member's, prefixed with the class name in upper snake case
(``OutputFormat.PNG8`` is ``OUTPUT_FORMAT_PNG8``). A member the proto lacks fails at import.
"""

from __future__ import annotations

import enum
import re
from typing import Any, TypeVar

from maskfarm.v1 import segmentation_pb2 as pb

__all__ = ["members_by_number", "proto_numbers", "proto_prefix"]

E = TypeVar("E", bound=enum.Enum)


def proto_prefix(kind: type[enum.Enum]) -> str:
    """``OutputFormat`` -> ``"OUTPUT_FORMAT_"``: what the proto's value names start with."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).upper() + "_"


def proto_numbers(kind: type[E]) -> dict[E, Any]:
    """Every member of ``kind`` with its proto enum number (an int, which the generated
    stubs type as the proto enum's class: hence ``Any``)."""
    values = getattr(pb, kind.__name__)
    prefix = proto_prefix(kind)
    return {member: values.Value(prefix + member.name) for member in kind}


def members_by_number(kind: type[E]) -> dict[int, E]:
    """The proto enum numbers of ``kind`` with their members (``UNSPECIFIED`` left out)."""
    return {int(number): member for member, number in proto_numbers(kind).items()}
