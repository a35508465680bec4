"""A running job waits out Redis refusing writes (out of memory, read-only, loading)
instead of failing.

Such a refusal passes once jobs end or expire, a writable Redis takes over, or the data
is loaded (``maskfarm.jobqueue.redis_errors``); failing the job would delete its inputs and
throw away the frames already computed. So the write is tried again, with backoff, until
Redis takes it; the job's own time limit (``--job-timeout``) still bounds the wait. The
job's lease is renewed meanwhile as far as Redis allows: should it lapse, another worker
runs the job again and this run stops at its next frame (it is superseded), losing no
frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import RedisError

from maskfarm.jobqueue.redis_errors import refusal

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT_S = 0.5
MAX_WAIT_S = 10.0


def while_refused(write: Callable[[], T], what: str, keep_alive: Callable[[], None]) -> T:
    """``write()``'s result, tried again while Redis refuses it, waiting ``FIRST_WAIT_S``
    and doubling up to ``MAX_WAIT_S`` between tries (``keep_alive()`` after each wait);
    any other error propagates at once. ``what`` names the write in the log."""
    wait, refused_since = FIRST_WAIT_S, None
    while True:
        try:
            written = write()
        except RedisError as error:
            reason = refusal(error)
            if reason is None:
                raise
            if refused_since is None:
                refused_since = time.monotonic()
                log.warning("%s: Redis refused the write (%s); trying again until it takes it", what, reason)
            time.sleep(wait)
            wait = min(wait * 2, MAX_WAIT_S)
            beat_if_allowed(keep_alive)
            continue
        if refused_since is not None:
            log.warning("%s: written after Redis refused it for %.0f s", what, time.monotonic() - refused_since)
        return written


def beat_if_allowed(keep_alive: Callable[[], None]) -> None:
    """``keep_alive()``, unless Redis refuses the write (logged; the lease may lapse,
    see the module docstring)."""
    try:
        keep_alive()
    except RedisError as error:
        reason = refusal(error)
        if reason is None:
            raise
        log.info("heartbeat not written: %s", reason)
