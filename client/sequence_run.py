"""``maskfarm segment`` over a sequence: which frames to do, and doing them in chunks.

``plan_frames`` expands the FRAMES arguments (``maskfarm.client.sequences``), drops the
frames whose masks all exist already (every prompt's, and the union's when asked for;
unless ``overwrite``) so an interrupted run resumes where it stopped, and keeps the
frames of an explicit frame list that do not exist: an error, unless ``keep_going``.

``segment_sequence`` sends the frames through the service one job per chunk of frames
(a chunk too big for one message becomes several jobs), a few chunks in flight at once
so workers never wait for the next chunk while memory in Redis stays bounded, and writes
masks as they arrive. ``SequenceReport`` is the user's view of it: one progress line for
the whole sequence, a line for each frame that failed, and the exit code.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskfarm.client.sequences import SequenceError, expand_frames, parse_frames

DEFAULT_CHUNK = 50
DEFAULT_IN_FLIGHT = 4
EXIT_FRAMES_FAILED = 3
"""Exit code when, under ``--keep-going``, some frames failed (or were missing) and were
skipped; every other frame's masks were written."""
SUMMARY_NAMES = 10
"""Failed frames named in the final summary (each was reported as it failed)."""


@dataclass(frozen=True)
class SequencePlan:
    """The frames to segment, in order, and those left out."""

    frames: list[Path]
    skipped: int = 0
    """Frames whose masks all exist (resume)."""
    missing: list[str] = field(default_factory=list)
    """Under ``keep_going``: one line per pattern whose frame list names missing files."""
    missing_count: int = 0

    @property
    def total(self) -> int:
        return len(self.frames) + self.skipped + self.missing_count


def plan_frames(
    arguments: Sequence[str],
    frame_list: str | None,
    prompts: Sequence[str],
    outdir: str | Path,
    fmt: str,
    *,
    union: bool = False,
    overwrite: bool = False,
    keep_going: bool = False,
) -> SequencePlan:
    """What ``maskfarm segment`` will do with its FRAMES arguments (see the module
    docstring). Raises ``SequenceError`` for arguments that name nothing, a bad frame
    list, or (without ``keep_going``) frames of the frame list that do not exist."""
    from maskfarm.core.outputs import mask_path, prompt_folders

    expansion = expand_frames(arguments, parse_frames(frame_list) if frame_list else None)
    if expansion.missing and not keep_going:
        raise SequenceError("; ".join(expansion.describe_missing()) + " (--keep-going skips them)")
    folders = prompt_folders(prompts, union)
    todo = [
        path
        for path in expansion.paths
        if overwrite or not all(mask_path(outdir, folder, path.name, fmt).is_file() for folder in folders)
    ]
    return SequencePlan(todo, len(expansion.paths) - len(todo), expansion.describe_missing(), expansion.missing_count)


class SequenceReport:
    """The sequence's progress line, failed frames and summary, on ``stream`` (stderr)."""

    def __init__(self, plan: SequencePlan, outdir: str | Path, command: str = "maskfarm segment", stream=None) -> None:
        from maskfarm.client.progress import SequenceProgress

        self.command = command
        self.outdir = outdir
        self.failures: list[str] = []
        self.progress = SequenceProgress(plan.total, plan.skipped, stream or sys.stderr)
        if plan.skipped:
            self.note(
                f"{plan.skipped} of {plan.total} frames skipped: their masks exist in {outdir} "
                "(--overwrite redoes them)"
            )
        if plan.missing:
            self.failures += plan.missing
            self.progress.fail("\n".join(f"{command}: {line}; skipped" for line in plan.missing), plan.missing_count)

    def note(self, message: str) -> None:
        self.progress.note(f"{self.command}: {message}")

    def failed(self, name: str, error: str) -> None:
        """A frame that failed and was skipped (``keep_going``)."""
        self.failures.append(name)
        self.progress.fail(f"{self.command}: {name}: failed, skipped: {error}")

    def finish(self, written: int) -> int:
        """Prints the final line and the summary; the exit code: 0, or
        ``EXIT_FRAMES_FAILED`` when frames failed."""
        self.progress.close()
        print(f"{written} masks written under {self.outdir}", file=self.progress.stream)
        if self.progress.failed:
            shown = ", ".join(self.failures[:SUMMARY_NAMES])
            more = f" and {len(self.failures) - SUMMARY_NAMES} more" if len(self.failures) > SUMMARY_NAMES else ""
            count = self.progress.failed
            were = f"{count} frames failed and were" if count > 1 else "1 frame failed and was"
            print(f"{self.command}: {were} skipped: {shown}{more}", file=self.progress.stream)
            return EXIT_FRAMES_FAILED
        return 0


def segment_sequence(
    client,
    frames: Sequence[Path],
    prompts: Sequence[str],
    outdir: str | Path,
    fmt: str,
    report: SequenceReport,
    *,
    chunk: int = DEFAULT_CHUNK,
    in_flight: int = DEFAULT_IN_FLIGHT,
    **options: Any,
) -> int:
    """Segments ``frames`` through the service, one job per ``chunk`` frames, at most
    ``in_flight`` chunks at a time, writing masks as they arrive; returns how many mask
    files were written. ``options`` are ``Client.submit``'s.

    The first job to fail or be cancelled, or an interruption (Ctrl-C), stops the run:
    no further chunk is sent, the jobs in flight are cancelled, and the error is raised
    (``JobFailed``, ``JobCancelled``, ``KeyboardInterrupt``); masks already written stay,
    so running again resumes."""
    from maskfarm.client.errors import MaskfarmError
    from maskfarm.client.remote import segment_files

    chunks = [list(frames[start : start + chunk]) for start in range(0, len(frames), chunk)]
    stop = threading.Event()
    lock = threading.Lock()
    in_flight_jobs: set[str] = set()

    def cancel(job_ids) -> None:
        for job_id in list(job_ids):
            try:
                client.cancel(job_id)
            except MaskfarmError:
                pass

    def run(part: list[Path]) -> int:
        if stop.is_set():
            return 0
        mine: list[str] = []

        def submitted(jobs) -> None:
            with lock:
                mine.extend(job.id for job in jobs)
                in_flight_jobs.update(mine)
                if stop.is_set():
                    cancel(mine)
            for job in jobs:
                first, last = job.frame_names[0], job.frame_names[-1]
                span = f"{first} .. {last}" if job.total > 1 else first
                report.note(f"job {job.id}: {job.total} frames queued ({span})")

        written = segment_files(
            client,
            part,
            prompts,
            outdir,
            fmt,
            on_submitted=submitted,
            on_update=lambda _, job: report.progress.job(job),
            on_failed=report.failed,
            **options,
        )
        with lock:
            in_flight_jobs.difference_update(mine)
        return len(written)

    written = 0
    pool = ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="maskfarm-chunk")
    try:
        for future in as_completed([pool.submit(run, part) for part in chunks]):
            written += future.result()
    except BaseException:
        with lock:
            stop.set()
            cancel(in_flight_jobs)
        report.progress.interrupt()
        raise
    finally:
        pool.shutdown(wait=not stop.is_set(), cancel_futures=True)
    return written
