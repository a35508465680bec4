"""The node "ApplyCLIPSeg (maskfarm)": ``ApplyCLIPSeg+``'s masks, computed on a maskfarm service.

The node takes what ``ApplyCLIPSeg+`` (ComfyUI_essentials) takes, less the model, plus
negatives and where the service is, sends the whole IMAGE batch as one job and returns the MASK batch
the local node would give. Precision holds end to end: a frame travels as
``trunc(clamp(255 x))`` in 8 bits, the very conversion the local node makes before its
processor, and masks come back as float32 (no 8-bit rounding on the way back). The one
difference is maskfarm's: masks are clamped to [0, 1] after the bicubic resize (the local
node's overshoot a little around edges).

Inside ComfyUI the job shows on the progress bar and Cancel cancels it on the farm.
Everything the node needs beyond ComfyUI is the maskfarm client (``maskfarm.client``,
imported when the node runs, so a ComfyUI without it still lists the node and says what
to install); torch is used only to read the IMAGE tensor and make the MASK tensor.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from .comfy_hooks import CancelOnInterrupt, Progress

PRIORITIES = ["normal", "high", "low"]
MAX_TOKEN_FILE_BYTES = 64 * 1024
"""A token file is one line; anything longer is not a token file."""
JOB_LABELS = {"source": "comfyui"}
"""Every job the node sends carries this label (``maskfarm jobs --label source=comfyui``)."""


class MaskfarmNodeError(RuntimeError):
    """What ComfyUI shows when the node cannot give masks: a plain sentence, naming the
    input or the service at fault."""


class ApplyCLIPSegOnFarm:
    """The ComfyUI node: ``ApplyCLIPSeg+``'s inputs and MASK output, run on a farm."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, tuple]]:
        return {
            "required": {
                "image": ("IMAGE",),
                "prompt": ("STRING", {"multiline": False, "default": ""}),
                "negatives": (
                    "STRING",
                    {
                        "multiline": False,
                        "default": "",
                        "tooltip": "what to take out of the prompt's mask, separated by commas "
                        "('shadow, reflection'); empty: nothing",
                    },
                ),
                "threshold": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.05}),
                "smooth": ("INT", {"default": 9, "min": 0, "max": 32, "step": 1}),
                "dilate": ("INT", {"default": 0, "min": -32, "max": 32, "step": 1}),
                "blur": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1}),
                "target": (
                    "STRING",
                    {
                        "multiline": False,
                        "default": "",
                        "tooltip": "host:port of the maskfarm server; empty: $MASKFARM_TARGET, else localhost:50051",
                    },
                ),
                "token_file": (
                    "STRING",
                    {
                        "multiline": False,
                        "default": "",
                        "tooltip": "file holding the bearer token, for servers with auth on; "
                        "empty: $MASKFARM_TOKEN, else none",
                    },
                ),
                "priority": (PRIORITIES, {"default": "normal"}),
            },
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "execute"
    CATEGORY = "maskfarm"

    def execute(
        self,
        image: Any,
        prompt: str,
        negatives: str,
        threshold: float,
        smooth: int,
        dilate: int,
        blur: int,
        target: str = "",
        token_file: str = "",
        priority: str = "normal",
    ) -> tuple[Any]:
        """The MASK batch (B x H x W float32 in [0, 1]) of ``image`` (B x H x W x C floats
        in [0, 1]) for ``prompt`` minus its ``negatives`` (the maximum of their masks).
        Raises ``MaskfarmNodeError`` when it cannot."""
        if not prompt.strip():
            raise MaskfarmNodeError("prompt: empty; type what to segment (a few words: 'red car')")
        frames = image_frames(image)
        options = dict(
            threshold=threshold,
            smooth=smooth,
            dilate=dilate,
            blur=blur,
            format="float32",
            priority=priority,
            labels=JOB_LABELS,
        )
        masks = segment_on_farm(
            frames, prompt, split_negatives(negatives), options, target.strip(), read_token(token_file.strip())
        )
        return (mask_batch(masks),)


