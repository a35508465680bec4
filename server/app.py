"""Assembling and running the gRPC server: the Segmentation service, health and reflection.

``serve`` runs until SIGTERM or SIGINT, then stops taking calls and gives running ones
``grace_s`` to finish. Health reports SERVING while Redis answers and NOT_SERVING while it
does not. Nothing here (or anything it imports) imports torch.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
import redis
from grpc_health.v1 import health as health_service
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from maskfarm.core.frame_files import ImageLimits, configure_pillow
from maskfarm.jobqueue.redis_clients import ReplicaWait, async_redis_from_url, redacted_url, redis_from_url
from maskfarm.jobqueue.store import JobStore
from maskfarm.server.auth import BearerTokenInterceptor
from maskfarm.server.events import JobEvents
from maskfarm.server.memory import return_large_blocks_when_freed
from maskfarm.server.metrics import serve_metrics
from maskfarm.server.queue import JobQueue, QueueLimits
from maskfarm.server.servicer import SegmentationServicer
from maskfarm.server.settings import ServerSettings
from maskfarm.server.tls import server_credentials
from maskfarm.server.tokens import TokenFile
from maskfarm.server.watch_slots import WatchSlots
from maskfarm.v1 import segmentation_pb2 as pb
from maskfarm.v1 import segmentation_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Segmentation"].full_name
HEALTH_CHECK_INTERVAL_S = 5.0
REDIS_TIMEOUT_S = 30.0


class ListenError(RuntimeError):
    """The server cannot listen on its address: another process holds it, or it is not this host's."""


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Message limits both ways, keepalive pings so long WatchJob streams survive idle
    proxies and dead peers are noticed, and no SO_REUSEPORT: with it (gRPC's default) a
    second server on a port in use would share the port with the first without a word."""
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def serve(settings: ServerSettings) -> None:
    """Runs the server until SIGTERM or SIGINT."""
    return_large_blocks_when_freed()
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="redis"))
    connection = redis_from_url(
        settings.redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=5, health_check_interval=30
    )
    events = JobEvents(
        async_redis_from_url(settings.redis_url, socket_connect_timeout=5, health_check_interval=30),
        settings.namespace,
    )
    events.start()
    server, health = await build_server(settings, connection, events)

    await server.start()
    log.info(
        "serving %s on %s (%s, %s; Redis %s, namespace %r)",
        SERVICE_NAME,
        settings.listen,
        _transport(settings),
        _auth(settings),
        redacted_url(settings.redis_url),
        settings.namespace,
    )
    if settings.storage_roots:
        log.info("shared storage under %s", ", ".join(settings.storage_roots))
    monitor = asyncio.create_task(_report_health(health, connection))
    await _wait_for_stop_signal()
    log.info("stopping: running calls get %.0f s", settings.grace_s)
    monitor.cancel()
    await health.enter_graceful_shutdown()
    await server.stop(settings.grace_s)
    await events.close()
    connection.close()


def _image_limits(settings: ServerSettings) -> ImageLimits:
    """The frame limits, Pillow's bomb guard set from them as the workers set theirs."""
    limits = ImageLimits(settings.max_side, settings.max_pixels, settings.max_frame_mib, settings.frame_read_timeout_s)
    configure_pillow(limits)
    return limits


async def build_server(
    settings: ServerSettings, connection: redis.Redis, events: JobEvents
) -> tuple[grpc.aio.Server, health_aio.HealthServicer]:
    """The server, bound to ``settings.listen`` but not started, and its health servicer
    (NOT_SERVING until Redis is seen to answer); with ``metrics_listen``, /metrics is
    served from then on. Raises ``TokenFileError`` or
    ``TlsConfigError`` when the token file or a TLS file cannot be used, ``ListenError``
    when the listen address cannot be had."""
    replica_wait = ReplicaWait.of_setting(settings.replicated_submit, settings.redis_url)
    store = JobStore(connection, settings.namespace, replica_wait)
    queue = JobQueue(connection, store, _queue_limits(settings))
    if settings.metrics_listen:
        serve_metrics(settings.metrics_listen, queue.queues, lambda: events.watched_jobs)
    servicer = SegmentationServicer(
        store,
        queue,
        events,
        image_limits=_image_limits(settings),
        max_message_bytes=settings.max_message_bytes,
        storage=settings.storage,
        watch_slots=WatchSlots(settings.max_watches_per_connection, settings.max_watches_per_owner),
    )
    health = health_aio.HealthServicer()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    interceptors = [BearerTokenInterceptor(TokenFile(settings.auth_tokens))] if settings.auth_tokens else []
    server = grpc.aio.server(options=channel_options(settings), interceptors=interceptors)
    pb_grpc.add_SegmentationServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection([SERVICE_NAME, health_service.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        if settings.tls:
            credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            server.add_secure_port(settings.listen, credentials)
        else:
            server.add_insecure_port(settings.listen)
    except RuntimeError as error:  # gRPC's "Failed to bind to address ..."
        raise ListenError(
            f"cannot listen on {settings.listen}: the address is in use (another maskfarm server?) "
            "or not this machine's"
        ) from error
    return server, health


def _transport(settings: ServerSettings) -> str:
    if settings.tls_client_ca:
        return "mutual TLS"
    return "TLS" if settings.tls else "plaintext"


def _auth(settings: ServerSettings) -> str:
    return f"bearer tokens from {settings.auth_tokens}" if settings.auth_tokens else "no auth"


def _queue_limits(settings: ServerSettings) -> QueueLimits:
    return QueueLimits(
        queue_ttl=settings.queue_ttl,
        inputs_ttl=settings.inputs_ttl,
        result_ttl=settings.result_ttl,
        job_timeout=settings.job_timeout,
        retries=settings.retries,
        max_backlog_jobs=settings.max_backlog_jobs,
        max_backlog_bytes=settings.max_backlog_bytes,
    )


async def _report_health(health: health_aio.HealthServicer, connection: redis.Redis) -> None:
    """Keeps the health status in step with whether Redis answers."""
    answered: bool | None = None
    while True:
        answers = await asyncio.to_thread(_answers, connection)
        if answers != answered:
            status = health_pb2.HealthCheckResponse.SERVING if answers else health_pb2.HealthCheckResponse.NOT_SERVING
            for service in ("", SERVICE_NAME):
                await health.set(service, status)
            if answered is not None or not answers:
                log.warning(
                    "Redis %s: health is %s",
                    "answers" if answers else "does not answer",
                    health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                )
            answered = answers
        await asyncio.sleep(HEALTH_CHECK_INTERVAL_S)


def _answers(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except redis.RedisError:
        return False


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
