"""maskfarm's client library: submit frames and prompts to a maskfarm server, get masks back.

Needs only grpcio and protobuf (+ numpy and Pillow). Everything a caller needs is here::

    from maskfarm.client import Client, Prompt, StoragePath, JobFailed

    with Client("farm:50051") as client:
        frames = client.segment(["shot.1001.png"], ["car", Prompt("sky", threshold=0.3)])

The modules below (``client``, ``jobs``, ``masks``, ``errors``, ...) are the implementation;
names not listed in ``__all__`` may change between releases.
"""

from maskfarm.client.client import DEFAULT_TARGET, Client
from maskfarm.client.errors import (
    Busy,
    DeadlineExceeded,
    FrameRefused,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobNotFound,
    MaskfarmError,
    RequestTooLarge,
    StorageDenied,
    Unauthenticated,
    Unavailable,
)
from maskfarm.client.frames import StoragePath
from maskfarm.client.job_options import JobOptions
from maskfarm.client.jobs import Job, JobState, Provenance, WorkerInfo
from maskfarm.client.masks import FrameMasks, FrameResult, Mask
from maskfarm.client.prompts import Exemplar, Prompt, image_prompt
from maskfarm.client.security import ChannelSecurity
from maskfarm.core.params import MaskParams

__all__ = [
    "DEFAULT_TARGET",
    "Busy",
    "ChannelSecurity",
    "Prompt",
    "Client",
    "DeadlineExceeded",
    "Exemplar",
    "FrameMasks",
    "FrameRefused",
    "FrameResult",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobOptions",
    "JobState",
    "Mask",
    "MaskParams",
    "MaskfarmError",
    "Provenance",
    "RequestTooLarge",
    "StorageDenied",
    "StoragePath",
    "Unauthenticated",
    "Unavailable",
    "WorkerInfo",
    "image_prompt",
]
