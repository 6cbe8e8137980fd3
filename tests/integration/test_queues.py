"""Queue declare, size, purge, delete and expiry against real servers."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import ChannelError

from .helpers import drain

QUEUE = Queue("managed", Exchange("managed", "direct"), "managed")


def publish(connection: Connection, count: int) -> None:
    producer = Producer(connection.channel())
    for number in range(count):
        producer.publish(
            {"n": number},
            exchange=QUEUE.exchange,
            routing_key="managed",
            priority=number % 10,
            declare=[QUEUE],
        )


def test_passive_declare_of_missing_queue(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        with pytest.raises(ChannelError) as info:
            Queue("never-declared")(connection.channel()).queue_declare(passive=True)
    assert "never-declared" in str(info.value)
    assert info.value.reply_code == "404" or "404" in repr(info.value.args)


def test_passive_declare_with_keyprefix(broker_url: str) -> None:
    options = {"global_keyprefix": "pfx:"}
    with Connection(broker_url, transport_options=options) as connection:
        QUEUE(connection.channel()).declare()
        result = QUEUE(connection.channel()).queue_declare(passive=True)
    assert result.message_count == 0


def test_size_counts_ready_not_pending(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 20)
        bound = QUEUE(connection.channel())
        assert bound.queue_declare(passive=True).message_count == 20
        held = drain(connection, [QUEUE], ack=False, limit=5, prefetch=5)
        assert len(held) == 5
        assert bound.queue_declare(passive=True).message_count == 15
        for message in held:
            message.ack()
        assert bound.queue_declare(passive=True).message_count == 15


def test_purge_removes_ready_only(broker_url: str, redis_client: redis.Redis) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 30)
        held = drain(connection, [QUEUE], ack=False, limit=3, prefetch=3)
        purged = QUEUE(connection.channel()).purge()
        assert purged == 27
        assert (
            QUEUE(connection.channel()).queue_declare(passive=True).message_count == 0
        )
        for message in held:
            message.ack()
        publish(connection, 2)
        assert len(drain(connection, [QUEUE])) == 2
    assert (
        sum(redis_client.xlen(f"{{managed}}{s}") for s in ("", ":3", ":6", ":9")) == 0
    )


def test_delete_removes_streams_and_bindings(
    broker_url: str, redis_client: redis.Redis
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 5)
        QUEUE(connection.channel()).delete()
        assert redis_client.exists("{managed}", "{managed}:3", "{managed}:6") == 0
        assert redis_client.smembers("_kombu_streams.binding.managed") == set()
        with pytest.raises(ChannelError):
            QUEUE(connection.channel()).queue_declare(passive=True)


def test_queue_expires_without_activity(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = Queue("short-lived", routing_key="short-lived", expires=1.0)
    with Connection(broker_url) as connection:
        queue(connection.channel()).declare()
        Producer(connection.channel()).publish({"x": 1}, routing_key="short-lived")
        ttl = redis_client.pttl("{short-lived}")
        assert 0 < ttl <= 1000
        time.sleep(1.3)
    assert redis_client.exists("{short-lived}") == 0


def test_consumption_refreshes_expiry(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = Queue("kept-alive", routing_key="kept-alive", expires=1.5)
    with Connection(broker_url) as connection:
        queue(connection.channel()).declare()
        producer = Producer(connection.channel())
        received = []
        for number in range(4):
            producer.publish({"n": number}, routing_key="kept-alive")
            received += drain(connection, [queue], timeout=0.2)
            time.sleep(0.6)
        assert [m.payload["n"] for m in received] == [0, 1, 2, 3]
        assert redis_client.exists("{kept-alive}") == 1


def test_stream_maxlen_refuses_publish(broker_url: str) -> None:
    from kombu_redis_streams import QueueFullError

    options = {"stream_maxlen": 5}
    with Connection(broker_url, transport_options=options) as connection:
        producer = Producer(connection.channel())
        for number in range(5):
            producer.publish(
                {"n": number},
                routing_key="capped",
                declare=[Queue("capped", routing_key="capped")],
            )
        with pytest.raises(QueueFullError) as info:
            producer.publish({"n": 5}, routing_key="capped")
        assert "stream_maxlen=5" in str(info.value)
        received = drain(connection, [Queue("capped", routing_key="capped")])
    assert [m.payload["n"] for m in received] == [0, 1, 2, 3, 4]


def test_idle_consumer_keeps_queue_alive(
    broker_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue("idle-alive", routing_key="idle-alive", expires=1.0)
    with Connection(broker_url) as connection:
        with caplog.at_level(logging.WARNING):
            with connection.Consumer([queue], callbacks=[lambda b, m: m.ack()]):
                for _ in range(6):
                    with pytest.raises(OSError):
                        connection.drain_events(timeout=0.5)
        assert redis_client.exists("{idle-alive}") == 1
    assert "was missing" not in caplog.text


def test_expired_queue_bindings_swept(
    broker_url: str, redis_client: redis.Redis
) -> None:
    exchange = Exchange("replies", "direct")
    gone = Queue("reply-gone", exchange, "gone", expires=0.3)
    kept = Queue("reply-kept", exchange, "kept")
    options = {"unacked_restore_interval": 0.1}
    with Connection(broker_url, transport_options=options) as connection:
        gone(connection.channel()).declare()
        time.sleep(0.6)
        assert redis_client.exists("{reply-gone}") == 0
        drain(connection, [kept], timeout=0.5)
    members = redis_client.smembers("_kombu_streams.binding.replies")
    assert all(b"reply-gone" not in member for member in members)
    assert redis_client.hexists("_kombu_streams.expires", "reply-gone") == 0
