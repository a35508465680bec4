"""One-line progress reports on stderr, per job or for a whole sequence, with no dependency.

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


class SequenceProgress:
    """One line for a whole sequence of frames on ``stream`` (stderr by default): frames
    done of the total, counting frames skipped because their masks exist and frames that
    failed. Safe to call from several threads (one per job in flight).

    On a terminal the line is redrawn in place and messages (``note``) print above it;
    elsewhere a line is written at each tenth of the way, so logs stay short.
    """

    def __init__(self, total: int, skipped: int = 0, stream: TextIO | None = None, label: str = "frames") -> None:
        import threading

        self.total = total
        self.skipped = skipped
        self.failed = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._lock = threading.Lock()
        self._counted = 0
        self._jobs: dict[str, tuple[int, bool]] = {}
        self._shown_tenth = -1
        self._silent = False

    @property
    def done(self) -> int:
        return self.skipped + self._counted + sum(done for done, _ in self._jobs.values())

    def job(self, job: Job) -> None:
        """A job's latest state: its finished frames count towards the total (those
        that failed are counted by ``fail``)."""
        with self._lock:
            self._jobs[job.id] = (job.done - job.failed, job.state.terminal)
            self._show()

    def advance(self, frames: int = 1) -> None:
        """``frames`` more frames finished (not through a job)."""
        with self._lock:
            self._counted += frames
            self._show()

    def fail(self, message: str, frames: int = 1) -> None:
        """``frames`` frames failed and were skipped: counted as done and as failed, and
        ``message`` printed."""
        with self._lock:
            self.failed += frames
            self._counted += frames
            self._print(message)
            self._show()

    def note(self, message: str) -> None:
        """Print ``message`` on a line of its own."""
        with self._lock:
            self._print(message)
            self._show()

    def close(self) -> None:
        """The final line."""
        with self._lock:
            ended = f"done, {self.failed} failed" if self.failed else "succeeded"
            if self.live:
                self.stream.write("\r\x1b[K")
            self.stream.write(self._line(ended, final=True) + "\n")
            self.stream.flush()

    def interrupt(self) -> None:
        """Ends the report early (an error follows): a live line is left as it was, and
        nothing more is written (threads still winding down stay quiet)."""
        with self._lock:
            if self.live and not self._silent:
                self.stream.write("\n")
                self.stream.flush()
            self._silent = True

    def _print(self, message: str) -> None:
        if self._silent:
            return
        self.stream.write(("\r\x1b[K" if self.live else "") + message + "\n")

    def _show(self) -> None:
        if self._silent:
            return
        if self.live:
            running = sum(not ended for _, ended in self._jobs.values())
            self.stream.write("\r\x1b[K" + self._line(f"{running} jobs in flight" if self._jobs else ""))
        else:
            tenth = 10 * self.done // self.total if self.total else 10
            if tenth == self._shown_tenth or tenth == 10:
                return
            self._shown_tenth = tenth
            self.stream.write(self._line("") + "\n")
        self.stream.flush()

    def _line(self, state: str, final: bool = False) -> str:
        done = min(self.done, self.total)
        filled = BAR_WIDTH * done // self.total if self.total else BAR_WIDTH
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        extras = [f"{self.skipped} skipped: masks exist"] if self.skipped else []
        if self.failed and not final:
            extras.append(f"{self.failed} failed")
        line = f"{self.label} [{bar}] {done}/{self.total} frames" + (f" {state}" if state else "")
        return line + (f" ({', '.join(extras)})" if extras else "")
