"""A worker's liveness file: touched each time the worker's heartbeat reaches Redis.

Container healthchecks and Kubernetes liveness probes run a command beside the worker, not
inside it; the file's age is what they read (``maskfarm worker-health``). A worker that is
alive but cut off from Redis, or stuck inside a batch past its job lease, stops touching
it, which is exactly when its jobs are taken as lost by the other workers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def touch(path: str) -> None:
    """Marks the worker as heard from now; ``path`` empty: no file is kept."""
    if path:
        Path(path).touch()


def age_s(path: str) -> float | None:
    """Seconds since the worker behind ``path`` was last heard from; None: never (no file)."""
    try:
        return max(0.0, time.time() - os.stat(path).st_mtime)
    except FileNotFoundError:
        return None
