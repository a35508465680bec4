"""The gRPC face of maskfarm: each call checks its request, hands it on, and answers.

The work happens elsewhere (``validation``, ``queue``, ``store``, ``watch``); Redis is
used through blocking calls run in threads. Errors become status codes in one place,
``_status_for_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from maskfarm.core.echo import cut, quoted
from maskfarm.core.jobs import JobRecord
from maskfarm.core.storage import StorageRoots
from maskfarm.core.storage_access import StorageAccess
from maskfarm.jobqueue.redis_errors import refusal
from maskfarm.jobqueue.store import JobNotFound, JobStore
from maskfarm.server import messages, ownership, validation
from maskfarm.server.auth import caller, caller_storage
from maskfarm.server.events import JobEvents
from maskfarm.server.metrics import CALLS_REFUSED
from maskfarm.server.queue import BacklogFull, JobQueue, WorkerStatus
from maskfarm.server.validation import ImageLimits, ValidationError
from maskfarm.server.watch import follow_job
from maskfarm.server.watch_slots import TooManyWatches, WatchSlots, peer_host
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD = 1024 * 1024
"""Room left in a message for everything but mask data."""
MAX_DETAILS_CHARS = 2000
"""The longest status message: it travels as metadata, whose size gRPC limits (input
echoed in a message is cut shorter still, see ``maskfarm.core.echo``)."""


class SegmentationServicer(pb_grpc.SegmentationServicer):
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        events: JobEvents,
        *,
        image_limits: ImageLimits,
        max_message_bytes: int,
        watch_poll_interval: float = 5.0,
        watch_slots: WatchSlots,
        storage: StorageRoots = StorageRoots(),
    ) -> None:
        self.store = store
        self.queue = queue
        self.events = events
        self.image_limits = image_limits
        self.max_mask_bytes = max(max_message_bytes - MESSAGE_OVERHEAD, 1)
        self.watch_poll_interval = watch_poll_interval
        self.storage = storage
        self.watch_slots = watch_slots

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        async with _status_for_errors(context):
            job = await asyncio.to_thread(self._submit, request, caller(), caller_storage())
            return _job_message(job)

    def _submit(self, request: pb.SubmitJobRequest, owner: str | None, access: StorageAccess | None) -> JobRecord:
        """Checks and queues a request (blocking; one thread for both); ``access``: the
        owner's own storage roots, if the token file sets them."""
        spec = validation.job_spec(request, self.image_limits, self.storage, access)
        ownership.refuse_reserved_labels("labels", spec.labels)
        return self.queue.submit(ownership.owned(spec, owner))

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        async with _status_for_errors(context):
            first = validation.frame_index("first_frame", request.first_frame)
            limit = validation.frame_index("max_frames", request.max_frames)
            job = await self._job(request.job_id)
            if not request.include_masks:
                return pb.GetJobResponse(job=_job_message(job))
            results, next_frame = await asyncio.to_thread(self.store.frame_page, job, first, limit, self.max_mask_bytes)
            return pb.GetJobResponse(
                job=_job_message(job),
                frames=[messages.frame_message(job, result) for result in results],
                next_frame=next_frame,
            )

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchJobEvent]:
        async with _status_for_errors(context):
            from_frame = validation.frame_index("from_frame", request.from_frame)
            job_id, owner = validation.job_id(request.job_id), caller()
            connection = context.peer()
            with self.watch_slots.hold(connection, owner if owner is not None else peer_host(connection)):
                updates = follow_job(
                    self.store, self.events, job_id, from_frame, poll_interval=self.watch_poll_interval
                )
                async for update in updates:
                    if isinstance(update, JobRecord):
                        # The job comes first, so nothing is sent before this check.
                        job = ownership.require_visible(update, owner)
                        yield pb.WatchJobEvent(job=_job_message(job))
                    else:
                        yield pb.WatchJobEvent(frame=messages.frame_message(job, update))
                    del update  # not held while waiting for the next: a frame may be megabytes

    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        async with _status_for_errors(context):
            job = await self._job(request.job_id)
            job = await asyncio.to_thread(self.queue.cancel, job.id)
            return _job_message(job)

    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        async with _status_for_errors(context):
            query = validation.job_query(request)
            ownership.refuse_reserved_labels("labels", query.labels)
            labels = ownership.owners_labels(query.labels, caller())
            try:
                jobs, token = await asyncio.to_thread(
                    self.store.list_jobs, query.states, labels, query.page_size, query.page_token
                )
            except ValueError as error:
                raise ValidationError("page_token", str(error)) from None
            return pb.ListJobsResponse(jobs=[_job_message(job) for job in jobs], next_page_token=token)

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkersResponse:
        async with _status_for_errors(context):
            workers = await asyncio.to_thread(self._workers, caller())
            return pb.ListWorkersResponse(workers=[messages.worker_message(worker) for worker in workers])

    def _workers(self, owner: str | None) -> list[WorkerStatus]:
        """The live workers, each one's current job shown only to that job's owner
        (blocking): another caller's job id stays unconfirmed, as everywhere else."""
        workers = self.queue.workers()
        if owner is None:
            return workers
        jobs = self.store.get_jobs(worker.current_job_id for worker in workers)
        return [
            worker
            if job is not None and ownership.visible(job, owner)
            else dataclasses.replace(worker, current_job_id="")
            for worker, job in zip(workers, jobs)
        ]

    async def _job(self, job_id: str) -> JobRecord:
        """The job, if the caller may see it; raises ``JobNotFound`` for an unknown id and
        for another caller's job alike."""
        job = await asyncio.to_thread(self.store.require_job, validation.job_id(job_id))
        return ownership.require_visible(job, caller())


def _job_message(job: JobRecord) -> pb.Job:
    """The job as its client sees it (see ``ownership.public``)."""
    return messages.job_message(ownership.public(job))


@contextlib.asynccontextmanager
async def _status_for_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Ends the call with the status code that an error stands for."""
    try:
        yield
    except validation.PathDenied as error:
        code = grpc.StatusCode.PERMISSION_DENIED if error.writing else grpc.StatusCode.NOT_FOUND
        await _abort(context, code, str(error))
    except ValidationError as error:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
    except JobNotFound as error:
        await _abort(context, grpc.StatusCode.NOT_FOUND, f"no job {quoted(error.args[0])} (unknown or expired)")
    except TooManyWatches as error:
        await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    except BacklogFull as error:
        await _abort(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            str(error),
            trailing_metadata=(("retry-after-s", str(error.retry_after_s)),),
        )
    except (RedisConnectionError, RedisTimeoutError) as error:
        log.warning("Redis unavailable: %s", error)
        await _abort(context, grpc.StatusCode.UNAVAILABLE, f"the job store is unavailable: {error}")
    except RedisError as error:
        reason = refusal(error)
        if reason is None:
            log.exception("Redis answered with an error")
            await _abort(context, grpc.StatusCode.INTERNAL, "the job store answered with an error (see the server log)")
        log.warning("Redis refused: %s", error)
        await _abort(context, grpc.StatusCode.UNAVAILABLE, reason)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str, **kwargs) -> NoReturn:
    CALLS_REFUSED.labels(code.name).inc()
    await context.abort(code, cut(details, MAX_DETAILS_CHARS), **kwargs)
