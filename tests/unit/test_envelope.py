from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kombu_redis_streams import envelope


def kombu_message(body: bytes, headers: dict[str, object]) -> dict[str, object]:
    return {
        "body": body,
        "content-type": "application/data",
        "content-encoding": "binary",
        "headers": headers,
        "properties": {
            "delivery_info": {"exchange": "ex", "routing_key": "rk"},
            "priority": 3,
            "body_encoding": None,
            "delivery_tag": "tag-1",
        },
    }


def to_fields(body: bytes | str, meta: str) -> list[bytes]:
    encoded = body.encode() if isinstance(body, str) else body
    return [envelope.BODY_FIELD, encoded, envelope.META_FIELD, meta.encode()]


@given(
    st.binary(max_size=2048),
    st.dictionaries(
        st.text(max_size=20), st.one_of(st.text(), st.integers(), st.booleans())
    ),
)
def test_round_trip_keeps_body_and_headers(
    body: bytes, headers: dict[str, object]
) -> None:
    message = kombu_message(body, headers)
    decoded = envelope.decode(to_fields(*envelope.encode(message)))
    assert decoded["body"] == body
    assert decoded["headers"] == headers
    assert decoded["content-type"] == "application/data"
    assert decoded["properties"]["priority"] == 3
    assert decoded["properties"]["delivery_info"] == {
        "exchange": "ex",
        "routing_key": "rk",
    }


def test_encode_drops_delivery_tag() -> None:
    _, meta = envelope.encode(kombu_message(b"x", {}))
    assert "tag-1" not in meta


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (None, "no fields"),
        ([], "no fields"),
        ([b"junk", b"1"], "no 'body' field"),
        ([b"body", b"x"], "no 'meta' field"),
        ([b"body", b"x", b"meta", b"{not json"], "not valid JSON"),
        ([b"body", b"x", b"meta", b"[1, 2]"], "JSON object"),
        ([b"body", b"x", b"meta", b'{"headers": {}}'], "JSON object"),
    ],
)
def test_malformed_entry_names_reason(fields: list[bytes] | None, reason: str) -> None:
    with pytest.raises(envelope.MalformedEntry) as info:
        envelope.decode(fields)
    assert reason in str(info.value)


def test_mark_redelivered_sets_both_flags() -> None:
    message = envelope.decode(to_fields(*envelope.encode(kombu_message(b"x", {}))))
    envelope.mark_redelivered(message, 2)
    assert message["headers"]["redelivered"] is True
    assert message["headers"][envelope.DELIVERY_COUNT_HEADER] == 2
    assert message["properties"]["delivery_info"]["redelivered"] is True


def test_typed_header_values_round_trip() -> None:
    """kombu's typed JSON values (datetime, UUID, Decimal) come back typed."""
    headers: dict[str, object] = {
        "eta": datetime(2026, 12, 4, 21, 30, tzinfo=timezone.utc),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "price": Decimal("1.25"),
        "note": '"__type__" inside a plain string',
    }
    message = kombu_message(b"x", headers)
    decoded = envelope.decode(to_fields(*envelope.encode(message)))
    assert decoded["headers"] == headers


def test_untyped_meta_decodes_without_hooks() -> None:
    """A meta with no typed value decodes to the same dict on the C decoder."""
    message = kombu_message(b"x", {"retries": 2, "lang": "py"})
    body, meta = envelope.encode(message)
    assert envelope.TYPED_VALUE_MARKER not in meta.encode()
    decoded = envelope.decode(to_fields(body, meta))
    assert decoded["headers"] == {"retries": 2, "lang": "py"}
