"""A real Redis client that also records its round trips, for tests that pin how many a
piece of work takes (never a fake: every command reaches the real server)."""

from __future__ import annotations

import redis


class RecordingRedis(redis.Redis):
    """A real client that also records each round trip it makes: a command on its own, or
    the commands of a pipeline executed together (a ``WATCH`` on its own)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.round_trips: list[list[tuple]] = []

    def execute_command(self, *args, **options):
        self.round_trips.append([args])
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint=None) -> redis.client.Pipeline:
        return _RecordingPipeline(self, transaction, shard_hint)


class _RecordingPipeline(redis.client.Pipeline):
    def __init__(self, client: RecordingRedis, transaction: bool, shard_hint) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, transaction, shard_hint)
        self.recorder = client

    def immediate_execute_command(self, *args, **options):
        self.recorder.round_trips.append([args])
        return super().immediate_execute_command(*args, **options)

    def execute(self, raise_on_error: bool = True):
        if self.command_stack:
            self.recorder.round_trips.append([args for args, _ in self.command_stack])
        return super().execute(raise_on_error)


class SendCountingConnection(redis.Connection):
    """A real connection that counts its sends: each is one round trip (a command, a
    pipeline, or ``watch_and_read``'s commands together), whatever API sent it."""

    sends = 0
    """Sends of every such connection (a class count: the test zeroes it)."""

    def send_packed_command(self, command, check_health: bool = True) -> None:
        SendCountingConnection.sends += 1
        super().send_packed_command(command, check_health)
