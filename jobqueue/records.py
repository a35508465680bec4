"""How a job and its frames are written in Redis hashes, and read back.

A job record is one hash of text fields (``encode_record``/``decode_record``), of which
only a few change once it is written (``MUTABLE_FIELDS``: a job is read again with
``refreshed``, without its frame names); a frame's
result is a JSON meta in the job's ``done`` hash plus its masks in the ``masks`` hash
(``frame_args`` lays them out for the store's script, ``stored_frame`` reads them back).
Pure functions: ``JobStore`` (``maskfarm.jobqueue.store``) does the reading and writing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from maskfarm.core.jobs import (
    ErrorCode,
    ExrOptions,
    JobRecord,
    JobSpec,
    JobState,
    OutputFormat,
    Priority,
    Provenance,
    StoredFrame,
)
from maskfarm.core.params import MaskParams
from maskfarm.core.prompts import prompts_from_json, prompts_to_json
from maskfarm.core.storage_access import StorageAccess
from maskfarm.jobqueue.keys import new_job_id


def new_record(spec: JobSpec, *, queue_ttl: int, result_ttl: int) -> JobRecord:
    now = time.time()
    return JobRecord(
        id=new_job_id(),
        state=JobState.QUEUED,
        prompts=list(spec.prompts),
        prompt_specs=[prompt.without_image_data() for prompt in spec.prompt_specs],
        frame_names=list(spec.frame_names),
        params=spec.params,
        format=spec.format,
        priority=spec.priority,
        labels=dict(spec.labels),
        request_id=spec.request_id,
        created_at=now,
        queue_deadline=now + queue_ttl,
        result_ttl=result_ttl,
        input_bytes=spec.input_bytes,
        frame_paths=list(spec.frame_paths),
        keep_going=spec.keep_going,
        output_dir=spec.output_dir,
        exr=spec.exr,
        storage_access=spec.storage_access,
    )


EXPIRY_MESSAGE = "no worker started the job within its queue time ({waited} s)"
"""Why a job failed as expired; ``{waited}``: its queue time in whole seconds (filled in
here, or by the store's start script, ``maskfarm.jobqueue.transitions``)."""


def expiry_message(job: JobRecord) -> str:
    return EXPIRY_MESSAGE.format(waited=round(job.queue_deadline - job.created_at))


def finished(state: JobState, code: ErrorCode | None = None, message: str = "") -> dict[str, str]:
    """The fields that end a job in ``state`` now."""
    return {
        "state": state.value,
        "finished_at": repr(time.time()),
        "error_code": code.value if code else "",
        "error_message": message,
    }


def encode_record(job: JobRecord) -> dict[str, str]:
    """The record as Redis hash fields (all text; JSON for structured values)."""
    return {
        "id": job.id,
        "state": job.state.value,
        "prompts": json.dumps(job.prompts),
        "prompt_specs": prompts_to_json(job.prompt_specs) if job.prompt_specs else "",
        "frame_names": json.dumps(job.frame_names),
        "params": json.dumps(dataclasses.asdict(job.params)),
        "format": job.format.value,
        "priority": job.priority.value,
        "labels": json.dumps(job.labels),
        "request_id": job.request_id,
        "created_at": repr(job.created_at),
        "queue_deadline": repr(job.queue_deadline),
        "result_ttl": str(job.result_ttl),
        "input_bytes": str(job.input_bytes),
        "started_at": time_text(job.started_at),
        "finished_at": time_text(job.finished_at),
        "error_code": job.error_code.value if job.error_code else "",
        "error_message": job.error_message,
        "cancel_requested": "1" if job.cancel_requested else "0",
        "attempts": str(job.attempts),
        "provenance": json.dumps(dataclasses.asdict(job.provenance)),
        "frame_paths": json.dumps(job.frame_paths),
        "keep_going": "1" if job.keep_going else "0",
        "output_dir": job.output_dir,
        "exr": json.dumps(dataclasses.asdict(job.exr)),
        "storage_access": job.storage_access.to_json() if job.storage_access else "",
    }


def time_text(value: float | None) -> str:
    return "" if value is None else repr(value)


def time_value(text: str) -> float | None:
    return float(text) if text else None


def decode_record(raw: Mapping[bytes, bytes], done_frames: int, failed_frames: int) -> JobRecord:
    """The job from its whole record (``HGETALL``) and the counts of its done and failed frames."""
    fields = {key.decode(): value.decode() for key, value in raw.items()}
    return JobRecord(
        id=fields["id"],
        prompts=json.loads(fields["prompts"]),
        prompt_specs=prompts_from_json(fields.get("prompt_specs", "")),
        frame_names=json.loads(fields["frame_names"]),
        params=MaskParams(**json.loads(fields["params"])),
        format=OutputFormat(fields["format"]),
        priority=Priority(fields["priority"]),
        labels=json.loads(fields["labels"]),
        request_id=fields["request_id"],
        created_at=float(fields["created_at"]),
        queue_deadline=float(fields["queue_deadline"]),
        result_ttl=int(fields["result_ttl"]),
        input_bytes=int(fields["input_bytes"]),
        done_frames=done_frames,
        frame_paths=json.loads(fields.get("frame_paths", "[]")),
        keep_going=fields.get("keep_going") == "1",
        output_dir=fields.get("output_dir", ""),
        exr=ExrOptions(**json.loads(fields.get("exr", "{}"))),
        failed_frames=failed_frames,
        storage_access=StorageAccess.from_json(fields.get("storage_access", "")),
        **_decode_mutable(fields),
    )


def refreshed(job: JobRecord, values: Sequence[bytes | None], done_frames: int, failed_frames: int) -> JobRecord | None:
    """``job`` as it is now: ``values`` are its ``MUTABLE_FIELDS`` read again (``HMGET``,
    in that order) and the counts its done and failed frames; None when the values are
    those of a record that is gone (all None: it expired)."""
    if all(value is None for value in values):
        return None
    fields = {name: value.decode() for name, value in zip(MUTABLE_FIELDS, values) if value is not None}
    return dataclasses.replace(job, done_frames=done_frames, failed_frames=failed_frames, **_decode_mutable(fields))


_MUTABLE: dict[str, Callable[[str], Any]] = {
    "state": JobState,
    "started_at": time_value,
    "finished_at": time_value,
    "error_code": lambda text: ErrorCode(text) if text else None,
    "error_message": str,
    "cancel_requested": lambda text: text == "1",
    "attempts": int,
    "provenance": lambda text: Provenance(**json.loads(text)),
}
"""The record's fields that change after the job is created, each a ``JobRecord`` field
of the same name, with how its text is decoded. Only the state changes
(``maskfarm.jobqueue.transitions``) write to a record once ``encode_record`` has, and they
write only these (the counts of done and failed frames are other keys'): a reader that
holds the job reads only these again (``refreshed``), never its frame names and prompts."""

MUTABLE_FIELDS = tuple(_MUTABLE)
"""The names of the fields of a job record that change (``_MUTABLE``), in the order
``refreshed`` reads their values."""


def _decode_mutable(fields: Mapping[str, str]) -> dict[str, Any]:
    """The ``JobRecord`` fields that change, from their text (``MUTABLE_FIELDS``)."""
    return {name: decode(fields[name]) for name, decode in _MUTABLE.items()}


def input_fields(spec: JobSpec) -> dict[str, bytes]:
    """The inputs hash: frame i's file under "i", image prompt k's under "prompt-k"."""
    fields = {str(i): data for i, data in enumerate(spec.frames)}
    for k, prompt in enumerate(spec.prompt_specs):
        if prompt.image is not None and prompt.image.data:
            fields[exemplar_field(k)] = prompt.image.data
    return fields


def exemplar_field(prompt_index: int) -> str:
    return f"prompt-{prompt_index}"


def frame_args(result: StoredFrame) -> list:
    """One frame's part of the store script's arguments: index, meta, error, then its
    mask fields counted and listed as name/value pairs."""
    meta: dict[str, object] = {
        "width": result.width,
        "height": result.height,
        "masks": len(result.masks),
        "union": result.union is not None,
        "bytes": result.nbytes,
    }
    if result.mask_paths:
        meta.update(paths=result.mask_paths, union_path=result.union_path)
    if result.error:
        meta["error"] = result.error
    masks = {f"{result.index}:{k}": mask for k, mask in enumerate(result.masks)}
    if result.union is not None:
        masks[f"{result.index}:union"] = result.union
    return [
        result.index,
        json.dumps(meta),
        result.error,
        len(masks),
        *(item for field in masks.items() for item in field),
    ]


def expected_mask_fields(indices: list[int], job: JobRecord | None) -> list[str]:
    """The mask fields frames of ``job`` have (none without the job: read after their
    metas; none for a job whose masks are files under its ``output_dir``)."""
    if job is None or job.output_dir:
        return []
    shape = frame_shape(job)
    return [field for index in indices for field in mask_fields(index, shape)]


def frame_shape(job: JobRecord) -> dict[str, object]:
    """What a stored frame of ``job`` holds, as its meta says it: a mask per prompt, and
    their union when asked for."""
    return {"masks": len(job.prompts), "union": job.params.union}


def mask_fields(index: int, meta: Mapping) -> list[str]:
    """The masks hash fields of a stored frame (none for paths or a failed frame)."""
    fields = [f"{index}:{k}" for k in range(meta["masks"])]
    return fields + [f"{index}:union"] if meta["union"] else fields


def stored_frame(index: int, meta: Mapping, values: Mapping[str, bytes]) -> StoredFrame:
    """The frame ``index`` whose ``meta`` was found; ``values`` holds its masks, which
    are stored with the meta (one script) and expire with it."""
    return StoredFrame(
        index=index,
        width=meta["width"],
        height=meta["height"],
        masks=[values[f"{index}:{k}"] for k in range(meta["masks"])],
        union=values[f"{index}:union"] if meta["union"] else None,
        mask_paths=meta.get("paths", []),
        union_path=meta.get("union_path", ""),
        error=meta.get("error", ""),
    )
