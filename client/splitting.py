"""Splitting a long list of frames into jobs that each fit in one gRPC message.

A SubmitJob request holds every frame's bytes, and gRPC refuses messages over a size
limit (64 MiB unless configured); the server also takes at most 10,000 frames per job.
``split_frames`` packs frames, in order, into as few consecutive parts as both limits
allow, using the exact serialized size of each frame.
"""

from __future__ import annotations

from collections.abc import Sequence

from maskfarm.client.errors import RequestTooLarge
from maskfarm.client.frames import EncodedFrame
from maskfarm.v1 import segmentation_pb2 as pb

MAX_FRAMES_PER_JOB = 10_000
"""The server's limit (``maskfarm.server.validation.MAX_FRAMES``; the client cannot import it)."""


def split_frames(
    frames: Sequence[EncodedFrame],
    request: pb.SubmitJobRequest,
    max_message_bytes: int,
    max_frames: int = MAX_FRAMES_PER_JOB,
) -> list[list[EncodedFrame]]:
    """Consecutive runs of ``frames``, at most ``max_frames`` each, such that ``request``
    (holding no frames yet) plus each run fits in ``max_message_bytes``; raises
    ``RequestTooLarge`` for a frame that cannot fit even alone."""
    room = max_message_bytes - request.ByteSize()
    parts: list[list[EncodedFrame]] = []
    used = room + 1
    for index, frame in enumerate(frames):
        size = pb.SubmitJobRequest(frames=[frame.message()]).ByteSize()
        if size > room:
            raise RequestTooLarge(
                f"frames[{index}] ({frame.name or 'unnamed'}): {size / 2**20:.1f} MiB does not fit in a "
                f"{max_message_bytes / 2**20:.0f} MiB message; raise the server's and the client's max_message_mib"
            )
        if used + size > room or len(parts[-1]) >= max_frames:
            parts.append([])
            used = 0
        parts[-1].append(frame)
        used += size
    return parts
