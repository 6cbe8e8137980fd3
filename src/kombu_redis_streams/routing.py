"""Binding tables and exchange types, stored in Redis and cached per process.

Bindings live in one set per exchange, as in kombu (members are
``routing_key sep pattern sep queue``), so any process can route. Queue expiry
(``Queue(expires=...)``) is stored the same way, so every publisher refreshes
it. Every change to a binding, an exchange type or a queue expiry increments
one version token. The cache keeps the
token with the tables it read, and the publish script refuses to write when
the token changed, so a publish never follows a stale table and
the steady state costs no read at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from redis import Redis

from .keys import KeySpace

Binding = tuple[str, str, str]


class RoutingCache:
    """Cache of binding tables and exchange types, valid for one version."""

    def __init__(self, client: Callable[[], Redis], keys: KeySpace, sep: str) -> None:
        self._client = client
        self._keys = keys
        self._sep = sep
        self._lock = threading.Lock()
        self._version: str | None = None
        self._types: dict[str, str] = {}
        self._tables: dict[str, list[Binding]] = {}
        self._expires: dict[str, int] = {}

    def lookup(self, exchange: str) -> tuple[str, list[Binding], str | None]:
        """Return the version, the bindings and the stored type of ``exchange``."""
        with self._lock:
            if self._version is not None and exchange in self._tables:
                return self._version, self._tables[exchange], self._types.get(exchange)

        # Read the token and the tables in one transaction so they match.
        with self._client().pipeline(transaction=True) as pipe:
            pipe.get(self._keys.routing_version)
            pipe.hgetall(self._keys.exchange_types)
            pipe.hgetall(self._keys.queue_expires)
            pipe.smembers(self._keys.bindings(exchange))
            raw_version, raw_types, raw_expires, members = pipe.execute()

        version = as_text(raw_version) if raw_version is not None else "0"
        table = sorted(self._parse(member) for member in members)
        types = {as_text(name): as_text(kind) for name, kind in raw_types.items()}
        expires = {as_text(name): int(ms) for name, ms in raw_expires.items()}
        with self._lock:
            if version != self._version:
                self._tables.clear()
            self._version = version
            self._types = types
            self._expires = expires
            self._tables[exchange] = table
        return version, table, types.get(exchange)

    def expire_ms(self, queue: str) -> int:
        """Return the time to live of ``queue`` in ms (0: none), as last read."""
        if self._version is None:
            self.lookup("")
        return self._expires.get(queue, 0)

    def invalidate(self) -> None:
        """Forget every cached table; the next lookup reads Redis again."""
        with self._lock:
            self._version = None
            self._tables.clear()

    def member(self, routing_key: str, pattern: str, queue: str) -> str:
        """Return the binding-set member that stores one binding."""
        return self._sep.join([routing_key or "", pattern or "", queue or ""])

    def _parse(self, member: Any) -> Binding:
        parts = as_text(member).split(self._sep)
        if len(parts) != 3:
            # A member written with another separator: treat it as a queue
            # bound with an empty routing key rather than failing the publish.
            return ("", "", parts[-1])
        routing_key, pattern, queue = parts
        return (routing_key, pattern, queue)


def as_text(value: Any) -> str:
    """Return ``value`` as str, decoding bytes as UTF-8."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
