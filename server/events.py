"""Job events for the whole server from one Redis subscription.

Workers and the store publish a job's events (a frame stored, a state changed) on that
job's channel. A server follows every job in its namespace through one pattern
subscription, read by one task that hands each event to the watchers of its job, instead
of one Redis connection per ``WatchJob``: a watch then starts without a connection to
open or a subscription to wait for, and a busy server holds one connection, not
thousands.

Events are wake-ups, never data, and can be missed while the connection is down. So a
watcher registers *before* it reads the store (an event published after that read
reaches it), and every watcher is woken to read the store again whenever the
subscription is (re)confirmed, which redis-py does after each reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from maskfarm.core.defaults import DEFAULT_NAMESPACE
from maskfarm.jobqueue.keys import Keys

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 30.0
"""How long the reader waits for a message before redis-py checks the connection."""
RETRY_S = 1.0
"""Pause before subscribing again after the connection failed."""
FIRST_SUBSCRIPTION_TIMEOUT_S = 10.0
"""How long the first watchers wait for the server's first subscription attempt."""


class Inbox:
    """The events of one job for one watcher, in order."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[dict | None] = asyncio.Queue()

    def put(self, event: dict | None) -> None:
        self._events.put_nowait(event)

    async def next(self, timeout: float) -> dict | None:
        """The next event (``{"frame": i}``, ``{"frames": [i, ...]}`` or ``{"state": name}``); None when none came
        within ``timeout`` or when events may have been missed: time to read the store."""
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def pending(self) -> list[dict | None]:
        """The events that have arrived and not been taken yet (without waiting): a
        watcher woken by one takes the burst behind it at once."""
        events = []
        while not self._events.empty():
            events.append(self._events.get_nowait())
        return events


class JobEvents:
    """The events of every job in ``namespace``, from one pattern subscription.

    ``start`` launches the reader (it never fails: an unreachable Redis is retried);
    ``inbox(job_id)`` registers a watcher; ``close`` stops it all.
    """

    def __init__(self, redis: AsyncRedis, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.redis = redis
        self.keys = Keys(namespace)
        self.pattern = _glob_escape(self.keys.events("\0")).replace("\0", "*")
        self._inboxes: dict[bytes, set[Inbox]] = {}
        self._subscribed = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._failure: BaseException | None = None
        self._confirmations = 0
        self._reader: asyncio.Task | None = None

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_forever(), name="job-events")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.redis.aclose()

    @contextlib.asynccontextmanager
    async def inbox(self, job_id: str) -> AsyncIterator[Inbox]:
        """An inbox for ``job_id``'s events from now on, while the context lasts. Raises
        redis' ``ConnectionError`` while the subscription is down, as a store call would."""
        self.start()
        channel = self.keys.events(job_id).encode()
        inbox = Inbox()
        self._inboxes.setdefault(channel, set()).add(inbox)
        try:
            await self._require_subscription()
            yield inbox
        finally:
            watchers = self._inboxes[channel]
            watchers.discard(inbox)
            if not watchers:
                del self._inboxes[channel]

    async def _require_subscription(self) -> None:
        if not self._subscribed.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._first_attempt.wait(), FIRST_SUBSCRIPTION_TIMEOUT_S)
        if not self._subscribed.is_set():
            raise RedisConnectionError(f"the job events subscription is down: {self._failure or 'not made yet'}")

    @property
    def watched_jobs(self) -> int:
        return len(self._inboxes)

    async def _read_forever(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(self.pattern)
                while True:
                    message = await pubsub.get_message(timeout=HEALTH_CHECK_S)
                    if message is not None:
                        self._dispatch(message)
            except (RedisError, OSError) as error:
                if self._failure is None:
                    log.warning("job events: subscription lost (%s); subscribing again every %.0f s", error, RETRY_S)
                self._failure = error
            except Exception as error:  # a bug here must not leave every watch on its sweep alone
                log.exception("job events: the reader failed; subscribing again in %.0f s", RETRY_S)
                self._failure = error
            finally:
                self._lost()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RETRY_S)

    def _dispatch(self, message: dict) -> None:
        if message["type"] == "psubscribe":
            self._subscribed.set()
            self._first_attempt.set()
            self._failure = None
            self._confirmations += 1
            if self._confirmations > 1:
                self._wake_all()  # subscribed again after a reconnection: events may be lost
        elif message["type"] == "pmessage":
            event = _parse(message["data"])
            for inbox in self._inboxes.get(message["channel"], ()):
                inbox.put(event)

    def _lost(self) -> None:
        self._subscribed.clear()
        self._first_attempt.set()
        self._wake_all()

    def _wake_all(self) -> None:
        for watchers in self._inboxes.values():
            for inbox in watchers:
                inbox.put(None)


def _parse(data: bytes) -> dict | None:
    try:
        event = json.loads(data)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)
