"""The job index of ListJobs: its entries (creation time, then id) and its page tokens."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from maskfarm.core.jobs import JobRecord
from maskfarm.jobqueue.keys import JOB_ID_PATTERN


def index_member(job: JobRecord) -> str:
    """Index entries sort by creation time as text: fixed-width microseconds, then the id."""
    return f"{round(job.created_at * 1_000_000):020d}:{job.id}"


def has_labels(job: JobRecord, labels: Mapping[str, str]) -> bool:
    return all(job.labels.get(key) == value for key, value in labels.items())


def encode_page_token(member: str) -> str:
    return base64.urlsafe_b64encode(member.encode()).decode()


def decode_page_token(token: str) -> str:
    if not token:
        return ""
    try:
        member = base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        raise ValueError("not a page token from this server") from None
    created, _, job_id = member.partition(":")
    if not (created.isdigit() and JOB_ID_PATTERN.fullmatch(job_id)):
        raise ValueError("not a page token from this server")
    return member
