"""Helpers that publish and drain real messages and count them."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from kombu import Connection, Consumer, Queue
from kombu.message import Message


def drain(
    connection: Connection,
    queues: Iterable[Queue],
    *,
    ack: bool = True,
    timeout: float = 1.0,
    limit: int | None = None,
    prefetch: int | None = None,
) -> list[Message]:
    """Consume until ``timeout`` passes with no message, or ``limit`` arrive."""
    received: list[Message] = []

    def on_message(body: Any, message: Message) -> None:
        received.append(message)
        if ack:
            message.ack()

    with Consumer(
        connection, list(queues), callbacks=[on_message], prefetch_count=prefetch
    ):
        while limit is None or len(received) < limit:
            try:
                connection.drain_events(timeout=timeout)
            except socket.timeout:
                break
    return received


def bodies(messages: Iterable[Message]) -> list[Any]:
    """Return the decoded payloads of ``messages`` in order."""
    return [message.payload for message in messages]
