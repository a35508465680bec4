"""The job store: the Redis keys maskfarm keeps, and the only code that reads or writes them.

This module is the contract between the server and the worker: both go through ``JobStore``
and neither touches the keys directly. It imports redis, the standard library and maskfarm.core.

The keys and their layout: ``maskfarm.jobqueue.keys``; how records and frames are written
in them: ``maskfarm.jobqueue.records``; index entries and page tokens of ListJobs:
``maskfarm.jobqueue.listing``.

Every key expires. While a job may still wait or run, its record and results live for
``inputs_ttl + result_ttl`` and its inputs for ``inputs_ttl`` (both chosen at creation).
When the job ends its inputs are deleted and everything else expires ``result_ttl`` seconds
later. A job still queued after its queue deadline fails as expired the first time anyone
reads it (so it fails visibly, never silently). The indexes live as long as their newest
job and drop members whose job has expired when they are read.

Every state change and every stored frame is published on the job's events channel after
the data is written, in the same transaction or script, so a subscriber that reads the store after
subscribing misses nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from maskfarm.core.defaults import DEFAULT_NAMESPACE
from maskfarm.core.jobs import (
    ErrorCode,
    JobRecord,
    JobSpec,
    JobState,
    Provenance,
    StoredFrame,
    WorkerRecord,
)
from maskfarm.jobqueue import listing, records, transitions
from maskfarm.jobqueue.keys import JOB_ID_PATTERN, Keys
from maskfarm.jobqueue.redis_clients import Command, ReplicaWait, script_and_reads, transaction, watch_and_read

_LIST_SCAN_LIMIT = 2000
"""ListJobs reads at most this many index entries per page (the page may come back short)."""


class Admission(Protocol):
    """What decides whether ``JobStore.create`` may store a new job (the server's backlog
    limits): ``reads()`` are the commands whose replies it decides on (``("LLEN", key)``),
    sent with the request id's check; ``check(spec, replies)`` raises to refuse the job."""

    def reads(self) -> Sequence[Command]: ...

    def check(self, spec: JobSpec, replies: Sequence[Any]) -> None: ...


class JobNotFound(LookupError):
    """No such job: never created, or expired."""


class InputsExpired(LookupError):
    """A job's frames are gone: it waited or ran longer than its inputs were kept."""


class StopReason(str, enum.Enum):
    """Why a run of a job should stop before its last frame (``JobStore.stop_reason``)."""

    NOT_RUNNING = "not_running"
    """The job is gone or no longer running: nothing for this run to record."""
    SUPERSEDED = "superseded"
    """A later run of the job started (this one was taken for dead)."""
    CANCELLED = "cancelled"
    """Cancelling was requested of this run, which then records the cancellation."""


_FORGET_QUEUED = """
for _, id in ipairs(ARGV) do
    local bytes = redis.call('HGET', KEYS[1], id)
    if bytes then
        redis.call('HDEL', KEYS[1], id)
        redis.call('DECRBY', KEYS[2], bytes)
    end
    redis.call('ZREM', KEYS[3], id)
end
return 0
"""
"""forget_queued, atomically: KEYS backlog jobs, backlog bytes, queued; ARGV the job ids."""

_STORE_FRAMES = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
    return 'gone'
end
local stop = false
if ARGV[1] ~= '' then
    local run = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'cancel_requested')
    if run[1] ~= 'running' then
        return 'not_running'
    end
    if run[2] ~= ARGV[1] then
        return 'superseded'
    end
    stop = run[3] == '1'
