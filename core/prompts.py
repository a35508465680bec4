"""A prompt beyond one phrase: negatives, its own mask parameters, an exemplar image.

``Prompt`` is part of the contract between the client (which builds it), the server (which
validates and stores it) and the worker (whose pipeline computes its mask), so, like
``params``, it imports only the standard library. A plain string prompt is
``Prompt(text)``: no negatives, no overrides.

A prompt's mask is its positive's mask minus the union (maximum) of its negatives' masks,
clamped to [0, 1], every one of them computed with the prompt's parameters: the job's,
with the prompt's own ``threshold``/``smooth``/``dilate``/``blur`` where it sets them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TypedDict, cast

from maskfarm.core.params import PER_PROMPT, MaskParams

OVERRIDES = PER_PROMPT
"""The mask parameters a prompt may set for itself; soft, invert and union stay the job's."""


class Overrides(TypedDict, total=False):
    """The mask parameters a prompt sets for itself (those named in OVERRIDES), by name."""

    threshold: float
    smooth: int
    dilate: int
    blur: int


@dataclass(frozen=True)
class Exemplar:
    """An image that says what to find (CLIPSeg's visual prompt): its encoded bytes, or
    ``b""`` and its shared-storage ``path``; ``name`` is its file name, which names the
    prompt in outputs (by its stem)."""

    data: bytes = b""
    path: str = ""
    name: str = ""

    @property
    def stem(self) -> str:
        return PurePath(self.name or PurePath(self.path).name).stem or "exemplar"


@dataclass(frozen=True)
class Prompt:
    """What to find in a frame: ``text`` (or an ``image``), minus its ``negatives``.

    ``threshold``, ``smooth``, ``dilate`` and ``blur`` override the job's parameters for
    this prompt (and its negatives) where they are not None. Exactly one of ``text`` and
    ``image`` is set; negatives are text.
    """

    text: str = ""
    negatives: tuple[str, ...] = ()
    threshold: float | None = None
    smooth: int | None = None
    dilate: int | None = None
    blur: int | None = None
    image: Exemplar | None = None

    def __post_init__(self) -> None:
        if isinstance(self.negatives, str):
            raise ValueError("negatives: a sequence of prompts is required, got one string")
        object.__setattr__(self, "negatives", tuple(self.negatives))

    @property
    def name(self) -> str:
        """What names the prompt in outputs: its text, or its exemplar file's stem."""
        return self.image.stem if self.image is not None else self.text

    @property
    def overrides(self) -> Overrides:
        """The mask parameters this prompt sets for itself, by name."""
        return cast(Overrides, {name: getattr(self, name) for name in OVERRIDES if getattr(self, name) is not None})

    @property
    def is_plain(self) -> bool:
        """A text with nothing else: what a plain string prompt says."""
        return self.image is None and not self.negatives and not self.overrides

    def without_image_data(self) -> Prompt:
        """The prompt with its exemplar's bytes left out (kept apart from the job record)."""
        if self.image is None or not self.image.data:
            return self
        return dataclasses.replace(self, image=dataclasses.replace(self.image, data=b""))

    def params(self, job: MaskParams) -> MaskParams:
        """The parameters of this prompt's masks: ``job``'s, overridden. Raises ``ValueError``
        naming the parameter when an override is out of range."""
        return dataclasses.replace(job, **self.overrides) if self.overrides else job


def as_prompt(prompt: str | Prompt) -> Prompt:
    """A plain string as a ``Prompt``; a ``Prompt`` as it is."""
    return prompt if isinstance(prompt, Prompt) else Prompt(prompt)


def prompt_name(prompt: str | Prompt) -> str:
    """What names a prompt in outputs (its folder) and in a job's ``prompts``."""
    return prompt.name if isinstance(prompt, Prompt) else prompt


def prompts_to_json(prompts: Sequence[Prompt]) -> str:
    """The prompts as JSON (exemplar bytes in base64), for the job record."""
    return json.dumps([_prompt_dict(prompt) for prompt in prompts])


def prompts_from_json(text: str) -> list[Prompt]:
    """The inverse of ``prompts_to_json``; "" reads as no prompts."""
    return [_prompt_from_dict(item) for item in json.loads(text)] if text else []


def _prompt_dict(prompt: Prompt) -> dict:
    item = dataclasses.asdict(prompt)
    if prompt.image is not None:
        item["image"] = {
            "data": base64.b64encode(prompt.image.data).decode("ascii"),
            "path": prompt.image.path,
            "name": prompt.image.name,
        }
    return item


def _prompt_from_dict(item: dict) -> Prompt:
    image = item.pop("image", None)
    if image is not None:
        image = Exemplar(base64.b64decode(image["data"]), image["path"], image["name"])
    return Prompt(**{**item, "negatives": tuple(item.get("negatives", ()))}, image=image)
