"""Prometheus metrics of a worker: jobs ended, frames made, time per stage, batch sizes,
jobs per cross-job batch, device memory.

Stages: ``decode`` (frame bytes to pixels), ``preprocess``, ``model``, ``postprocess``
(per chunk, from the pipeline's observer), ``encode`` (masks to the job's format) and
``store`` (writing a frame's result to Redis). Frames per second is ``rate()`` of
``maskfarm_worker_frames_total``. ``serve_metrics`` exposes ``/metrics`` on the worker's
own port (``--metrics-listen``; ``maskfarm up`` gives each worker its own).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

JOBS_ENDED = Counter("maskfarm_worker_jobs", "Jobs this worker ended, by outcome", ["outcome"])
"""``outcome``: the value of the job's terminal ``JobState`` (succeeded, failed, cancelled)."""
FRAMES = Counter("maskfarm_worker_frames", "Frames segmented and stored")
STAGE_SECONDS = Histogram(
    "maskfarm_worker_stage_seconds",
    "Time spent per stage: per chunk for preprocess/model/postprocess/store, per frame otherwise",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_PAIRS = Histogram(
    "maskfarm_worker_batch_pairs", "(frame, prompt) pairs per model batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCHED_JOBS = Histogram(
    "maskfarm_worker_batched_jobs",
    "Jobs per cross-job batch (1: the job ran alone), counted for every job started with batching on",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


class PrometheusObserver:
    """The pipeline's observer (``Segmenter.observer``), recording into the histograms."""

    def stage(self, name: str, seconds: float) -> None:
        STAGE_SECONDS.labels(name).observe(seconds)

    def batch(self, pairs: int) -> None:
        BATCH_PAIRS.observe(pairs)


class DeviceMemory(Collector):
    """``maskfarm_worker_device_memory_bytes{kind}``: CUDA memory allocated and reserved,
    read at scrape time. (On the CPU, the process_* metrics tell the memory used.)"""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def collect(self) -> Iterator[Metric]:
        if self.device.type != "cuda":
            return
        gauge = GaugeMetricFamily(
            "maskfarm_worker_device_memory_bytes", "CUDA memory of the model's device", labels=["kind"]
        )
        gauge.add_metric(["allocated"], torch.cuda.memory_allocated(self.device))
        gauge.add_metric(["reserved"], torch.cuda.memory_reserved(self.device))
        yield gauge


def serve_metrics(listen: str, device: torch.device) -> None:
    """Serve ``/metrics`` on ``listen`` (host:port) from a daemon thread."""
    host, _, port = listen.rpartition(":")
    REGISTRY.register(DeviceMemory(device))
    start_http_server(int(port), addr=host or "127.0.0.1")
