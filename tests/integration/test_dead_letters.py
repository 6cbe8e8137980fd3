"""Poison messages: max_deliveries and dead-lettering of rejected messages."""

from __future__ import annotations

import json

import pytest
import redis
from kombu import Connection, Producer, Queue

QUEUE = Queue("poison", routing_key="poison")


def publish(connection: Connection, payload: object) -> None:
    Producer(connection.channel()).publish(
        payload, routing_key="poison", declare=[QUEUE], headers={"task": "t.poison"}
    )


def test_max_deliveries_moves_to_dead(
    broker_url: str, redis_client: redis.Redis
) -> None:
    options = {"max_deliveries": 3}
    with Connection(broker_url, transport_options=options) as connection:
        publish(connection, {"n": 1})
        simple = connection.SimpleQueue(QUEUE)
        deliveries = []
        for _ in range(3):
            message = simple.get(timeout=1)
            deliveries.append(message.headers.get("x-delivery-count", 1))
            message.requeue()
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.5)
        simple.close()
    assert deliveries == [1, 2, 3]
    dead = redis_client.xrange("{poison}:dead")
    assert len(dead) == 1
    fields = dead[0][1]
    assert b"max_deliveries=3" in fields[b"x-dead-letter-reason"]
    assert fields[b"x-delivery-count"] == b"3"
    assert json.loads(fields[b"body"]) == {"n": 1}
    assert json.loads(fields[b"meta"])["headers"]["task"] == "t.poison"
    assert redis_client.xlen("{poison}") == 0


def test_without_limit_nothing_dropped(
    broker_url: str, redis_client: redis.Redis
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, {"n": 1})
        simple = connection.SimpleQueue(QUEUE)
        for _ in range(6):
            simple.get(timeout=1).requeue()
        message = simple.get(timeout=1)
        assert message.headers["x-delivery-count"] == 7
        message.ack()
        simple.close()
    assert redis_client.exists("{poison}:dead") == 0


def test_reject_goes_to_dead_letters(
    broker_url: str, redis_client: redis.Redis
) -> None:
    options = {"dead_letter_rejected": True}
    with Connection(broker_url, transport_options=options) as connection:
        publish(connection, {"n": 2})
        simple = connection.SimpleQueue(QUEUE)
        simple.get(timeout=1).reject()
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.3)
        simple.close()
    dead = redis_client.xrange("{poison}:dead")
    assert len(dead) == 1
    assert dead[0][1][b"x-dead-letter-reason"] == b"rejected by the consumer"
    assert dead[0][1][b"x-delivery-count"] == b"1"


def test_reclaimed_past_limit_dead(broker_url: str, redis_client: redis.Redis) -> None:
    options = {
        "max_deliveries": 1,
        "visibility_timeout": 0.5,
        "unacked_restore_interval": 0.2,
    }
    with Connection(broker_url) as first:
        publish(first, {"n": 3})
        message = first.default_channel.basic_get("poison")
        assert message is not None
        # The first consumer vanishes without closing: its entry stays pending.
        first.transport.leases.stop()
        first.default_channel._deliveries.clear()
        first.default_channel.qos._delivered.clear()
        with Connection(broker_url, transport_options=options) as second:
            simple = second.SimpleQueue(QUEUE)
            with pytest.raises(simple.Empty):
                simple.get(timeout=1.5)
            simple.close()
    dead = redis_client.xrange("{poison}:dead")
    assert len(dead) == 1
    assert b"max_deliveries=1" in dead[0][1][b"x-dead-letter-reason"]
