"""A worker's configuration: ``maskfarm worker``'s flags, each falling back to a MASKFARM_* variable.

Every field of ``WorkerSettings`` is a flag, by maskfarm's one settings pattern
(``maskfarm.core.settings``), as the server's are; the model options (``MODEL_OPTIONS``)
are also ``segment --local``'s and ``up``'s. Standard library and maskfarm.core only (the
rest is imported where it is used), so building the command line costs nothing.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from maskfarm.core.defaults import (
    DEFAULT_FRAME_READ_TIMEOUT_S,
    DEFAULT_MAX_FRAME_MIB,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    DEFAULT_MODEL,
    DEFAULT_NAMESPACE,
    DEFAULT_REDIS_URL,
)
from maskfarm.core.settings import setting
from maskfarm.core.storage import StorageRoots

if TYPE_CHECKING:
    from maskfarm.core.frame_files import ImageLimits
    from maskfarm.worker.shared_storage import SharedStorage

HEARTBEAT_S = 10.0
"""How often a busy worker refreshes its job's lease (from inside the job, between frames)."""
JOB_LEASE_S = 30
"""A running job not heard from for this long is abandoned: its worker is taken as dead."""
MAINTENANCE_S = 15
"""How often every worker, idle or busy between jobs, runs RQ's maintenance pass."""
BATCH_WAIT_MS = 5.0
"""How long a batch that found jobs waiting waits for more."""
DEFAULT_MODE = 0o644
"""The mode of the mask files a worker writes under a job's ``output_dir``."""

MODEL_OPTIONS = ("model", "device", "dtype", "compile", "max_batch", "frame_threads")
"""The flags that say which model runs, and how: the worker's, ``segment --local``'s and ``up``'s."""


def _octal(text: str) -> int:
    import argparse

    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an octal file mode such as 0644, got {text!r}") from None


@dataclass(frozen=True)
class WorkerSettings:
    """One worker process's configuration."""

    redis_url: str = setting(DEFAULT_REDIS_URL, "Redis holding the queues, jobs and masks")
    namespace: str = setting(
        DEFAULT_NAMESPACE, "prefix of maskfarm's Redis keys and RQ queues; must match the server's"
    )
    name: str = setting("", "worker name, unique among live workers (none: host.pid)", env="MASKFARM_WORKER_NAME")
    burst: bool = setting(False, "exit once the queues are empty")
    heartbeat_s: float = setting(HEARTBEAT_S, "how often a busy worker renews its job's lease")
    job_lease_s: int = setting(JOB_LEASE_S, "a running job not heard from for this long is taken as lost and run again")
    maintenance_s: int = setting(MAINTENANCE_S, "how often the worker looks for lost jobs, idle or not")
    log_level: str = setting("INFO", "logging level")
    metrics_listen: str = setting("", "host:port to serve Prometheus /metrics on (none: off)")
    batch_frames: int | None = setting(
        None,
        "run small jobs waiting together as one batch of up to this many frames; 0 or 1: never "
        "(none: the model batch, --max-batch)",
        kind=int,
    )
    batch_wait_ms: float = setting(
        BATCH_WAIT_MS,
        "how long a batch that found jobs waiting waits for more; with an empty queue a job starts at once",
    )
    codec_threads: int | None = setting(
        None,
        "threads decoding frames and encoding masks beside the model (none: 1 on a CPU; with GPUs, this process's cores shared among them)",
        kind=int,
    )
    health_file: str = setting(
        "", "touch FILE with every heartbeat that reaches Redis, for `maskfarm worker-health`", metavar="FILE"
    )
    storage_roots: tuple[str, ...] = setting(
        (),
        "shared storage: a folder under which jobs may name frames and output_dir by path (repeat for several)",
        flag="--storage-root",
    )
    output_mode: int = setting(
        DEFAULT_MODE,
        "octal mode of the mask files written under a job's output_dir",
        parse=_octal,
        metavar="MODE",
        shown="0644",
    )
    # The frame limits: the server's flags and variables (maskfarm.core.frame_files); give
    # both the same values.
    max_side: int = setting(DEFAULT_MAX_SIDE, "largest frame side, pixels")
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "largest frame, pixels; also Pillow's bomb guard")
    max_frame_mib: int = setting(DEFAULT_MAX_FRAME_MIB, "largest frame file read by path, MiB")
    frame_read_timeout_s: float = setting(DEFAULT_FRAME_READ_TIMEOUT_S, "seconds a frame file's open and read may take")
    # The model, and how it runs (MODEL_OPTIONS).
    model: str = setting(DEFAULT_MODEL, "Hugging Face id or local directory")
    device: str = setting("auto", "auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")
    dtype: str = setting("auto", "auto = bf16 on CUDA, fp32 (exact) on CPU", choices=("auto", "fp32", "bf16", "fp16"))
    max_batch: int | None = setting(
        None, "(frame, prompt) pairs per model batch; bounds memory (none: 64 on CUDA, 8 on CPU)", kind=int
    )
    compile: bool = setting(False, "torch.compile the vision tower: faster once warm, ~1 min of compiling at start")
    frame_threads: int | None = setting(
        None,
        "on a CPU, frames the model runs at once, one per call, the cores shared among them "
        "(none: one per core; 1: one call for a whole batch on every core); a GPU runs a batch at once",
        kind=int,
    )

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s < self.job_lease_s:
            raise ValueError(
                f"the heartbeat ({self.heartbeat_s} s) must be positive and shorter than "
                f"the job lease ({self.job_lease_s} s)"
            )
        if self.maintenance_s < 1:
            raise ValueError(f"the maintenance interval must be at least 1 s, got {self.maintenance_s}")
        if self.batch_frames is not None and self.batch_frames < 0:
            raise ValueError(f"the batch frames must be 0 (no batching) or more, got {self.batch_frames}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ValueError(f"the batch wait must be in [0, 1000] ms, got {self.batch_wait_ms}")
        object.__setattr__(self, "storage_roots", StorageRoots.parse(self.storage_roots).roots)
        if self.frame_threads is not None and self.frame_threads < 1:
            raise ValueError(f"the frame threads must be at least 1, got {self.frame_threads}")
        if self.codec_threads is not None and self.codec_threads < 1:
            raise ValueError(f"the codec threads must be at least 1, got {self.codec_threads}")
        if not 0 <= self.output_mode <= 0o7777:
            raise ValueError(f"the output mode must be in 0..0o7777, got {self.output_mode:#o}")
        self.image_limits  # noqa: B018 (checks the frame limits now, not at the first frame)

    @property
    def image_limits(self) -> ImageLimits:
        """What a frame file read by path may be, and Pillow's bomb guard."""
        from maskfarm.core.frame_files import ImageLimits

        return ImageLimits(self.max_side, self.max_pixels, self.max_frame_mib, self.frame_read_timeout_s)

    @property
    def storage(self) -> SharedStorage:
        from maskfarm.worker.shared_storage import SharedStorage

        return SharedStorage(StorageRoots(self.storage_roots), self.output_mode, self.image_limits)

    @property
    def recovery_bound_s(self) -> int:
        """The longest a dead worker's job waits before a live idle worker re-queues it
        (not counting the batch that was running when the last heartbeat was sent)."""
        return self.job_lease_s + 2 * self.maintenance_s

    @property
    def worker_name(self) -> str:
        return self.name or f"{socket.gethostname()}.{os.getpid()}"

    @property
    def queue_names(self) -> list[str]:
        from maskfarm.core.jobs import PRIORITIES
        from maskfarm.jobqueue.rq_adapter import queue_name

        return [queue_name(priority, self.namespace) for priority in PRIORITIES]
