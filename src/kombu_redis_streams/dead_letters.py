"""Putting dead-lettered entries back on their queue.

A dead-letter entry keeps the ``body`` and ``meta`` fields the message had.
Requeueing appends them to the queue stream the message came from and deletes
the dead-letter entry, in one script call per entry. The delivery count starts
again: the ``x-delivery-count`` header and the redelivered flag are removed,
so ``max_deliveries`` gives the message its full number of tries. An entry
that has no ``meta`` field, or one that is not valid JSON, stays where it is:
the transport could not deliver it anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.utils.json import dumps, loads

from . import envelope
from .errors import server_error_text
from .keys import KeySpace
from .routing import as_text
from .scripts import source


@dataclass(frozen=True)
class Requeued:
    """A dead-letter entry that is back on its queue."""

    dead_entry_id: str
    stream: str
    entry_id: str


@dataclass(frozen=True)
class NotRequeued:
    """A dead-letter entry left where it is, with the reason."""

    dead_entry_id: str
    reason: str


@dataclass(frozen=True)
class RequeueResult:
    """The outcome of one requeue run: the entries moved and the entries left."""

    queue: str
    requeued: list[Requeued] = field(default_factory=list)
    left: list[NotRequeued] = field(default_factory=list)


def requeue_dead_letters(
    client: redis.Redis,
    keys: KeySpace,
    queue: str,
    targets: Sequence[str],
    entry_ids: Sequence[str] = (),
    limit: int | None = None,
) -> RequeueResult:
    """Move dead-lettered entries of ``queue`` back to the queue.

    Args:
        targets: the queue's streams that its consumer group reads, in
            priority order. An entry goes back to the one it came from, or to
            the first when it came from a fanout stream or from a stream
            that no consumer reads.
        entry_ids: the dead-letter entries to move; none means the oldest
            ``limit`` entries, or all of them when ``limit`` is None.

    Raises:
        redis.ResponseError: the dead-letter stream has the wrong type.
    """
    dead_stream = keys.dead_letter_stream(queue)
    if entry_ids:
        entries: list[Any] = []
        for entry_id in entry_ids:
            found = client.xrange(dead_stream, entry_id, entry_id)
            entries.extend(found or [(entry_id, None)])
    else:
        entries = client.xrange(dead_stream, "-", "+", count=limit) or []
    script = client.register_script(source("requeue_dead"))
    result = RequeueResult(queue)
    for raw_id, raw_fields in entries:
        dead_id = as_text(raw_id)
        if raw_fields is None:
            result.left.append(NotRequeued(dead_id, "no such dead-letter entry"))
            continue
        fields = {as_text(name): value for name, value in raw_fields.items()}
        prepared = _prepare(fields)
        if isinstance(prepared, str):
            result.left.append(NotRequeued(dead_id, prepared))
            continue
        if not targets:
            reason = "no stream of the queue is read by its consumer group"
            result.left.append(NotRequeued(dead_id, reason))
            continue
        body, meta = prepared
        stream = _source_stream(fields, targets)
        try:
            new_id = script(keys=[dead_stream, stream], args=[dead_id, body, meta])
        except redis.ResponseError as exc:
            reason = f"writing to {stream!r} failed ({server_error_text(exc)})"
            result.left.append(NotRequeued(dead_id, reason))
            continue
        if not new_id:
            reason = "already requeued or deleted by another client"
            result.left.append(NotRequeued(dead_id, reason))
            continue
        result.requeued.append(Requeued(dead_id, stream, as_text(new_id)))
    return result


def _prepare(fields: dict[str, Any]) -> tuple[bytes, str] | str:
    """Return the body and reset meta of an entry, or why it cannot go back."""
    body = fields.get(as_text(envelope.BODY_FIELD))
    raw_meta = fields.get(as_text(envelope.META_FIELD))
    if body is None or raw_meta is None:
        return "it has no body or no meta field, so it cannot be delivered"
    try:
        meta = loads(raw_meta)
    except (ValueError, TypeError, AttributeError):
        return "its meta field is not valid JSON, so it cannot be delivered"
    if not isinstance(meta, dict) or not isinstance(meta.get("properties"), dict):
        return "its meta field is not a JSON object with properties"
    headers = meta.get("headers")
    if isinstance(headers, dict):
        headers.pop(envelope.DELIVERY_COUNT_HEADER, None)
        headers.pop("redelivered", None)
    delivery_info = meta["properties"].get("delivery_info")
    if isinstance(delivery_info, dict):
        delivery_info.pop("redelivered", None)
    return body, dumps(meta)


def _source_stream(fields: dict[str, Any], targets: Sequence[str]) -> str:
    """Return the stream an entry goes back to: its source if it is a target.

    The ``x-dead-letter-source`` field is "stream entry-ID". A message read
    from a fanout stream goes to the queue's first stream, because writing it
    to the fanout stream would deliver it to every bound queue again.
    """
    source_field = as_text(fields.get("x-dead-letter-source", b""))
    stream = source_field.rpartition(" ")[0]
    return stream if stream in targets else targets[0]
