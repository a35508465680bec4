"""``Client``: maskfarm's Segmentation service from Python, synchronously.

    with Client("farm:50051") as client:
        masks = client.segment(["shot.1001.png", "shot.1002.png"], ["red car", "sky"], dilate=4)
        masks[0].masks[0]          # float32 (H, W) in [0, 1]: frame 0, "red car"

Every call has a deadline (``timeout`` seconds) and is retried, with backoff, only after
UNAVAILABLE (see ``maskfarm.client.retries``); failures raise the ``MaskfarmError``
subclasses of ``maskfarm.client.errors``. ``submit`` always sends a ``request_id`` (a new
UUID unless given), so a retried submission never makes a second job.

Needs grpcio, protobuf, numpy and Pillow only: no torch, no Redis.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import grpc

from maskfarm.client.errors import (
    DeadlineExceeded,
    FrameRefused,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    MaskfarmError,
    RequestTooLarge,
    frame_refused,
    from_rpc_error,
)
from maskfarm.client.frames import EncodedFrame, FrameSource, encode_frame
from maskfarm.client.job_options import JobOptions, job_options
from maskfarm.client.jobs import Job, JobState, WorkerInfo
from maskfarm.client.masks import FrameMasks, FrameResult
from maskfarm.client.prompts import Prompt
from maskfarm.client.retries import Retries
from maskfarm.client.security import ChannelSecurity, Pem
from maskfarm.client.splitting import split_frames
from maskfarm.core.defaults import DEFAULT_TARGET
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

DEFAULT_MAX_MESSAGE_MIB = 64
WAIT_POLL_S = (0.05, 2.0)
"""``wait`` polls GetJob from every 50 ms, slowing by half each time, to every 2 s."""

Frames = Iterable[FrameSource | tuple[str, FrameSource]]
T = TypeVar("T")


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """The send limit; no receive limit, since the server sizes its replies to its own
    limit, which the client does not know; and keepalive pings so a dead server is noticed
    on a long WatchJob stream (every 30 s while a call is open; the server allows one per
    10 s, and any number without data)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", -1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class Client:
    """A connection to a maskfarm server.

    ``target`` is ``host:port`` (default: ``$MASKFARM_TARGET``, else ``localhost:50051``);
    ``timeout`` the deadline of each call, in seconds; ``max_message_mib`` the largest
    message the client sends, which should be at most the server's (submissions larger
    than this are split by ``submit_parts`` and ``segment``); ``retries`` how UNAVAILABLE is retried
    (an int is a number of retries). Use it as a context manager, or call ``close``.

    ``token`` is sent as a bearer token with every call (for servers started with
    ``--auth-tokens``); ``tls`` turns on TLS, verified against ``ca_cert`` (default: the
    system's CAs), with ``client_cert`` and ``client_key`` for mutual TLS (PEM paths or
    bytes; any of them implies ``tls``). Unset, each falls back to its environment variable:
    ``MASKFARM_TOKEN``, ``MASKFARM_TLS``, ``MASKFARM_TLS_CA``, ``MASKFARM_TLS_CLIENT_CERT``,
    ``MASKFARM_TLS_CLIENT_KEY`` (see ``maskfarm.client.security``).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = 30.0,
        max_message_mib: int | None = None,
        retries: Retries | int = Retries(),
        token: str | None = None,
        tls: bool | None = None,
        ca_cert: Pem | None = None,
        client_cert: Pem | None = None,
        client_key: Pem | None = None,
    ) -> None:
        self.target = target or os.environ.get("MASKFARM_TARGET") or DEFAULT_TARGET
        self.timeout = timeout
        if max_message_mib is None:
            max_message_mib = int(os.environ.get("MASKFARM_MAX_MESSAGE_MIB") or DEFAULT_MAX_MESSAGE_MIB)
        self.max_message_bytes = max_message_mib * 1024 * 1024
        self.retries = Retries(attempts=retries) if isinstance(retries, int) else retries
        security = ChannelSecurity.resolve(
            token=token, tls=tls, ca_cert=ca_cert, client_cert=client_cert, client_key=client_key
        )
        self._channel = security.channel(self.target, channel_options(self.max_message_bytes))
        self._stub = pb_grpc.SegmentationStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def submit(
        self,
        frames: Frames,
        prompts: Sequence[str | Prompt],
        options: JobOptions | None = None,
        *,
        request_id: str | None = None,
        **changes: Any,
    ) -> Job:
        """Queues one job and returns it (QUEUED, or the earlier job of a repeated
        ``request_id``). ``options`` (``JobOptions``: mask parameters, format, priority,
        labels, keep_going, EXR reading, output_dir), changed by any of its fields given as
        keywords (``dilate=4``). Shared storage: frames may be ``StoragePath`` objects.
        Raises ``RequestTooLarge`` when the frames do not fit in one message:
        ``submit_parts`` splits them instead."""
        request = job_options(options, changes).request(prompts)
        encoded = [encode_frame(frame) for frame in frames]
        parts = split_frames(encoded, request, self.max_message_bytes)
        if len(parts) > 1:
            raise RequestTooLarge(
                f"{len(encoded)} frames need {len(parts)} messages of at most "
                f"{self.max_message_bytes / 2**20:.0f} MiB: use submit_parts (or segment), which split them"
            )
        return self._submit_parts(request, parts[0], request_id or str(uuid.uuid4()))[0]

    def submit_parts(
        self,
        frames: Frames,
        prompts: Sequence[str | Prompt],
        options: JobOptions | None = None,
        *,
        request_id: str | None = None,
        **changes: Any,
    ) -> list[Job]:
        """Like ``submit``, but frames that do not fit in one message are split, in order,
        into as few jobs as fit: returns the jobs in frame order (each job's
        ``total`` says how many frames it took). A split request's parts get the request
        ids ``f"{request_id}-{n}"``, n = 1, 2, ..., so repeating the call is safe too.
        A frame the server refuses raises ``FrameRefused`` naming it (and its index among
        ``frames``); the parts already queued are then cancelled."""
        request = job_options(options, changes).request(prompts)
        return self._submit_parts(request, [encode_frame(frame) for frame in frames], request_id or str(uuid.uuid4()))

    def submit_leaving_out_refused(
        self,
        frames: Frames,
        prompts: Sequence[str | Prompt],
        options: JobOptions | None = None,
        *,
        request_id: str | None = None,
        **changes: Any,
    ) -> SubmittedFrames:
        """``submit_parts``, except that with ``keep_going=True`` a frame the server refuses
        (one it cannot read, say) is left out, like a frame that fails in a worker, and the
        others are queued: returns the jobs, which of ``frames`` they hold, and the
        refusals. Without ``keep_going`` a refusal raises ``FrameRefused``."""
        request_id = request_id or str(uuid.uuid4())
        request = job_options(options, changes).request(prompts)
        encoded = [encode_frame(frame) for frame in frames]
        kept, refused = list(range(len(encoded))), list[FrameRefused]()
        while kept:
            attempt = request_id if not refused else f"{request_id}-without-{len(refused)}"
            try:
                return SubmittedFrames(self._submit_parts(request, [encoded[i] for i in kept], attempt), kept, refused)
            except FrameRefused as error:
                if not request.keep_going:
                    raise
                refused.append(error.moved_to(kept.pop(error.frame_index)))
        return SubmittedFrames([], [], refused)

    def get(self, job_id: str) -> Job:
        """The job's state, progress, error and provenance now. Raises ``JobNotFound``."""
        reply = self._call(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))
        return Job.from_message(reply.job)

    def results(self, job_id: str, *, first_frame: int = 0) -> Iterator[FrameResult]:
        """The masks of the job's frames finished so far (from ``first_frame`` on), in frame
        order, fetched page by page with GetJob; unfinished frames are skipped."""
        while True:
            request = pb.GetJobRequest(job_id=job_id, include_masks=True, first_frame=first_frame)
            reply = self._call(self._stub.GetJob, request)
            for frame in reply.frames:
                yield FrameResult.from_message(frame)
            if reply.next_frame >= reply.job.progress.total_frames or reply.next_frame <= first_frame:
                return
            first_frame = reply.next_frame

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Polls the job until it ends and returns it, SUCCEEDED. Raises ``JobFailed`` or
        ``JobCancelled`` when it ended otherwise, ``DeadlineExceeded`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause, longest = WAIT_POLL_S
        while True:
            job = self.get(job_id)
            if job.state.terminal:
                return succeeded(job)
            if deadline is not None and time.monotonic() + pause > deadline:
                raise DeadlineExceeded(f"job {job_id} is still {job.state.value} after {timeout:g} s")
            time.sleep(pause)
            pause = min(pause * 1.5, longest)

    def watch(self, job_id: str, *, from_frame: int = 0, timeout: float | None = None) -> Iterator[Job | FrameResult]:
        """Streams the job: ``Job`` updates (first, after each frame, on each state change,
        and last, terminal) and each finished frame's ``FrameResult`` (frames finished
        earlier, from ``from_frame`` on, come first). Ends after the terminal ``Job``, which
        the server sends when the stream ends; a job that had ended before the call is
        also reported first, so the stored frames follow a terminal ``Job``.

        A stream dropped with UNAVAILABLE is resumed (within ``retries``, counted afresh
        after every event) from the first frame not yet received, and frames received
        before are not yielded again: every frame arrives exactly once, though frames
        can finish, and arrive, in any order. ``timeout`` bounds the whole watch (default:
        none; keepalive pings notice a dead server)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: set[int] = set()
        resume_at = from_frame
        retry = 0
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            stream = self._stub.WatchJob(pb.WatchJobRequest(job_id=job_id, from_frame=resume_at), timeout=remaining)
            try:
                for event in stream:
                    retry = 0
                    if event.HasField("job"):
                        yield Job.from_message(event.job)
                    elif event.frame.frame_index not in seen:
                        seen.add(event.frame.frame_index)
                        while resume_at in seen:
                            resume_at += 1
                        yield FrameResult.from_message(event.frame)
                return
            except grpc.RpcError as error:
                if not self.retries.should_retry(error, retry):
                    raise from_rpc_error(error) from error
            finally:
                stream.cancel()
            time.sleep(self.retries.delay(retry))
            retry += 1

    def cancel(self, job_id: str) -> Job:
        """Cancels the job (see CancelJob) and returns it: CANCELLED if it was queued, else
        with ``cancel_requested`` set; a finished job is returned unchanged."""
        return Job.from_message(self._call(self._stub.CancelJob, pb.CancelJobRequest(job_id=job_id)))

    def jobs(
        self,
        *,
        state: str | JobState | Iterable[str | JobState] | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
    ) -> Iterator[Job]:
        """Jobs, newest first, in one of the given states (any, by default) and carrying
        every given label; pages are fetched as the iteration goes."""
        states = [state] if isinstance(state, str) else list(state or ())
        request = pb.ListJobsRequest(
            states=[_state(s).proto for s in states],
            labels=dict(labels or {}),
            page_size=page_size,
        )
        while True:
            reply = self._call(self._stub.ListJobs, request)
            for job in reply.jobs:
                yield Job.from_message(job)
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    def workers(self) -> list[WorkerInfo]:
        """The live workers."""
        reply = self._call(self._stub.ListWorkers, pb.ListWorkersRequest())
        return [WorkerInfo.from_message(worker) for worker in reply.workers]

    def segment(
        self,
        frames: Frames,
        prompts: Sequence[str | Prompt],
        options: JobOptions | None = None,
        *,
        as_pil: bool = False,
        timeout: float | None = None,
        request_id: str | None = None,
        **changes: Any,
    ) -> list[FrameMasks]:
        """Submits the frames (split into several jobs if need be; ``options``, changed by
        keywords, as for ``submit``), streams the masks back and returns them per frame, in frame order,
        decoded to float32 arrays in [0, 1] (or PIL images with ``as_pil``).

        With ``keep_going=True`` a frame that fails (in a worker, or refused by the server
        as unreadable) does not fail its job: it is returned too, in its place, with
        ``error`` set (``FrameMasks.failed``) and no masks, so callers check ``frame.error``
        instead of catching an exception. Without it, a refused frame raises ``FrameRefused``.

        With ``output_dir`` (shared storage) the masks are read back from the files the
        workers wrote, so this host must see them at the same paths; to have the files
        written without reading them, use ``submit_parts`` and ``wait``.

        Raises ``JobFailed`` / ``JobCancelled`` if a job ends so (the other parts are then
        cancelled), and ``DeadlineExceeded`` after ``timeout`` seconds in all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        submitted = self.submit_leaving_out_refused(frames, prompts, options, request_id=request_id, **changes)
        masks = [
            FrameMasks(refusal.frame_index, refusal.frame_name, (), error=refusal.reason)
            for refusal in submitted.refused
        ]
        offset = 0
        try:
            for job in submitted.jobs:
                remaining = None if deadline is None else deadline - time.monotonic()
                for event in self.watch(job.id, timeout=remaining):
                    if isinstance(event, FrameResult):
                        place = submitted.kept[offset + event.index]  # its index among ``frames``
                        masks.append(event.shifted(place - event.index).decode(as_pil=as_pil))
                    else:
                        job = event
                succeeded(job)
                offset += job.total
        except BaseException:
            for job in submitted.jobs:
                self._cancel_quietly(job.id)
            raise
        return sorted(masks, key=lambda frame: frame.index)

    def _submit_parts(self, request: pb.SubmitJobRequest, frames: list[EncodedFrame], request_id: str) -> list[Job]:
        """``frames`` split into as few jobs as fit; a refused frame raises ``FrameRefused``
        once the jobs already queued are cancelled."""
        parts = split_frames(frames, request, self.max_message_bytes)
        jobs: list[Job] = []
        first = 0
        try:
            for n, part in enumerate(parts, 1):
                jobs.append(self._submit(request, part, request_id if len(parts) == 1 else f"{request_id}-{n}"))
                first += len(part)
        except InvalidRequest as error:
            for job in jobs:
                self._cancel_quietly(job.id)
            refusal = frame_refused(error, first, [frame.name for frame in parts[len(jobs)]])
            if refusal is None:
                raise
            raise refusal from error
        return jobs

    def _submit(self, request: pb.SubmitJobRequest, frames: list[EncodedFrame], request_id: str) -> Job:
        whole = pb.SubmitJobRequest()
        whole.CopyFrom(request)
        whole.frames.extend(frame.message() for frame in frames)
        whole.request_id = request_id
        return Job.from_message(self._call(self._stub.SubmitJob, whole))

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return self.retries.run(lambda: method(request, timeout=self.timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def _cancel_quietly(self, job_id: str) -> None:
        try:
            self.cancel(job_id)
        except MaskfarmError:
            pass


@dataclass(frozen=True)
class SubmittedFrames:
    """What ``Client.submit_leaving_out_refused`` queued."""

    jobs: list[Job]
    kept: list[int]
    """The indices, among the frames given, of the frames the jobs hold, in job order."""
    refused: list[FrameRefused] = field(default_factory=list)
    """The frames left out, each with its index among the frames given."""


def succeeded(job: Job) -> Job:
    """The job, if it SUCCEEDED; raises ``JobFailed`` or ``JobCancelled`` if it ended so."""
    if job.state is JobState.FAILED:
        raise JobFailed(job.id, job.error_code or "UNSPECIFIED", job.error_message)
    if job.state is JobState.CANCELLED:
        raise JobCancelled(job.id)
    return job


def _state(value: str | JobState) -> JobState:
    try:
        return value if isinstance(value, JobState) else JobState(value.upper())
    except ValueError:
        known = ", ".join(state.value.lower() for state in JobState)
        raise InvalidRequest(f"states: unknown state {value!r} (known: {known})") from None
