"""Whose job is whose: with auth on, a job belongs to the caller that submitted it, and
only that caller sees it.

Ownership lives in what the job store already keeps, so its layout does not change:

- the owner is the reserved label ``maskfarm.owner``, so a caller's ListJobs reads that
  caller's label index (the store picks the narrowest index by itself);
- a request id is scoped by its owner (``NAME/REQUEST_ID``; names never contain ``/``),
  so idempotency is per caller: two callers sending the same request id get a job each,
  and nobody finds another's job by guessing a request id.

Clients see neither (``public``): a job reads back exactly as it was submitted. Requests
may not use the reserved label, auth on or off, so an owner can never be forged; jobs
made while auth was off have no owner and are visible to no token once it is on.

Another caller's job is NOT_FOUND, the same answer as for an unknown id: answering
PERMISSION_DENIED would confirm to anyone holding a token that a job id exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from maskfarm.core.jobs import JobRecord, JobSpec
from maskfarm.jobqueue.store import JobNotFound
from maskfarm.server.validation import ValidationError

OWNER_LABEL = "maskfarm.owner"
"""The reserved label holding the name of the caller that submitted a job."""

_SCOPE = "/"


def refuse_reserved_labels(field: str, labels: Mapping[str, str]) -> None:
    """Raises ``ValidationError`` when a request sets or filters by the owner label."""
    if OWNER_LABEL in labels:
        raise ValidationError(f"{field}[{OWNER_LABEL!r}]", "this label is reserved for the server")


def owned(spec: JobSpec, owner: str | None) -> JobSpec:
    """The job to store for ``owner`` (unchanged when auth is off, ``owner`` None)."""
    if owner is None:
        return spec
    request_id = f"{owner}{_SCOPE}{spec.request_id}" if spec.request_id else ""
    return dataclasses.replace(spec, labels={**spec.labels, OWNER_LABEL: owner}, request_id=request_id)


def owners_labels(labels: Mapping[str, str], owner: str | None) -> dict[str, str]:
    """A ListJobs label filter narrowed to ``owner``'s jobs (unchanged when auth is off)."""
    return dict(labels) if owner is None else {**labels, OWNER_LABEL: owner}


def visible(job: JobRecord, owner: str | None) -> bool:
    """Whether ``owner`` may see the job (anyone may when auth is off, ``owner`` None)."""
    return owner is None or job.labels.get(OWNER_LABEL) == owner


def require_visible(job: JobRecord, owner: str | None) -> JobRecord:
    """The job, if ``owner`` may see it; raises ``JobNotFound`` (as for an unknown id) if not."""
    if not visible(job, owner):
        raise JobNotFound(job.id)
    return job


def public(job: JobRecord) -> JobRecord:
    """The job as its client submitted it: no owner label, the request id unscoped."""
    if OWNER_LABEL not in job.labels:
        return job
    labels = {key: value for key, value in job.labels.items() if key != OWNER_LABEL}
    request_id = job.request_id.partition(_SCOPE)[2]
    return dataclasses.replace(job, labels=labels, request_id=request_id)
