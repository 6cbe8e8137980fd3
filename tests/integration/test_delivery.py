"""Publish, route and consume against real servers, counting every message."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from .helpers import bodies, drain


def test_publish_consume_counts_exactly(broker_url: str) -> None:
    queue = Queue("work", Exchange("work", "direct"), "work")
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        for number in range(500):
            producer.publish(
                {"n": number},
                exchange=queue.exchange,
                routing_key="work",
                declare=[queue],
            )
        received = drain(connection, [queue])
    assert sorted(body["n"] for body in bodies(received)) == list(range(500))


def test_priorities_lower_served_first(broker_url: str) -> None:
    queue = Queue("prio", Exchange("prio", "direct"), "prio")
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        for number, priority in enumerate([9, 0, 6, 3, 9, 0, 7, 2, 5, None]):
            producer.publish(
                {"n": number, "p": priority},
                exchange=queue.exchange,
                routing_key="prio",
                priority=priority,
                declare=[queue],
            )
        received = bodies(drain(connection, [queue]))
    # Steps [0, 3, 6, 9]: 0-2 first, FIFO inside a step, no priority means 0.
    assert [body["n"] for body in received] == [1, 5, 7, 9, 3, 8, 2, 6, 0, 4]


def test_priority_crosses_queues_step_first(broker_url: str) -> None:
    exchange = Exchange("multi", "direct")
    low = Queue("multi-a", exchange, "a")
    high = Queue("multi-b", exchange, "b")
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        producer.publish(
            {"q": "a", "p": 9},
            exchange=exchange,
            routing_key="a",
            priority=9,
            declare=[low, high],
        )
        producer.publish(
            {"q": "b", "p": 0}, exchange=exchange, routing_key="b", priority=0
        )
        received = bodies(drain(connection, [low, high], prefetch=1))
    assert received == [{"q": "b", "p": 0}, {"q": "a", "p": 9}]


def test_topic_routes_by_pattern(broker_url: str) -> None:
    exchange = Exchange("events", "topic")
    orders = Queue("orders", exchange, "order.*")
    everything = Queue("everything", exchange, "#")
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        for key in ["order.created", "order.paid", "user.created", "order.a.b"]:
            producer.publish(
                {"key": key},
                exchange=exchange,
                routing_key=key,
                declare=[orders, everything],
            )
        got_orders = bodies(drain(connection, [orders]))
        got_all = bodies(drain(connection, [everything]))
    assert [body["key"] for body in got_orders] == ["order.created", "order.paid"]
    assert len(got_all) == 4


def test_unroutable_message_is_dropped(
    broker_url: str, redis_client: redis.Redis
) -> None:
    exchange = Exchange("strict", "direct")
    queue = Queue("strict-q", exchange, "known")
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        producer.publish(
            {"x": 1}, exchange=exchange, routing_key="unknown", declare=[queue]
        )
        assert drain(connection, [queue]) == []
    assert redis_client.xlen("{strict-q}") == 0


def test_deadletter_queue_gets_unroutable(broker_url: str) -> None:
    exchange = Exchange("dl-ex", "direct")
    queue = Queue("dl-bound", exchange, "known")
    options = {"deadletter_queue": "dl-catch"}
    with Connection(broker_url, transport_options=options) as connection:
        producer = Producer(connection.channel())
        with pytest.warns(Warning):
            producer.publish(
                {"x": 1}, exchange=exchange, routing_key="nobody", declare=[queue]
            )
        received = bodies(
            drain(connection, [Queue("dl-catch", routing_key="dl-catch")])
        )
    assert received == [{"x": 1}]


def test_publisher_routes_undeclared_exchange(broker_url: str) -> None:
    exchange = Exchange("declared-elsewhere", "topic")
    queue = Queue("elsewhere-q", exchange, "a.*")
    with Connection(broker_url) as consumer_side:
        queue(consumer_side.channel()).declare()
        # A second process that never declared the exchange learns its type
        # from Redis and routes it as a topic exchange.
        with Connection(broker_url) as publisher_side:
            channel = publisher_side.channel()
            channel.basic_publish(
                channel.prepare_message('{"v": 1}', content_type="application/json"),
                exchange="declared-elsewhere",
                routing_key="a.b",
            )
        received = bodies(drain(consumer_side, [queue]))
    assert received == [{"v": 1}]


def test_binding_seen_by_cached_publisher(broker_url: str) -> None:
    exchange = Exchange("late", "direct")
    first = Queue("late-1", exchange, "k")
    second = Queue("late-2", exchange, "k")
    with Connection(broker_url) as publisher, Connection(broker_url) as other:
        producer = Producer(publisher.channel())
        producer.publish({"n": 1}, exchange=exchange, routing_key="k", declare=[first])
        # Another connection binds a second queue; the publisher's cached
        # table is stale and must not be used for the next message.
        second(other.channel()).declare()
        producer.publish({"n": 2}, exchange=exchange, routing_key="k")
        got_first = bodies(drain(other, [first]))
        got_second = bodies(drain(other, [second]))
    assert got_first == [{"n": 1}, {"n": 2}]
    assert got_second == [{"n": 2}]


def test_body_and_headers_round_trip(broker_url: str) -> None:
    queue = Queue("fidelity", routing_key="fidelity")
    payloads = [
        b"\x00\x01\xff binary",
        "non-ASCII: żółw 日本 🐢".encode(),
        b"x" * 2_000_000,
    ]
    headers = {"h-int": 7, "h-text": "żółw", "h-list": [1, "two"], "h-none": None}
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        for payload in payloads:
            producer.publish(
                payload,
                routing_key="fidelity",
                declare=[queue],
                content_type="application/octet-stream",
                content_encoding="binary",
                headers=headers,
            )
        received = drain(connection, [queue])
    assert [message.body for message in received] == payloads
    for message in received:
        assert message.headers == headers
        assert message.content_type == "application/octet-stream"
        assert "redelivered" not in message.delivery_info


def test_keyprefix_isolates_applications(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = Queue("shared-name", routing_key="shared-name")
    first = {"global_keyprefix": "app1:"}
    second = {"global_keyprefix": "app2:"}
    with (
        Connection(broker_url, transport_options=first) as one,
        Connection(broker_url, transport_options=second) as two,
    ):
        Producer(one.channel()).publish(
            {"app": 1}, routing_key="shared-name", declare=[queue]
        )
        Producer(two.channel()).publish(
            {"app": 2}, routing_key="shared-name", declare=[queue]
        )
        assert bodies(drain(one, [queue])) == [{"app": 1}]
        assert bodies(drain(two, [queue])) == [{"app": 2}]
        assert queue(one.channel()).queue_declare(passive=True).message_count == 0
    names = [key.decode() for key in redis_client.keys("*")]
    assert names
    assert all(name.startswith(("app1:", "app2:")) for name in names)


@pytest.mark.parametrize("kind", ["direct", "fanout"])
def test_empty_cached_route_rechecked(broker_url: str, kind: str) -> None:
    exchange = Exchange(f"empty-{kind}", kind)
    queue = Queue(f"empty-{kind}-q", exchange, "k")
    with Connection(broker_url) as publisher, Connection(broker_url) as consumer:
        producer = Producer(publisher.channel())
        exchange(publisher.channel()).declare()
        # Nothing is bound yet: dropped, and the empty table is cached.
        producer.publish({"n": 0}, exchange=exchange, routing_key="k")
        queue(consumer.channel()).declare()
        producer.publish({"n": 1}, exchange=exchange, routing_key="k")
        received = bodies(drain(consumer, [queue]))
    assert received == [{"n": 1}]


def test_batch_publish_counts_exactly(
    broker_url: str, redis_client: redis.Redis
) -> None:
    exchange = Exchange("batched", "topic")
    first = Queue("batched-1", exchange, "b.*")
    second = Queue("batched-2", exchange, "b.#")
    with Connection(broker_url) as connection, Connection(broker_url) as other:
        first(connection.channel()).declare()
        producer = Producer(connection.channel())
        with producer.batch(max_size=100):
            for number in range(250):
                if number == 120:
                    # Bound while the batch is open: messages routed before
                    # it was bound and sent after are routed again.
                    second(other.channel()).declare()
                producer.publish({"n": number}, exchange=exchange, routing_key="b.x")
        got_first = [b["n"] for b in bodies(drain(other, [first]))]
        got_second = [b["n"] for b in bodies(drain(other, [second]))]
    assert got_first == list(range(250))
    assert got_second == list(range(100, 250))


def test_batch_publish_full_stream(broker_url: str) -> None:
    from kombu_redis_streams import QueueFullError

    queue = Queue("batch-capped", routing_key="batch-capped")
    with Connection(broker_url, transport_options={"stream_maxlen": 3}) as connection:
        queue(connection.channel()).declare()
        producer = Producer(connection.channel())
        with pytest.raises(QueueFullError):
            with producer.batch(max_size=10):
                for number in range(5):
                    producer.publish({"n": number}, routing_key="batch-capped")
        received = [b["n"] for b in bodies(drain(connection, [queue]))]
    assert received == [0, 1, 2]
