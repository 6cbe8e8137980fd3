from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kombu_redis_streams.keys import KeySpace, clamp_priority, priority_step


def hash_tag(key: str) -> str:
    """Return the part of a key that Redis Cluster hashes."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start == -1 or end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


def test_queue_streams_share_hash_tag() -> None:
    keys = KeySpace(prefix="app:")
    names = [
        *keys.queue_streams("celery", [0, 3, 6, 9]),
        keys.dead_letter_stream("celery"),
    ]
    assert {hash_tag(name) for name in names} == {"celery"}


def test_every_key_has_prefix() -> None:
    keys = KeySpace(prefix="app:")
    names = [
        keys.queue_stream("q"),
        keys.queue_stream("q", 3),
        keys.dead_letter_stream("q"),
        keys.fanout_stream("ex"),
        keys.bindings("ex"),
        keys.exchange_types,
        keys.routing_version,
    ]
    assert all(name.startswith("app:") for name in names)


def test_step_zero_stream_is_bare_tag() -> None:
    assert KeySpace().queue_stream("celery") == "{celery}"
    assert KeySpace().queue_stream("celery", 9) == "{celery}:9"


@given(st.text(min_size=1).filter(lambda name: not name.startswith("}")), st.text())
def test_streams_of_one_queue_share_slot(queue: str, prefix: str) -> None:
    keys = KeySpace(prefix=prefix.replace("{", "").replace("}", ""))
    names = [*keys.queue_streams(queue, [0, 3, 6, 9]), keys.dead_letter_stream(queue)]
    assert len({hash_tag(name) for name in names}) == 1


def test_group_name_round_trip() -> None:
    keys = KeySpace(group_prefix="kombu:")
    assert keys.queue_of_group(keys.group("tasks")) == "tasks"
    assert keys.queue_of_group("other-group") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("junk", 0), (-5, 0), (0, 0), (4, 4), ("7", 7), (9, 9), (250, 9)],
)
def test_clamp_priority_cases(value: object, expected: int) -> None:
    assert clamp_priority(value) == expected


@pytest.mark.parametrize(
    ("priority", "step"),
    [(0, 0), (1, 0), (2, 0), (3, 3), (5, 3), (6, 6), (8, 6), (9, 9)],
)
def test_priority_step_default_buckets(priority: int, step: int) -> None:
    assert priority_step(priority, [0, 3, 6, 9]) == step


def test_priority_below_first_step() -> None:
    assert priority_step(0, [2, 5]) == 2


@given(st.integers(min_value=0, max_value=9))
def test_priority_step_never_exceeds_priority(priority: int) -> None:
    step = priority_step(priority, [0, 3, 6, 9])
    assert step <= priority
    assert step in (0, 3, 6, 9)
