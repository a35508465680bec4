"""Building API messages (maskfarm.v1) from the store's plain records."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from maskfarm.core.jobs import ErrorCode, JobRecord, JobState, OutputFormat, Priority, StoredFrame
from maskfarm.server.queue import WorkerStatus
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1.enum_messages import proto_numbers
from maskfarm.v1.params_messages import params_message
from maskfarm.v1.prompt_messages import prompt_message

JOB_STATES = proto_numbers(JobState)
OUTPUT_FORMATS = proto_numbers(OutputFormat)
PRIORITIES = proto_numbers(Priority)
ERROR_CODES = proto_numbers(ErrorCode)


def error_code(code: ErrorCode) -> pb.ErrorCode:
    """The API's ErrorCode of a stored one: same name, ``ERROR_CODE_`` in front."""
    return ERROR_CODES[code]


def job_message(job: JobRecord) -> pb.Job:
    message = pb.Job(
        id=job.id,
        state=JOB_STATES[job.state],
        progress=pb.Progress(
            done_frames=job.done_frames, total_frames=job.total_frames, failed_frames=job.failed_frames
        ),
        create_time=_timestamp(job.created_at),
        labels=job.labels,
        provenance=pb.Provenance(**asdict(job.provenance)),
        prompts=job.prompts,
        frame_names=job.frame_names,
        params=params_message(job.params),
        format=OUTPUT_FORMATS[job.format],
        priority=PRIORITIES[job.priority],
        request_id=job.request_id,
        cancel_requested=job.cancel_requested,
        keep_going=job.keep_going,
        output_dir=job.output_dir,
        exr=pb.ExrOptions(layer=job.exr.layer, exposure=job.exr.exposure),
        prompt_specs=[prompt_message(prompt.without_image_data()) for prompt in job.prompt_specs],
    )
    if job.started_at is not None:
        message.start_time.CopyFrom(_timestamp(job.started_at))
    if job.finished_at is not None:
        message.finish_time.CopyFrom(_timestamp(job.finished_at))
    if job.error_code is not None:
        message.error.CopyFrom(pb.JobError(code=error_code(job.error_code), message=job.error_message))
    return message


def frame_message(job: JobRecord, result: StoredFrame) -> pb.FrameResult:
    """A stored frame as the API sends it: masks as bytes, or as the paths the worker
    wrote (output_dir), or only the error of a frame skipped under keep_going."""
    output_format = OUTPUT_FORMATS[job.format]
    size: dict[str, Any] = dict(format=output_format, width=result.width, height=result.height)
    masks = [pb.Mask(prompt_index=k, prompt=job.prompts[k], data=data, **size) for k, data in enumerate(result.masks)]
    masks += [
        pb.Mask(prompt_index=k, prompt=job.prompts[k], path=path, **size) for k, path in enumerate(result.mask_paths)
    ]
    if result.union is not None:
        masks.append(pb.Mask(prompt_index=-1, is_union=True, data=result.union, **size))
    if result.union_path:
        masks.append(pb.Mask(prompt_index=-1, is_union=True, path=result.union_path, **size))
    return pb.FrameResult(
        frame_index=result.index, frame_name=job.frame_names[result.index], masks=masks, error=result.error
    )


def worker_message(worker: WorkerStatus) -> pb.Worker:
    message = pb.Worker(
        name=worker.name,
        hostname=worker.hostname,
        pid=worker.pid,
        state=worker.state,
        device=worker.info.device,
        model=worker.info.model,
        revision=worker.info.revision,
        dtype=worker.info.dtype,
        queues=[PRIORITIES[priority] for priority in worker.queues],
        current_job_id=worker.current_job_id,
        maskfarm_version=worker.info.maskfarm_version,
    )
    if worker.started_at is not None:
        message.start_time.CopyFrom(_datetime_timestamp(worker.started_at))
    if worker.last_heartbeat is not None:
        message.last_heartbeat.CopyFrom(_datetime_timestamp(worker.last_heartbeat))
    return message


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def _datetime_timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
