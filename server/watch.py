"""Following a job as it runs: what is stored first, then each frame as it is announced.

The follower takes an inbox for the job's events (``maskfarm.server.events``) *before* it
reads anything, so a frame stored while it replays is either in the replay or announced
after it, and it remembers which frames it has sent, so none is sent twice. Events are
only wake-ups: the data is always read from the store. A periodic sweep of the store
catches whatever a dropped pub/sub connection may have lost, and notices jobs that expire
in the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from maskfarm.core.jobs import JobRecord, StoredFrame
from maskfarm.jobqueue.store import JobStore
from maskfarm.server.events import JobEvents

REPLAY_CHUNK = 64
"""Most frames read from Redis at a time (catching up, or announced together): a worker's
model chunk of small frames is read with the job, in one round trip."""
REPLAY_BYTES = 1024 * 1024
"""Mask bytes a follower reads ahead at most (but always one frame): a watcher whose
client stops reading holds one chunk, so this bounds what each such stream costs."""


async def follow_job(
    store: JobStore,
    events: JobEvents,
    job_id: str,
    from_frame: int = 0,
    *,
    poll_interval: float = 5.0,
) -> AsyncIterator[JobRecord | StoredFrame]:
    """Yields the job, then its stored frames from ``from_frame`` on, then each new frame
    and each change of the job as they happen, ending with the job in a terminal state.

    Raises ``JobNotFound`` for an unknown job (or one that expires while followed).
    """
    frames = _FrameReplay(store, job_id, from_frame)
    async with events.inbox(job_id) as inbox:
        job, new_frames = await asyncio.to_thread(frames.catch_up)
        yield job
        reported: JobRecord | None = job  # the job as last yielded; None once frames followed it
        while True:
            async for result in frames.read(new_frames):
                reported = None
                yield result
                del result  # not held while waiting for events: a frame may be megabytes
            if job != reported:
                yield job
                reported = job
            if job.state.is_terminal:
                return
            woken = [await inbox.next(poll_interval), *inbox.pending()]
            announced = frames.announced([frame for event in woken for frame in _announced_frames(event)])
            job, results, new_frames = await asyncio.to_thread(frames.after_wake_up, announced)
            results.reverse()
            while results:
                reported = None
                yield results.pop()


class _FrameReplay:
    """The stored frames of one job from ``from_frame`` on, each given out once.

    Frames are only ever added to a job, so the job's count of stored frames says whether
    any is unknown: they are listed only then. A wake-up costs one round trip: the job
    and the frames announced, read together; the job's whole record (its frame names:
    tens of KB for a long job) is read once, at catch-up, and after that only what can
    change in it (``JobStore.job_with_frames`` given the job).
    """

    def __init__(self, store: JobStore, job_id: str, from_frame: int) -> None:
        self.store = store
        self.job_id = job_id
        self.job: JobRecord | None = None
        """The job as last read (it says which masks a frame has)."""
        self.from_frame = from_frame
        self.known: set[int] = set()
        """Stored frames seen so far: given out, or before ``from_frame``."""
        self.chunk = 1
        """Frames to read at once: as many as fit ``REPLAY_BYTES`` by the size of the
        frames read last (until a frame was read: one, or ``REPLAY_CHUNK`` for a job whose
        masks are files, whose frames are their paths), at most ``REPLAY_CHUNK``."""

    def catch_up(self) -> tuple[JobRecord, list[int]]:
        """The job, and the frames to give out that were stored and not seen yet (blocking)."""
        job = self.job = self.store.require_job(self.job_id)
        if job.output_dir:
            self.chunk = REPLAY_CHUNK
        return job, self._unseen(job)

    def after_wake_up(self, announced: list[int]) -> tuple[JobRecord, list[StoredFrame], list[int]]:
        """The job read again (its fields that change) together with the first
        ``REPLAY_CHUNK`` announced frames (one round trip; blocking), and the frames to read
        next: the other announced ones, then any stored and not seen yet."""
        first, rest = announced[: self.chunk], announced[self.chunk :]
        job, results = self.store.job_with_frames(self.job_id, first, self.job)
        self.job = job
        self._size_chunks(results)
        return job, results, rest + self._unseen(job)

    def _unseen(self, job: JobRecord) -> list[int]:
        if job.done_frames <= len(self.known):
            return []
        return self._to_give_out([index for index in self.store.done_frames(self.job_id) if index not in self.known])

    def announced(self, indices: list[int]) -> list[int]:
        """The announced frames not seen yet, to give out in the order announced."""
        return self._to_give_out([index for index in dict.fromkeys(indices) if index not in self.known])

    def _to_give_out(self, new: list[int]) -> list[int]:
        self.known.update(new)
        return [index for index in new if index >= self.from_frame]

    async def read(self, indices: list[int]) -> AsyncIterator[StoredFrame]:
        """The frames at ``indices``, ``self.chunk`` at a time to bound the server's memory;
        a frame is let go of once given out."""
        start = 0
        while start < len(indices):
            chunk = indices[start : start + self.chunk]
            start += len(chunk)
            results = await asyncio.to_thread(self.store.frame_results, self.job_id, chunk, self.job)
            self._size_chunks(results)
            results.reverse()
            while results:
                yield results.pop()

    def _size_chunks(self, results: list[StoredFrame]) -> None:
        if results:
            frame_bytes = max(result.nbytes for result in results)
            self.chunk = max(1, min(REPLAY_CHUNK, REPLAY_BYTES // max(frame_bytes, 1)))


def _announced_frames(event: dict | None) -> list[int]:
    """The indices of the frames an event announces, in its order: ``{"frame": i}`` or
    ``{"frames": [i, j, ...]}`` (frames stored together); none for anything else (a state
    change, a sweep due, events possibly missed, a malformed event): then the store is read."""
    if not event:
        return []
    frame, frames = event.get("frame"), event.get("frames")
    if isinstance(frame, int) and _is_index(frame):
        return [frame]
    if isinstance(frames, list) and all(_is_index(index) for index in frames):
        return frames
    return []


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
