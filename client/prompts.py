"""Prompts beyond one phrase, as the client library sends them.

``Prompt`` (``maskfarm.core.prompts``, standard library only) says a prompt's negatives
and its own threshold/smooth/dilate/blur; ``image_prompt`` makes one of an example image.
``Client.submit``/``segment`` take them beside plain strings: a request whose prompts are
all plain strings goes as ``prompts``, one with any ``Prompt`` as ``prompt_specs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from maskfarm.client.errors import InvalidRequest
from maskfarm.client.frames import FrameSource, encode_frame
from maskfarm.core.prompts import Exemplar, Prompt, prompt_name
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1.prompt_messages import prompt_from_message, prompt_message

__all__ = [
    "Exemplar",
    "Prompt",
    "describe_prompt",
    "image_prompt",
    "prompt_fields",
    "prompt_from_message",
    "prompt_message",
    "prompt_name",
]


def image_prompt(image: FrameSource | tuple[str, FrameSource], **options: Any) -> Prompt:
    """A prompt that is an example image of what to find (CLIPSeg's visual prompt), in any
    form a frame may take (a file, bytes, a PIL image, an array, a ``StoragePath``, a
    ``(name, image)`` pair); ``options`` are ``Prompt``'s (negatives, threshold, ...).
    Its masks are named by the image file's stem."""
    encoded = encode_frame(image)
    return Prompt(image=Exemplar(encoded.data, encoded.path, encoded.name), **options)


class PromptFields(TypedDict, total=False):
    """The SubmitJobRequest fields that carry prompts (one of them is set)."""

    prompts: list[str]
    prompt_specs: list[pb.Prompt]


def prompt_fields(prompts: Sequence[str | Prompt]) -> PromptFields:
    """The SubmitJobRequest fields that carry ``prompts``: ``prompts`` when every one is a
    plain text (what any server reads), else ``prompt_specs``."""
    if isinstance(prompts, (str, Prompt)):
        raise InvalidRequest("prompts: a list of prompts is required, got one prompt")
    prompts = list(prompts)
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, (str, Prompt)):
            raise InvalidRequest(f"prompts[{index}]: a string or a Prompt is required, got {type(prompt).__name__}")
    if all(isinstance(prompt, str) or prompt.is_plain for prompt in prompts):
        return {"prompts": [prompt_name(prompt) for prompt in prompts]}
    return {"prompt_specs": [prompt_message(prompt) for prompt in prompts]}


def describe_prompt(prompt: str | Prompt) -> str:
    """A prompt in a few words: ``person (not shadow; threshold 0.3)``."""
    if isinstance(prompt, str) or prompt.is_plain:
        return prompt_name(prompt)
    notes = [f"not {', '.join(prompt.negatives)}"] if prompt.negatives else []
    notes += [f"{name} {value:g}" for name, value in prompt.overrides.items()]
    name = f"image {prompt.image.name or prompt.image.path or prompt.name}" if prompt.image is not None else prompt.text
    return f"{name} ({'; '.join(notes)})" if notes else name
