"""Conversion between kombu's message envelope and the fields of a stream entry.

An entry has two fields: ``body``, the message body as bytes, and ``meta``,
JSON of everything else in kombu's envelope (headers, properties, content type
and encoding). Keeping the body out of the JSON spares both the base64 step
and the JSON escaping of binary data.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kombu.utils.json import dumps, loads

#: Marker of the values that kombu's JSON encoder wrote as typed objects
#: (datetime, UUID, Decimal, bytes). Without it the standard decoder suffices.
TYPED_VALUE_MARKER = b'"__type__"'

BODY_FIELD = b"body"
META_FIELD = b"meta"

#: Header that carries how many times a message was delivered, on redeliveries.
DELIVERY_COUNT_HEADER = "x-delivery-count"

#: Envelope key with the Unix time after which the message is dropped unread.
DEADLINE_KEY = "expires_at"


class MalformedEntry(ValueError):
    """A stream entry that cannot be turned back into a kombu message."""


def encode(message: dict[str, Any]) -> tuple[bytes | str, str]:
    """Split a kombu message dict into the ``body`` and ``meta`` field values."""
    body = message.get("body")
    if body is None:
        body = b""
    meta = {key: value for key, value in message.items() if key != "body"}
    properties = dict(meta.get("properties") or {})
    # The delivery tag names one delivery, so each read makes a new one.
    properties.pop("delivery_tag", None)
    meta["properties"] = properties
    return body, dumps(meta)


def decode(fields: list[bytes] | None) -> dict[str, Any]:
    """Rebuild a kombu message dict from the flat field list of an entry.

    Raises:
        MalformedEntry: the entry lacks a field, or ``meta`` is not a JSON
            object with a ``properties`` object.
    """
    if not fields:
        raise MalformedEntry("the entry has no fields")
    values = dict(zip(fields[::2], fields[1::2]))
    try:
        body = values[BODY_FIELD]
        raw_meta = values[META_FIELD]
    except KeyError as exc:
        name = exc.args[0].decode("utf-8", "replace")
        raise MalformedEntry(f"the entry has no {name!r} field") from None
    try:
        # kombu's decoder calls a Python hook for every JSON object; most
        # envelopes hold no typed value, so the C decoder alone reads them.
        if isinstance(raw_meta, bytes) and TYPED_VALUE_MARKER not in raw_meta:
            meta = json.loads(raw_meta)
        else:
            meta = loads(raw_meta)
    except (ValueError, TypeError, AttributeError) as exc:
        # kombu's JSON hooks raise TypeError or AttributeError on a malformed
        # typed value such as {"__type__": "uuid", "__value__": 5}.
        raise MalformedEntry(f"the meta field is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("properties"), dict):
        raise MalformedEntry("the meta field is not a JSON object with properties")
    meta["body"] = body
    properties = meta["properties"]
    if not isinstance(properties.get("delivery_info"), dict):
        properties["delivery_info"] = {}
    if not isinstance(meta.get("headers"), dict):
        meta["headers"] = {}
    return meta


def mark_redelivered(message: dict[str, Any], delivery_count: int) -> None:
    """Flag ``message`` as redelivered the way kombu's redis transport does."""
    message["headers"]["redelivered"] = True
    message["headers"][DELIVERY_COUNT_HEADER] = delivery_count
    message["properties"]["delivery_info"]["redelivered"] = True


def set_deadline(message: dict[str, Any], expiration: Any) -> None:
    """Record when a message with ``expiration`` (ms, kombu's property) expires.

    The deadline uses the publisher's clock, and a requeued copy keeps it.
    """
    try:
        milliseconds = float(expiration)
    except (TypeError, ValueError):
        return  # kombu passes it on unchecked; an invalid one never expires
    message[DEADLINE_KEY] = time.time() + milliseconds / 1000


def is_expired(message: dict[str, Any]) -> bool:
    """Return True when the message has a deadline and it has passed."""
    deadline = message.get(DEADLINE_KEY)
    return isinstance(deadline, (int, float)) and time.time() >= deadline
