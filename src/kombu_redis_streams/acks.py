"""Acks collected between round trips and sent with the next one.

An ack does not need its own round trip: the channel sends the collected acks
in the same pipeline as its next fetch, before its next blocking read, when it
closes, and from the lease thread. A process that dies in between loses only
the acks, so those messages are delivered again: at-least-once holds.
"""

from __future__ import annotations

import threading
from time import monotonic
from typing import Any

from .plan import ReadTarget

#: Seconds an ack waits for its channel's next round trip. After that the lease
#: thread sends it, because the consumer may have stopped reading.
FLUSH_DELAY_S = 0.5


class AckBuffer:
    """Entry IDs acknowledged by the consumer and not yet sent to Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[ReadTarget, list[str]] = {}
        #: monotonic() time of the oldest ack not yet sent, or None.
        self.oldest: float | None = None

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._pending.values())

    def add(self, target: ReadTarget, entry_id: str) -> bool:
        """Record that ``entry_id`` of ``target`` was acknowledged.

        Returns:
            True when the buffer was empty before, so a flush must be planned.
        """
        with self._lock:
            first = self.oldest is None
            if first:
                self.oldest = monotonic()
            self._pending.setdefault(target, []).append(entry_id)
        return first

    def take(self) -> dict[ReadTarget, list[str]]:
        """Return the pending acks and forget them."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self.oldest = None
        return pending

    def give_back(self, pending: dict[ReadTarget, list[str]]) -> None:
        """Keep acks whose sending failed, so the next flush sends them."""
        if not pending:
            return
        with self._lock:
            if self.oldest is None:
                self.oldest = monotonic()
            for target, ids in pending.items():
                self._pending.setdefault(target, [])[:0] = ids

    @staticmethod
    def calls(script: Any, pending: dict[ReadTarget, list[str]]) -> list[Any]:
        """Return one ack script call (script, keys, args) per stream."""
        return [
            (script, [target.stream], [target.group, target.kind, *ids])
            for target, ids in pending.items()
        ]
