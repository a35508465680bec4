"""maskfarm's Redis key names, for one namespace (several farms may share a Redis).

Layout, for a namespace ``ns`` (default ``maskfarm``) and a job id ``J``::

    ns:job:J            hash     the job record (see encode_record)
    ns:job:J:inputs     hash     frame index -> the frame's encoded file bytes ("" for a
                                 frame the worker reads from its shared-storage path)
    ns:job:J:done       hash     frame index -> JSON {width, height, masks, union, bytes}
                                 (+ paths, union_path for an output_dir job; error for a
                                 frame skipped under keep_going)
    ns:job:J:masks      hash     "index:k" -> mask k of a frame; "index:union" -> its union
    ns:job:J:failed     hash     frame index -> why, for frames skipped under keep_going
    ns:job:J:events     channel  {"frame": i} when frame i is stored, {"frames": [i, j, ...]}
                                 when several are stored together, {"state": s} on changes
    ns:request:R        string   request id -> job id (idempotent SubmitJob)
    ns:jobs             zset     "created-µs:J" members, newest last (ListJobs)
    ns:jobs:label:K=V   zset     the same, for the jobs labelled K=V
    ns:backlog:bytes    string   encoded bytes of the frames of queued jobs
    ns:backlog:jobs     hash     queued job id -> its share of those bytes
    ns:queued           zset     queued job ids by creation time (orphan sweeps)
    ns:worker:W         hash     a live worker's WorkerRecord

Nothing but ``JobStore`` (``maskfarm.jobqueue.store``) reads or writes them.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import quote

from maskfarm.core.defaults import DEFAULT_NAMESPACE

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Job ids the store accepts (RQ's job id alphabet); anything else is not a job."""


def new_job_id() -> str:
    """An unguessable job id: 128 random bits."""
    return secrets.token_hex(16)


class Keys:
    """The Redis key names of one namespace."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.namespace = namespace

    def job(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}"

    def inputs(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}:inputs"

    def done(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}:done"

    def masks(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}:masks"

    def failed(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}:failed"

    def events(self, job_id: str) -> str:
        return f"{self.namespace}:job:{job_id}:events"

    def request(self, request_id: str) -> str:
        return f"{self.namespace}:request:{request_id}"

    def index(self) -> str:
        return f"{self.namespace}:jobs"

    def label_index(self, key: str, value: str) -> str:
        return f"{self.namespace}:jobs:label:{quote(key, safe='')}={quote(value, safe='')}"

    def backlog_bytes(self) -> str:
        return f"{self.namespace}:backlog:bytes"

    def backlog_jobs(self) -> str:
        """Hash of each queued job's input bytes: what to release if its record vanishes."""
        return f"{self.namespace}:backlog:jobs"

    def queued(self) -> str:
        """Sorted set of the QUEUED jobs' ids, scored by creation time (orphan sweeps)."""
        return f"{self.namespace}:queued"

    def worker(self, name: str) -> str:
        return f"{self.namespace}:worker:{name}"
