"""``Prompt`` (maskfarm.core.prompts) as the API's Prompt message and back, for client and server alike."""

from __future__ import annotations

from maskfarm.core.prompts import OVERRIDES, Exemplar, Prompt
from maskfarm.v1 import segmentation_pb2 as pb

__all__ = ["prompt_from_message", "prompt_message"]


def prompt_from_message(message: pb.Prompt) -> Prompt:
    """A Prompt message as a ``Prompt`` (unchecked: the server checks what it is sent)."""
    image = None
    if message.HasField("image"):
        image = Exemplar(message.image.data, message.image.path, message.image.name)
    overrides = {name: getattr(message.params, name) for name in OVERRIDES if message.params.HasField(name)}
    return Prompt(message.text, tuple(message.negatives), image=image, **overrides)


def prompt_message(prompt: str | Prompt) -> pb.Prompt:
    """A prompt as the API's Prompt message."""
    if isinstance(prompt, str):
        return pb.Prompt(text=prompt)
    image = prompt.image
    return pb.Prompt(
        text=prompt.text,
        negatives=list(prompt.negatives),
        params=pb.MaskParams(**prompt.overrides),
        image=pb.Frame(data=image.data, path=image.path, name=image.name) if image is not None else None,
    )