def image_frames(image: Any) -> list[tuple[str, np.ndarray]]:
    """A ComfyUI IMAGE tensor (B x H x W x C floats) as named float32 frames, as the
    client sends them (``image[i]`` names frame i in any error)."""
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) != 4 or not 1 <= shape[-1] <= 4 or 0 in shape:
        raise MaskfarmNodeError(f"image: expected a batch B x H x W x C (C 1-4), got shape {list(shape)}")
    pixels = image.detach().cpu().float().numpy()
    return [(f"image[{index}]", frame) for index, frame in enumerate(pixels)]


def read_token(token_file: str) -> str | None:
    """The token in ``token_file`` (surrounding blanks stripped); None for no file, so the
    client falls back on ``MASKFARM_TOKEN``. The file is opened without blocking and must
    be a small regular file (a FIFO put there never hangs ComfyUI)."""
    if not token_file:
        return None
    path = Path(token_file).expanduser()
    try:
        data = _read_small_file(path, MAX_TOKEN_FILE_BYTES)
    except OSError as error:
        raise MaskfarmNodeError(f"token_file: cannot read {path}: {error.strerror or error}") from None
    token = data.decode("utf-8", errors="replace").strip()
    if not token:
        raise MaskfarmNodeError(f"token_file: {path} is empty")
    return token


def _read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (OSError else)."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise OSError("not a regular file")
        if status.st_size > limit:
            raise OSError(f"over {limit // 1024} KiB: not a token file")
        return file.read(limit)


def split_negatives(negatives: str) -> tuple[str, ...]:
    """The negatives typed in the node: separated by commas, blanks ignored."""
    return tuple(part.strip() for part in negatives.split(",") if part.strip())


def segment_on_farm(
    frames: list[tuple[str, np.ndarray]],
    prompt: str,
    negatives: tuple[str, ...],
    options: dict[str, Any],
    target: str,
    token: str | None,
) -> list[np.ndarray]:
    """One job of ``frames`` x ``prompt`` (minus ``negatives``) on the service at
    ``target``; its masks in frame order, float32 H x W each."""
    client_module, prompts, errors = _maskfarm_client()
    with client_module.Client(target or None, token=token) as client:
        try:
            job = client.submit(frames, [prompts.Prompt(prompt, negatives=negatives)], **options)
            return _watch_masks(client, job)
        except errors.RequestTooLarge as error:
            raise MaskfarmNodeError(
                f"image: the batch is too large for one job ({error.details}); send fewer or smaller images at a time"
            ) from None
        except errors.Unavailable as error:
            raise MaskfarmNodeError(
                f"cannot reach the maskfarm service at {client.target}: is a server running there? ({error.details})"
            ) from None
        except errors.MaskfarmError as error:
            raise MaskfarmNodeError(f"maskfarm: {error}") from None


def _watch_masks(client: Any, job: Any) -> list[np.ndarray]:
    """Follows ``job`` to its end (the progress bar moves with each frame; ComfyUI's
    Cancel cancels it on the farm) and returns its masks in frame order."""
    from maskfarm.client.client import succeeded
    from maskfarm.client.errors import MaskfarmError
    from maskfarm.client.masks import FrameResult

    job_id, progress = job.id, Progress(job.total)

    def cancel() -> None:
        try:
            client.cancel(job_id)
        except MaskfarmError:
            pass  # the job's end, whatever it is, still ends the watch below

    masks: dict[int, np.ndarray] = {}
    with CancelOnInterrupt(cancel) as interrupt:
        for event in client.watch(job_id):
            if isinstance(event, FrameResult):
                masks[event.index] = event.decode().masks[0]
                progress.show(len(masks))
            else:
                job = event
    interrupt.raise_if_interrupted()
    succeeded(job)
    return [masks[index] for index in range(job.total)]


def mask_batch(masks: list[np.ndarray]) -> Any:
    """ComfyUI's MASK: a B x H x W float32 tensor."""
    import torch  # ComfyUI's own; only to hand the masks over

    return torch.from_numpy(np.stack(masks).astype(np.float32, copy=False))


def _maskfarm_client() -> tuple[Any, Any, Any]:
    """maskfarm's client modules, or a node error saying how to install them."""
    try:
        from maskfarm.client import client, errors, prompts
    except ImportError as error:
        raise MaskfarmNodeError(
            f"the maskfarm client is not installed in ComfyUI's Python ({error}): "
            "pip install it there (see this node's README.md)"
        ) from None
    return client, prompts, errors