end
local done, masks, failed, recovered = {}, {}, {}, {}
local at = 5
for _ = 1, tonumber(ARGV[4]) do
    local index, meta, error, fields = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
    done[#done + 1] = index
    done[#done + 1] = meta
    if error ~= '' then
        failed[#failed + 1] = index
        failed[#failed + 1] = error
    else
        recovered[#recovered + 1] = index
    end
    for k = at + 4, at + 3 + 2 * fields do
        masks[#masks + 1] = ARGV[k]
    end
    at = at + 4 + 2 * fields
end
local function hset(key, values)
    for first = 1, #values, 1000 do
        redis.call('HSET', key, unpack(values, first, math.min(first + 999, #values)))
    end
    redis.call('PEXPIRE', key, ttl)
end
if #masks > 0 then
    hset(KEYS[2], masks)
end
if #failed > 0 then
    hset(KEYS[3], failed)
end
if #recovered > 0 then
    for first = 1, #recovered, 1000 do
        redis.call('HDEL', KEYS[3], unpack(recovered, first, math.min(first + 999, #recovered)))
    end
end
hset(KEYS[4], done)
redis.call('PUBLISH', ARGV[2], ARGV[3])
if stop then
    return 'cancelled'
end
return 'stored'
"""
"""Frames' results stored together with the job record's remaining life, and announced in
one event, all or nothing. KEYS: job, masks, failed, done. ARGV: the run (its attempt
number; "" for any state), events channel, event, frame count, then per frame: index,
meta, error ("" for none), its count of mask fields, those fields' name/value pairs.
Returns 'stored', 'cancelled' (stored; cancelling was asked), or without storing anything:
'gone' (no record), 'not_running' or 'superseded' (the run is not the job's current one)."""

_FINISH_RUN = (
    "local function store_frames(KEYS, ARGV)\n"
    + _STORE_FRAMES
    + "end\nlocal function transition(KEYS, ARGV)\n"
    + transitions.TRANSITION
    + """end
local split = tonumber(ARGV[1])
local stored_args, change_args = {}, {}
for i = 2, split + 1 do
    stored_args[#stored_args + 1] = ARGV[i]
end
for i = split + 2, #ARGV do
    change_args[#change_args + 1] = ARGV[i]
end
local stored = store_frames({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, stored_args)
if stored ~= 'stored' then
    return stored
end
return transition({KEYS[1], KEYS[4], KEYS[3], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[2]}, change_args)
"""
)
"""A run's last frames stored (``_STORE_FRAMES``) and, if they were and the run goes on,
the job ended (``transitions.TRANSITION``), in one script: each script's own body as a
local function. KEYS: job, masks, failed, done, backlog bytes, backlog jobs, queued,
inputs. ARGV: the store's argument count, its arguments, the transition's. Returns the
store's answer when it is not 'stored', else the transition's outcome ('changed' ...)."""

_STOP_REASONS = {reason.value.encode(): reason for reason in StopReason}
_QUEUED = JobState.QUEUED.value.encode()
_RUNNABLE = {_QUEUED, JobState.RUNNING.value.encode()}


class JobStore:
    """Jobs, their inputs and their masks in Redis.

    ``redis`` must return bytes (``decode_responses=False``, the default); with
    ``replica_wait`` a new job counts as stored once replicas hold it. Methods raise
    ``JobNotFound`` for an unknown job where the caller has to know, and redis' own
    ``ConnectionError``/``TimeoutError`` when Redis cannot be reached.
    """

    def __init__(
        self, redis: Redis, namespace: str = DEFAULT_NAMESPACE, replica_wait: ReplicaWait | None = None
    ) -> None:
        self.redis = redis
        self.keys = Keys(namespace)
        self.replica_wait = replica_wait
        self._store_frames = redis.register_script(_STORE_FRAMES)
        self._forget_queued = redis.register_script(_FORGET_QUEUED)
        self._change = redis.register_script(transitions.TRANSITION)
        self._finish_run = redis.register_script(_FINISH_RUN)

    # -- creating (server) -------------------------------------------------------------

    def create(
        self,
        spec: JobSpec,
        *,
        queue_ttl: int,
        inputs_ttl: int,
        result_ttl: int,
        admit: Admission | None = None,
        enqueue: Callable[[Pipeline, JobRecord], None] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Stores a new queued job and its frames; returns ``(job, created)``.

        With a ``request_id`` already used by a kept job, stores nothing and returns that
        job with ``created`` False (``admit`` is not asked: a repeated request gets its job
        back even when new jobs would be refused). Otherwise ``admit.check`` may raise to
        refuse the job before anything is written (its reads go with the request id's
        ``WATCH`` and ``GET``: one round trip, then one for the transaction), and
        ``enqueue(pipe, job)`` adds the commands that queue it to the transaction that
        stores it, so a job is stored and queued together or not at all. A job never
        enqueued fails as expired at its queue deadline. With ``replica_wait``, the job
        (new or found) is on the replicas when this returns, else ``NotReplicated`` is
        raised.
        """
        request_key = self.keys.request(spec.request_id)
        watched = [request_key] if spec.request_id else []
        reads: list[Command] = [("GET", request_key)] if spec.request_id else []
        reads += admit.reads() if admit is not None else []
        with transaction(self.redis, self.replica_wait) as pipe:
            while True:
                try:
                    replies = watch_and_read(pipe, watched, reads) if reads else []
                    if spec.request_id:
                        existing = replies.pop(0)
                        if existing is not None and (job := self.get_job(_text(existing))):
                            if self.replica_wait:  # a write of this connection for WAIT to follow
                                pipe.multi()
                                pipe.set(request_key, existing, keepttl=True)
                                pipe.execute()
                            return job, False
                    if admit is not None:
                        admit.check(spec, replies)
                    job = records.new_record(spec, queue_ttl=queue_ttl, result_ttl=result_ttl)
                    pipe.multi()
                    self._write_new_job(pipe, job, spec, inputs_ttl=inputs_ttl)
                    if enqueue is not None:
                        enqueue(pipe, job)
                    pipe.execute()
                    return job, True
                except WatchError:
                    continue

    def _write_new_job(self, pipe: Pipeline, job: JobRecord, spec: JobSpec, *, inputs_ttl: int) -> None:
        ttl = inputs_ttl + job.result_ttl
        if job.request_id:
            pipe.set(self.keys.request(job.request_id), job.id, ex=ttl)
        pipe.hset(self.keys.job(job.id), mapping=_hash_fields(records.encode_record(job)))
        pipe.expire(self.keys.job(job.id), ttl)
        pipe.hset(self.keys.inputs(job.id), mapping=_hash_fields(records.input_fields(spec)))
        pipe.expire(self.keys.inputs(job.id), inputs_ttl)
        member = listing.index_member(job)
        for index in [self.keys.index()] + [self.keys.label_index(k, v) for k, v in job.labels.items()]:
            pipe.zadd(index, {member: 0})
            _extend_ttl(pipe, index, ttl)
        pipe.incrby(self.keys.backlog_bytes(), job.input_bytes)
        _extend_ttl(pipe, self.keys.backlog_bytes(), ttl)
        pipe.hset(self.keys.backlog_jobs(), job.id, job.input_bytes)
        _extend_ttl(pipe, self.keys.backlog_jobs(), ttl)
        pipe.zadd(self.keys.queued(), {job.id: job.created_at})
        _extend_ttl(pipe, self.keys.queued(), ttl)

    # -- reading -----------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job, or None. A queued job past its queue deadline is failed as expired."""
        return self._load_jobs([job_id])[0]

    def get_jobs(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        """The jobs (None where unknown), in one round trip; queue deadlines apply."""
        return self._load_jobs(list(job_ids))

    def pending_frames(self, job_ids: Sequence[str]) -> list[int]:
        """Frames a run of each job would compute, in one round trip and reading only what
        that takes (not the records, whose frame names grow with the job): 0 for a job
        unknown, ended, asked to cancel or queued past its deadline (its own run ends it).
        The frames are its inputs' count, less those stored."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self.keys.job(job_id), ["state", "cancel_requested", "queue_deadline"])
                pipe.hlen(self.keys.inputs(job_id))
                pipe.hlen(self.keys.done(job_id))
            replies = pipe.execute()
        now = time.time()
        pending = []
        for (state, cancel, deadline), inputs, done in zip(replies[::3], replies[1::3], replies[2::3]):
            runnable = state in _RUNNABLE and cancel != b"1"
            late = state == _QUEUED and now > float(deadline or 0)
            pending.append(max(0, inputs - done) if runnable and not late else 0)
        return pending

    def get_job_for_request(self, request_id: str) -> JobRecord | None:
        """The kept job that a SubmitJob with this request id made, or None."""
        job_id = self.redis.get(self.keys.request(request_id))
        return self.get_job(_text(job_id)) if job_id else None

    def require_job(self, job_id: str) -> JobRecord:
        """The job; raises ``JobNotFound``."""
        job = self.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _load_jobs(self, job_ids: list[str]) -> list[JobRecord | None]:
        """The jobs (None where unknown or not a job id), applying queue deadlines."""
        job_ids = [job_id if JOB_ID_PATTERN.fullmatch(job_id) else "" for job_id in job_ids]
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                self._read_record_into(pipe, job_id)
            replies = pipe.execute()
        return [self._loaded(*reply) for reply in zip(replies[::3], replies[1::3], replies[2::3])]

    def _loaded(self, fields: dict[bytes, bytes], done: int, failed: int) -> JobRecord | None:
        """A job from the three reads of ``_read_record_into`` (None if unknown), failed
        as expired if it waited in the queue past its deadline."""
        return self._in_time(records.decode_record(fields, done, failed) if fields else None)

    def _in_time(self, job: JobRecord | None) -> JobRecord | None:
        """``job`` as read (None: unknown), or failed as expired if it waited in the queue
        past its deadline."""
        if job and job.state is JobState.QUEUED and time.time() > job.queue_deadline:
            job = self._expire(job)
        return job

    def _expire(self, job: JobRecord) -> JobRecord | None:
        expired = records.finished(JobState.FAILED, ErrorCode.EXPIRED, records.expiry_message(job))
        try:
            return self._transition(job.id, {JobState.QUEUED}, expired)[1]
        except JobNotFound:
            return None

    def done_frames(self, job_id: str) -> list[int]:
        """Indices of the frames whose masks are stored, ascending."""
        return sorted(int(index) for index in self.redis.hkeys(self.keys.done(job_id)))

    def frame_results(self, job_id: str, indices: Iterable[int], job: JobRecord | None = None) -> list[StoredFrame]:
        """The stored results among ``indices``, in that order (missing ones skipped).

        Given the ``job``, whose prompts and params say which masks a frame has, their
        fields are read in the same round trip as the frames' own (one instead of two).
        """
        indices = list(indices)
        expected = records.expected_mask_fields(indices, job)
        with self.redis.pipeline(transaction=False) as pipe:
            self._read_frames_into(pipe, job_id, indices, expected)
            replies = pipe.execute()
        return self._frame_results_from(job_id, indices, expected, replies)

    def job_with_frames(
        self, job_id: str, indices: Iterable[int], job: JobRecord | None
    ) -> tuple[JobRecord, list[StoredFrame]]:
        """The job read again, and its stored results among ``indices`` (``frame_results``
        given the ``job`` as last read), in one round trip: what a watcher needs once
        frames are announced. Given the ``job``, only its fields that change are read
        (``records.MUTABLE_FIELDS``: not its frame names, which grow with the job); without
        it, the whole record. Queue deadlines apply. Raises ``JobNotFound``."""
        indices = list(indices)
        expected = records.expected_mask_fields(indices, job)
        with self.redis.pipeline(transaction=False) as pipe:
            if job is None:
                self._read_record_into(pipe, job_id)
            else:
                self._read_changes_into(pipe, job_id)
            self._read_frames_into(pipe, job_id, indices, expected)
            read, done, failed, *replies = pipe.execute()
        if job is None:
            again = self._loaded(read, done, failed)
        else:
            again = self._in_time(records.refreshed(job, read, done, failed))
        if again is None:
            raise JobNotFound(job_id)
        return again, self._frame_results_from(job_id, indices, expected, replies)

    def _read_frames_into(self, pipe: Pipeline, job_id: str, indices: list[int], expected: list[str]) -> None:
        """The reads ``_frame_results_from`` takes: the frames' metas, and the ``expected``
        mask fields."""
        if indices:
            pipe.hmget(self.keys.done(job_id), [str(i) for i in indices])
        if expected:
            pipe.hmget(self.keys.masks(job_id), expected)

    def _frame_results_from(
        self, job_id: str, indices: list[int], expected: list[str], replies: list
    ) -> list[StoredFrame]:
        """The results read by ``_read_frames_into``; fields the frames have beyond the
        ``expected`` ones are read now."""
        if not indices:
            return []
        metas, *masks = replies
        values = dict(zip(expected, masks[0])) if masks else {}
        found = [(index, json.loads(meta)) for index, meta in zip(indices, metas) if meta is not None]
        if unread := [
            field for index, meta in found for field in records.mask_fields(index, meta) if field not in values
        ]:
            values.update(zip(unread, self.redis.hmget(self.keys.masks(job_id), unread)))
        return [records.stored_frame(index, meta, values) for index, meta in found]

    def frame_page(self, job: JobRecord, first: int, max_frames: int, max_bytes: int) -> tuple[list[StoredFrame], int]:
        """Stored results with index in ``[first, first + max_frames)`` (0: no count limit),
        as many as fit in ``max_bytes`` of mask data (at least one); and where the next
        page starts (``job.total_frames`` when this page reached the end)."""
        end = job.total_frames if max_frames <= 0 else min(job.total_frames, first + max_frames)
        metas = {int(i): json.loads(meta) for i, meta in self.redis.hgetall(self.keys.done(job.id)).items()}
        chosen: list[int] = []
        size = 0
        for index in sorted(i for i in metas if first <= i < end):
            size += metas[index]["bytes"]
            if chosen and size > max_bytes:
                return self.frame_results(job.id, chosen, job), index
            chosen.append(index)
        return self.frame_results(job.id, chosen, job), max(end, first)

    def load_exemplar(self, job_id: str, prompt_index: int) -> bytes:
        """The image file of the job's image prompt ``prompt_index`` sent as bytes (kept
        with the frames, not in the job record, which every listing reads); raises
        ``InputsExpired``."""
        data = self.redis.hget(self.keys.inputs(job_id), records.exemplar_field(prompt_index))
        if data is None:
            raise InputsExpired(f"the image prompts of job {job_id} are no longer stored")
        return cast(bytes, data)

    def load_frames(self, job_id: str, indices: Iterable[int]) -> list[bytes]:
        """The encoded files of the job's frames (worker); raises ``InputsExpired``."""
        indices = list(indices)
        frames = self.redis.hmget(self.keys.inputs(job_id), [str(i) for i in indices])
        if any(frame is None for frame in frames):
            raise InputsExpired(f"the frames of job {job_id} are no longer stored")
        return cast("list[bytes]", frames)

    def list_jobs(
        self,
        states: Collection[JobState] = (),
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[JobRecord], str]:
        """Jobs newest first, in any of ``states`` (all when empty) and carrying every
        label in ``labels``; and the token of the next page ("" at the end).

        Raises ``ValueError`` for a page token this store did not make.
        """
        index = self._narrowest_index(labels or {})
        after = listing.decode_page_token(page_token)
        jobs: list[JobRecord] = []
        scanned = 0
        while scanned < _LIST_SCAN_LIMIT:
            newest = f"({after}" if after else "+"
            batch = [_text(member) for member in self.redis.zrevrangebylex(index, newest, "-", 0, 100)]
            if not batch:
                return jobs, ""
            scanned += len(batch)
            records = self._load_jobs([member.split(":", 1)[1] for member in batch])
            for member, job in zip(batch, records):
                after = member
                if job is None:
                    self.redis.zrem(index, member)
                elif (not states or job.state in states) and listing.has_labels(job, labels or {}):
                    jobs.append(job)
                    if len(jobs) == page_size:
                        return jobs, listing.encode_page_token(member)
        return jobs, listing.encode_page_token(after)

    def _narrowest_index(self, labels: Mapping[str, str]) -> str:
        if not labels:
            return self.keys.index()
        indexes = [self.keys.label_index(key, value) for key, value in labels.items()]
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zcard(index)
            sizes = pipe.execute()
        return min(zip(sizes, indexes))[1]

    def queued_before(self, timestamp: float, limit: int) -> list[str]:
        """Ids of up to ``limit`` jobs still QUEUED that were created before ``timestamp``,
        oldest first (``forget_queued`` drops ids whose record is gone)."""
        ids = self.redis.zrangebyscore(self.keys.queued(), "-inf", timestamp, start=0, num=limit)
        return [_text(job_id) for job_id in cast("list[bytes]", ids)]  # members only: no scores asked

    def forget_queued(self, job_ids: Iterable[str]) -> None:
        """Drops queued jobs whose record is gone (expired during a long outage, say) from
        the queued index, releasing their share of the backlog bytes."""
        if job_ids := list(job_ids):
            keys = [self.keys.backlog_jobs(), self.keys.backlog_bytes(), self.keys.queued()]
            self._forget_queued(keys=keys, args=job_ids)

    def queued_bytes(self) -> int:
        """Encoded bytes of the frames of all queued jobs (the backlog's weight)."""
        return int(self.redis.get(self.keys.backlog_bytes()) or 0)

    # -- state changes -----------------------------------------------------------------

    def mark_running(self, job_id: str, provenance: Provenance, continuing: int | None = None) -> JobRecord | None:
        """Starts (or, after a lost worker, restarts) a job; returns it, running.

        Returns None when the job must not run: unknown, expired, finished or cancelled.
        A job whose cancellation was requested is marked cancelled here, and a queued job
        past its queue deadline failed as expired. One script call (``transitions``).

        ``continuing=n``: run number n of the job already started (its frames were made
        in another job's batch, see ``maskfarm.worker.batching``) and goes on: nothing
        changes, ``attempts`` is not counted again; None when that run is no longer the
        job's current one (a later run took over).
        """
        if continuing is not None:
            job = self.get_job(job_id)
            if job is not None and job.cancel_requested and not job.state.is_terminal:
                self.mark_cancelled(job_id)
                return None
            return job if job and job.state is JobState.RUNNING and job.attempts == continuing else None

        keys, args = self._start_call(job_id, provenance)
        replies = script_and_reads(
            self.redis, self._change, keys, args, lambda pipe: self._read_record_into(pipe, job_id)
        )
        return _running(replies)

    def start_in(
        self, pipe: Pipeline, job_id: str, provenance: Provenance
    ) -> Callable[[Sequence[Any]], JobRecord | None]:
        """``mark_running`` (no ``continuing``) queued last in a transaction the caller
        sends, such as the worker's own start of the job in RQ's registries: one round trip
        for both. Returns how to read the job, as ``mark_running`` returns it, from the
        replies of ``pipe.execute(raise_on_error=False)``; that raises the script's error
        reply, ``NoScriptError`` when Redis lacks the script (restarted, failed over):
        nothing was started then, and ``mark_running`` (which loads it) is the way on."""
        keys, args = self._start_call(job_id, provenance)
        pipe.evalsha(self._change.sha, len(keys), *keys, *args)
        self._read_record_into(pipe, job_id)
        return lambda replies: _running(replies[-4:])

    def _start_call(self, job_id: str, provenance: Provenance) -> tuple[list[str], list[str]]:
        """The ``TRANSITION`` script's keys and arguments that start a run with ``provenance``."""
        args = self._transition_args(
            job_id, {JobState.QUEUED, JobState.RUNNING}, provenance=json.dumps(dataclasses.asdict(provenance))
        )
        return transitions.transition_keys(self.keys, job_id), args

    def store_frame_result(self, job_id: str, result: StoredFrame) -> None:
        """Stores one frame's masks (or mask paths, or failure) together and announces
        them, in one round trip, whatever the job's state (``store_frame_results`` without
        a run). They live as long as the job record. Storing a frame again replaces it."""
        self.store_frame_results(job_id, [result])

    def store_frame_results(
        self, job_id: str, results: Sequence[StoredFrame], attempt: int | None = None
    ) -> StopReason | None:
        """Stores several frames' results in one round trip, all or nothing, announced in
        one event (``{"frames": [...]}`` in the order given; ``{"frame": i}`` for one):
        the worker's write of a model chunk. They live as long as the job record; storing
        a frame again replaces it.

        With ``attempt``, fenced by the run: stored only while run number ``attempt`` is
        the job's current one and the job is running. Returns why that run should stop
        (``stop_reason``'s answers): ``"not_running"`` or ``"superseded"`` when nothing
        was stored, ``"cancelled"`` when stored and cancelling was asked; None to go on.
        Raises ``JobNotFound`` when the job's record is gone (nothing stored)."""
        if not results:
            return None
        answer = self._store_frames(keys=self._frame_keys(job_id), args=self._frame_args(job_id, results, attempt))
        if answer == b"gone":
            raise JobNotFound(job_id)
        return _STOP_REASONS.get(answer)

    def finish_run(self, job_id: str, results: Sequence[StoredFrame], attempt: int) -> StopReason | None:
        """Stores run number ``attempt``'s last frames (``store_frame_results``) and ends
        the job as succeeded, in one round trip and one script run (the worker's last
        write of a job, which otherwise takes two of each). Returns None when the job
        succeeded; else why the run stops, as ``store_frame_results`` answers, and the job
        is left as it was (``CANCELLED``: the frames stored, cancelling asked, the job
        still running; ``NOT_RUNNING`` also when it was no longer running with no frames
        to store). Raises ``JobNotFound`` when the job's record is gone."""
        if not results:
            return None if self.mark_succeeded(job_id) else StopReason.NOT_RUNNING
        stored = self._frame_args(job_id, results, attempt)
        change = self._transition_args(job_id, {JobState.RUNNING}, records.finished(JobState.SUCCEEDED))
        keys = self._frame_keys(job_id) + [
            self.keys.backlog_bytes(),
            self.keys.backlog_jobs(),
            self.keys.queued(),
            self.keys.inputs(job_id),
        ]
        answer = self._finish_run(keys=keys, args=[len(stored), *stored, *change])
        if answer == b"gone":
            raise JobNotFound(job_id)
        if answer == b"changed":
            return None
        return _STOP_REASONS.get(answer, StopReason.NOT_RUNNING)

    def _frame_keys(self, job_id: str) -> list[str]:
        """The store script's keys: job, masks, failed, done."""
        return [self.keys.job(job_id), self.keys.masks(job_id), self.keys.failed(job_id), self.keys.done(job_id)]

    def _frame_args(self, job_id: str, results: Sequence[StoredFrame], attempt: int | None) -> list:
        """The store script's arguments for ``results`` (``_STORE_FRAMES``)."""
        indices = [result.index for result in results]
        event = {"frame": indices[0]} if len(indices) == 1 else {"frames": indices}
        args: list = [
            "" if attempt is None else str(attempt),
            self.keys.events(job_id),
            json.dumps(event),
            len(results),
        ]
        for result in results:
            args += records.frame_args(result)
        return args

    def cancel_requested(self, job_id: str) -> bool:
        """Whether a running job should stop (checked by the worker between batches).
        True too when the job is gone or no longer running."""
        state, flag = self.redis.hmget(self.keys.job(job_id), ["state", "cancel_requested"])
        return state != JobState.RUNNING.value.encode() or flag == b"1"

    def stop_reason(self, job_id: str, attempt: int) -> StopReason | None:
        """Why run number ``attempt`` of a job should stop now (worker, between batches):
        ``NOT_RUNNING`` when the job is gone or no longer running (it ended, e.g. failed
        as lost while this run was taken for dead), ``SUPERSEDED`` when a later run
        started, ``CANCELLED`` when cancelling was requested of this run, None to go on."""
        state, flag, attempts = self.redis.hmget(self.keys.job(job_id), ["state", "cancel_requested", "attempts"])
        if state != JobState.RUNNING.value.encode():
            return StopReason.NOT_RUNNING
        if int(attempts or 0) != attempt:
            return StopReason.SUPERSEDED
        return StopReason.CANCELLED if flag == b"1" else None

    def mark_succeeded(self, job_id: str) -> bool:
        """Ends a running job as succeeded; False if it was not running."""
        return self._changed(job_id, {JobState.RUNNING}, records.finished(JobState.SUCCEEDED))

    def mark_failed(self, job_id: str, code: ErrorCode, message: str) -> bool:
        """Ends a queued or running job as failed; False if it had already ended."""
        return self._changed(
            job_id, {JobState.QUEUED, JobState.RUNNING}, records.finished(JobState.FAILED, code, message)
        )

    def mark_cancelled(self, job_id: str) -> bool:
        """Ends a queued or running job as cancelled; False if it had already ended."""
        return self._changed(job_id, {JobState.QUEUED, JobState.RUNNING}, records.finished(JobState.CANCELLED))

    def cancel(self, job_id: str) -> JobRecord:
        """Cancels a job (server): a queued job at once, a running one by setting its
        ``cancel_requested`` flag for the worker. A finished job is left as it is."""
        changed, job = self._transition(job_id, {JobState.QUEUED}, records.finished(JobState.CANCELLED))
        if changed or job.state is not JobState.RUNNING:
            return job
        return self._transition(job_id, {JobState.RUNNING}, {"cancel_requested": "1"})[1]

    def _transition(
        self, job_id: str, allowed: Collection[JobState], fields: Mapping[str, str]
    ) -> tuple[bool, JobRecord]:
        """Writes ``fields`` to the record if its state is in ``allowed`` (a run starts
        through ``_start_call`` instead), atomically in one script call, and announces the
        change; returns whether it changed, and the job as it is after, read back in the
        same transaction. Leaving the queue releases the
        job's backlog bytes; a terminal state deletes the inputs and starts the result TTL.
        Raises ``JobNotFound`` when there is no record."""
        outcome, read, done, failed = script_and_reads(
            self.redis,
            self._change,
            transitions.transition_keys(self.keys, job_id),
            self._transition_args(job_id, allowed, fields),
            lambda pipe: self._read_record_into(pipe, job_id),
        )
        if outcome == b"gone" or not read:
            raise JobNotFound(job_id)
        return outcome == b"changed", records.decode_record(read, done, failed)

    def _changed(self, job_id: str, allowed: Collection[JobState], fields: Mapping[str, str]) -> bool:
        """``_transition`` writing ``fields``, for a caller that needs only whether the job
        changed: the record is not read back."""
        outcome = self._change(
            keys=transitions.transition_keys(self.keys, job_id), args=self._transition_args(job_id, allowed, fields)
        )
        if outcome == b"gone":
            raise JobNotFound(job_id)
        return outcome == b"changed"

    def _transition_args(
        self,
        job_id: str,
        allowed: Collection[JobState],
        fields: Mapping[str, str] | None = None,
        provenance: str = "",
    ) -> list[str]:
        return transitions.transition_args(
            self.keys, job_id, allowed, time.time(), fields=fields, provenance=provenance
        )

    def _read_record_into(self, pipe: Pipeline, job_id: str) -> None:
        """The three reads ``decode_record`` takes: the record, and the counts of the
        job's done and failed frames."""
        pipe.hgetall(self.keys.job(job_id))
        pipe.hlen(self.keys.done(job_id))
        pipe.hlen(self.keys.failed(job_id))

    def _read_changes_into(self, pipe: Pipeline, job_id: str) -> None:
        """The three reads ``records.refreshed`` takes: the record's fields that change,
        and the counts of the job's done and failed frames."""
        pipe.hmget(self.keys.job(job_id), records.MUTABLE_FIELDS)
        pipe.hlen(self.keys.done(job_id))
        pipe.hlen(self.keys.failed(job_id))

    # -- workers -----------------------------------------------------------------------

    def register_worker(self, info: WorkerRecord, ttl: int, pipeline: Pipeline | None = None) -> None:
        """Publishes (or refreshes) a worker's info for ``ttl`` seconds: call it again as a
        heartbeat, and whenever its current job changes. With ``pipeline`` the commands
        join it (and run when it does), so a heartbeat costs one round trip."""
        if pipeline is None:
            with self.redis.pipeline(transaction=True) as pipe:
                self.register_worker(info, ttl, pipe)
                pipe.execute()
            return
        key = self.keys.worker(info.name)
        pipeline.hset(key, mapping={name: value for name, value in dataclasses.asdict(info).items()})
        pipeline.expire(key, ttl)

    def unregister_worker(self, name: str) -> None:
        self.redis.delete(self.keys.worker(name))

    def worker_infos(self, names: Iterable[str]) -> dict[str, WorkerRecord]:
        """The registered info of the named workers that have one."""
        names = list(names)
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.worker(name))
            replies = pipe.execute()
        known = {field.name for field in dataclasses.fields(WorkerRecord)}
        return {
            name: WorkerRecord(**{k.decode(): v.decode() for k, v in fields.items() if k.decode() in known})
            for name, fields in zip(names, replies)
            if fields
        }


def _extend_ttl(pipe: Pipeline, key: str, ttl: int) -> None:
    """Makes ``key`` live at least ``ttl`` more seconds, never shortening it (Redis >= 7)."""
    pipe.expire(key, ttl, nx=True)
    pipe.expire(key, ttl, gt=True)


def _text(reply: bytes | str) -> str:
    """A Redis reply as text. redis-py types replies ``bytes | str`` for every client;
    this store's client returns bytes (``decode_responses=False``)."""
    return reply.decode() if isinstance(reply, bytes) else reply


def _hash_fields(fields: Mapping[str, str] | Mapping[str, bytes]) -> Mapping[FieldT, EncodableT]:
    """``fields`` typed as redis-py's ``hset(mapping=)`` asks: its ``Mapping[FieldT, ...]``
    refuses a mapping with str keys (a Mapping's key type is invariant), which it takes."""
    return cast("Mapping[FieldT, EncodableT]", fields)


def _running(replies: Sequence[Any]) -> JobRecord | None:
    """The job a start left running, from the start script's answer and the three reads
    beside it (``JobStore._read_record_into``); None when it did not run it. An error
    reply of the script is raised."""
    outcome, read, done, failed = replies
    if isinstance(outcome, Exception):
        raise outcome
    if outcome != b"changed" or not read:
        return None
    job = records.decode_record(read, done, failed)
    return job if job.state is JobState.RUNNING else None
