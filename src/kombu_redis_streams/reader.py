"""The blocking read that wakes a channel when new entries arrive.

A channel claims entries with the fetch script, which cannot block. When a
fetch finds nothing, the channel sends ``XREAD BLOCK`` from the IDs the fetch
reported on a connection of its own, and polls that connection's socket (in
kombu's event loop or in ``drain_events``). The reply only says that an entry
was added; the next fetch claims it, so the prefetch limit is never exceeded.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

import redis

logger = logging.getLogger(__name__)


class BlockingReader:
    """One dedicated connection that carries at most one ``XREAD BLOCK``."""

    def __init__(self, pool: redis.ConnectionPool, block_timeout_s: float) -> None:
        self._pool = pool
        self._block_ms = max(int(block_timeout_s * 1000), 1)
        self._connection: Any = None
        self._sent_at: float | None = None

    @property
    def in_flight(self) -> bool:
        """True while a sent read has no reply yet."""
        return self._sent_at is not None

    def seconds_waiting(self) -> float:
        """Return how long the read in flight has waited for its reply."""
        return 0.0 if self._sent_at is None else monotonic() - self._sent_at

    def fileno(self) -> int | None:
        """Return the socket's file descriptor, or None when not connected."""
        sock = getattr(self._connection, "_sock", None)
        return sock.fileno() if sock is not None else None

    def send(self, last_ids: dict[str, str]) -> int:
        """Send ``XREAD BLOCK`` for ``last_ids`` and return the socket's fd."""
        if self._connection is None:
            pool = self._pool
            self._connection = pool.connection_class(**pool.connection_kwargs)
        connection = self._connection
        keys = list(last_ids)
        connection.send_command(
            "XREAD",
            "COUNT",
            1,
            "BLOCK",
            self._block_ms,
            "STREAMS",
            *keys,
            *(last_ids[key] for key in keys),
        )
        self._sent_at = monotonic()
        fd = self.fileno()
        assert fd is not None
        return fd

    def read(self) -> bool:
        """Read the reply; return True when some stream received an entry."""
        try:
            reply = self._connection.read_response()
        except BaseException:
            self.close()
            raise
        finally:
            self._sent_at = None
        return bool(reply)

    def check_alive(self, slack_s: float) -> None:
        """Raise when the read in flight is overdue by more than ``slack_s``.

        The server replies once per block period, so a reply that is much later
        than that means the connection is dead or a network drops packets.

        Raises:
            redis.ConnectionError: the reply is overdue; the connection is closed.
        """
        overdue = self.seconds_waiting() - self._block_ms / 1000
        if self.in_flight and overdue > slack_s:
            self.close()
            raise redis.ConnectionError(
                f"A blocking read got no reply {overdue:.1f} s after its block "
                "period ended; the connection is dropped and will be opened again."
            )

    def close(self) -> None:
        """Close the connection; a read in flight is abandoned."""
        connection, self._connection = self._connection, None
        self._sent_at = None
        if connection is not None:
            try:
                connection.disconnect()
            except OSError:  # pragma: no cover - the socket is already gone
                pass
