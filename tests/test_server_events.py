"""JobEvents: one pattern subscription per server, each event handed to its job's watchers.

Against a real Redis; each test runs its own event loop and namespace.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import redis
import redis.asyncio

from maskfarm.jobqueue.keys import Keys
from maskfarm.server import events as events_module
from maskfarm.server.events import JobEvents
from tests.services import free_port


def namespace(prefix: str = "ev") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


async def publish(redis_url: str, channel: str, event: dict) -> int:
    async with redis.asyncio.Redis.from_url(redis_url) as client:
        return await client.publish(channel, json.dumps(event))


def test_each_watcher_gets_its_own_jobs_events_in_order(redis_url: str) -> None:
    ns = namespace()
    keys = Keys(ns)

    async def scenario() -> tuple[list, list, list]:
        events = JobEvents(redis.asyncio.Redis.from_url(redis_url), ns)
        try:
            async with events.inbox("a") as first, events.inbox("a") as second, events.inbox("b") as other:
                assert events.watched_jobs == 2
                for index in range(3):
                    await publish(redis_url, keys.events("a"), {"frame": index})
                await publish(redis_url, keys.events("b"), {"state": "SUCCEEDED"})
                got = [[await inbox.next(5) for _ in range(n)] for inbox, n in ((first, 3), (second, 3), (other, 1))]
            assert events.watched_jobs == 0
            return got
        finally:
            await events.close()

    first, second, other = run(scenario())
    assert first == second == [{"frame": 0}, {"frame": 1}, {"frame": 2}]
    assert other == [{"state": "SUCCEEDED"}]


def test_a_burst_is_taken_at_once_after_its_first_event(redis_url: str) -> None:
    ns = namespace()

    async def scenario() -> list:
        events = JobEvents(redis.asyncio.Redis.from_url(redis_url), ns)
        try:
            async with events.inbox("a") as inbox:
                for index in range(5):
                    await publish(redis_url, Keys(ns).events("a"), {"frame": index})
                got = [await inbox.next(5)]
                for _ in range(50):
                    got += inbox.pending()
                    if len(got) == 5:
                        break
                    await asyncio.sleep(0.05)
                return got + inbox.pending()
        finally:
            await events.close()

    assert run(scenario()) == [{"frame": index} for index in range(5)]


def test_a_quiet_inbox_times_out_with_none(redis_url: str) -> None:
    async def scenario():
        events = JobEvents(redis.asyncio.Redis.from_url(redis_url), namespace())
        try:
            async with events.inbox("a") as inbox:
                return await inbox.next(0.2)
        finally:
            await events.close()

    assert run(scenario()) is None


def test_glob_characters_in_the_namespace_match_only_themselves(redis_url: str) -> None:
    ns = namespace("ev*[x]?")
    lookalike = ns.replace("*", "Z").replace("?", "Q")

    async def scenario() -> tuple[dict | None, dict | None]:
        events = JobEvents(redis.asyncio.Redis.from_url(redis_url), ns)
        try:
            async with events.inbox("a") as inbox:
                await publish(redis_url, Keys(lookalike).events("a"), {"frame": 9})
                await publish(redis_url, Keys(ns).events("a"), {"frame": 1})
                return await inbox.next(5), await inbox.next(0.3)
        finally:
            await events.close()

    assert run(scenario()) == ({"frame": 1}, None)


async def arrivals(inbox, timeout: float) -> list:
    """The events in ``inbox`` once at least one has come (or none after ``timeout``):
    unlike ``Inbox.next``, a wake-up (None) is not mistaken for a timeout."""
    deadline = time.monotonic() + timeout
    while not (arrived := inbox.pending()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return arrived


def test_watchers_are_woken_when_the_subscription_is_lost_and_get_events_again(redis_url: str) -> None:
    ns = namespace()
    channel = Keys(ns).events("a")

    async def scenario() -> tuple[list, dict | None]:
        events = JobEvents(redis.asyncio.Redis.from_url(redis_url, client_name=ns), ns)
        try:
            async with events.inbox("a") as inbox:
                with redis.Redis.from_url(redis_url) as admin:
                    ours = [client["id"] for client in admin.client_list(_type="pubsub") if client["name"] == ns]
                    assert len(ours) == 1
                    admin.client_kill_filter(_id=ours[0])
                woken = await arrivals(inbox, 10)
                delivered = 0
                for _ in range(100):  # until the subscription is back
                    if delivered := await publish(redis_url, channel, {"frame": 3}):
                        break
                    await asyncio.sleep(0.1)
                assert delivered
                event = await inbox.next(5)
                while event is None:  # wake-ups of the reconnection come before it
                    event = await inbox.next(5)
                return woken, event
        finally:
            await events.close()

    woken, event = run(scenario())
    assert woken and all(wake_up is None for wake_up in woken)
    assert event == {"frame": 3}


def test_an_inbox_without_redis_fails_with_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "RETRY_S", 0.1)

    async def scenario() -> None:
        unreachable = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
        events = JobEvents(unreachable, namespace())
        try:
            async with events.inbox("a"):
                pass
        finally:
            await events.close()
        assert events.watched_jobs == 0

    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="subscription is down"):
        run(scenario())
    assert time.monotonic() - started < 5  # at once, as a store call would fail
