"""Acks collected between round trips and sent with the next one.

An ack does not need its own round trip: the channel sends the collected acks
in the same pipeline as its next fetch, before its next blocking read, when it
closes, and from the lease thread. A process that dies in between loses only
the acks, so those messages are delivered again: at-least-once holds.
"""

from __future__ import annotations

import threading
from typing import Any

from .plan import ReadTarget


class AckBuffer:
    """Entry IDs acknowledged by the consumer and not yet sent to Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[ReadTarget, list[str]] = {}

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._pending.values())

    def add(self, target: ReadTarget, entry_id: str) -> None:
        """Record that ``entry_id`` of ``target`` was acknowledged."""
        with self._lock:
            self._pending.setdefault(target, []).append(entry_id)

    def take(self) -> dict[ReadTarget, list[str]]:
        """Return the pending acks and forget them."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def give_back(self, pending: dict[ReadTarget, list[str]]) -> None:
        """Keep acks whose sending failed, so the next flush sends them."""
        with self._lock:
            for target, ids in pending.items():
                self._pending.setdefault(target, [])[:0] = ids

    @staticmethod
    def calls(script: Any, pending: dict[ReadTarget, list[str]]) -> list[Any]:
        """Return one ack script call (script, keys, args) per stream."""
        return [
            (script, [target.stream], [target.group, target.kind, *ids])
            for target, ids in pending.items()
        ]
