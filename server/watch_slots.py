"""How many WatchJob streams a client may hold open at once.

A stream whose client stops reading still holds server memory (the message being sent,
up to the size of a frame's masks), so an unbounded number of them would exhaust the
server. Open watches are counted per connection and per caller, each with its limit; one
more is refused at once (RESOURCE_EXHAUSTED, naming the setting) rather than queued, and
its slots are free again the moment a stream ends, however it ends. The caller is the
token's name with auth on, and the client's host (every connection from it together)
with auth off.

Slots are counted on the server's event loop only, so no lock is needed.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from maskfarm.core.settings import env_name


class TooManyWatches(Exception):
    """A connection or a caller already holds as many open WatchJob streams as it may."""


class WatchSlots:
    """Open WatchJob streams, at most ``per_connection`` on one connection and
    ``per_owner`` for one caller."""

    def __init__(self, per_connection: int, per_owner: int) -> None:
        self._limits = {"connection": per_connection, "owner": per_owner}
        self._open: dict[str, Counter[str]] = {"connection": Counter(), "owner": Counter()}

    @contextlib.contextmanager
    def hold(self, connection: str, owner: str) -> Iterator[None]:
        """A slot of ``connection``'s and one of ``owner``'s for the duration; raises
        ``TooManyWatches`` when either has none free."""
        held = {"connection": connection, "owner": owner}
        for kind, key in held.items():
            if self._open[kind][key] >= self._limits[kind]:
                raise TooManyWatches(
                    f"{self._limits[kind]} WatchJob streams are already open for this {_WHO[kind]} (the server's "
                    f"limit, {env_name('max_watches_per_' + kind)}); end some (a client that stops reading still "
                    f"holds its stream) or wait"
                )
        for kind, key in held.items():
            self._open[kind][key] += 1
        try:
            yield
        finally:
            for kind, key in held.items():
                self._open[kind][key] -= 1
                if not self._open[kind][key]:
                    del self._open[kind][key]


_WHO = {"connection": "connection", "owner": "caller"}


def peer_host(peer: str) -> str:
    """The client's host in a gRPC peer string (``ipv4:10.0.0.7:52144`` ->
    ``ipv4:10.0.0.7``, ``ipv6:[::1]:52144`` -> ``ipv6:[::1]``); other kinds whole."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in address:
        return f"{kind}:{address.rpartition(':')[0]}"
    return peer
