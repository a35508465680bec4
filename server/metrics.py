"""Prometheus metrics of the server: what it was asked for, what it refused, what waits.

The counters live in prometheus_client's default registry, as its idiom wants; the
queue depths are read from Redis when Prometheus scrapes, so they are never stale.
``serve_metrics`` exposes ``/metrics`` on its own HTTP port (``--metrics-listen``).
Jobs' outcomes are counted by the workers, which see them happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

JOBS_SUBMITTED = Counter(
    "maskfarm_jobs_submitted", "Jobs queued by SubmitJob (a repeated request_id is not counted again)", ["priority"]
)
CANCEL_REQUESTS = Counter("maskfarm_cancel_requests", "CancelJob calls on existing jobs")
CALLS_REFUSED = Counter("maskfarm_calls_refused", "Calls ended with an error status, by gRPC status code", ["code"])
WATCHED_JOBS = Gauge("maskfarm_watched_jobs", "Jobs this server follows for at least one WatchJob stream")


class QueueDepth(Collector):
    """``maskfarm_queue_depth{priority}``: jobs waiting in each RQ queue, read at scrape time."""

    def __init__(self, queues: dict) -> None:
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("maskfarm_queue_depth", "Jobs waiting for a worker, by priority", labels=["priority"])
        for priority, queue in self.queues.items():
            gauge.add_metric([priority.value], queue.count)
        yield gauge


def serve_metrics(listen: str, queues: dict, watched_jobs: Callable[[], int] | None = None) -> None:
    """Serve ``/metrics`` on ``listen`` (host:port) from a daemon thread; ``watched_jobs``
    is read at scrape time."""
    host, _, port = listen.rpartition(":")
    REGISTRY.register(QueueDepth(queues))
    if watched_jobs is not None:
        WATCHED_JOBS.set_function(watched_jobs)
    start_http_server(int(port), addr=host or "127.0.0.1")
