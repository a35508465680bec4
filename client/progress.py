"""A one-line progress report per job on stderr, with no dependency.

On a terminal the line is redrawn in place (``\\r``) as frames finish; elsewhere (logs,
CI) a line is written only when the job's state changes, so logs stay short.
"""

from __future__ import annotations

import sys
from typing import TextIO

from maskfarm.client.jobs import Job

BAR_WIDTH = 30


class JobProgress:
    """Reports one job's progress to ``stream`` (stderr by default)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._last_state = ""

    def update(self, job: Job) -> None:
        if self.live:
            self.stream.write("\r" + self._line(job))
            if job.state.terminal:
                self.stream.write("\n")
        elif job.state.value != self._last_state:
            self.stream.write(self._line(job) + "\n")
        self._last_state = job.state.value
        self.stream.flush()

    def _line(self, job: Job) -> str:
        filled = BAR_WIDTH * job.done // job.total if job.total else 0
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        return f"{self.label} [{bar}] {job.done}/{job.total} frames {job.state.value.lower()}"
