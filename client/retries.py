"""When and how often a call is tried again: only UNAVAILABLE, a bounded number of times.

UNAVAILABLE means the call never reached a healthy server (connection refused, the job
store briefly down, or refusing writes for now: out of memory, a read-only replica,
loading its data), so trying again is safe for every maskfarm call: reads are reads,
CancelJob is idempotent, and SubmitJob carries a request_id that makes a repeat return
the first job. Every other status is an answer and is raised at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

T = TypeVar("T")


@dataclass(frozen=True)
class Retries:
    """Up to ``attempts`` more tries after the first, waiting ``initial_s`` before the
    first retry and doubling up to ``max_s`` (each wait randomised to 50-100 %)."""

    attempts: int = 4
    initial_s: float = 0.2
    max_s: float = 5.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return min(self.max_s, self.initial_s * 2**retry) * random.uniform(0.5, 1.0)

    def should_retry(self, error: grpc.RpcError, retry: int) -> bool:
        return error.code() is grpc.StatusCode.UNAVAILABLE and retry < self.attempts

    def run(self, call: Callable[[], T]) -> T:
        """``call()``, tried again after UNAVAILABLE; the last error propagates."""
        retry = 0
        while True:
            try:
                return call()
            except grpc.RpcError as error:
                if not self.should_retry(error, retry):
                    raise
            time.sleep(self.delay(retry))
            retry += 1
