"""Durable fanout: a stream per exchange, a consumer group per bound queue."""

from __future__ import annotations

import redis
from kombu import Connection, Exchange, Producer, Queue

from .helpers import bodies, drain

FANOUT_STREAM = "_kombu_streams.fanout.{news}"


def test_fanout_reaches_every_bound_queue(broker_url: str) -> None:
    exchange = Exchange("news", "fanout")
    queues = [Queue(f"news-{name}", exchange) for name in ("a", "b", "c")]
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        for number in range(50):
            producer.publish({"n": number}, exchange=exchange, declare=queues)
        for queue in queues:
            assert [body["n"] for body in bodies(drain(connection, [queue]))] == list(
                range(50)
            )


def test_two_fanout_queues_one_channel(broker_url: str) -> None:
    exchange = Exchange("news", "fanout")
    queues = [Queue("news-x", exchange), Queue("news-y", exchange)]
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        producer.publish({"n": 1}, exchange=exchange, declare=queues)
        received = drain(connection, queues)
    assert sorted(message.delivery_info["routing_key"] for message in received) == [
        "",
        "",
    ]
    assert len(received) == 2


def test_fanout_kept_while_consumer_down(broker_url: str) -> None:
    exchange = Exchange("news", "fanout")
    queue = Queue("news-durable", exchange)
    with Connection(broker_url) as connection:
        queue(connection.channel()).declare()
    # No consumer is running now: the group created at bind keeps the messages.
    with Connection(broker_url) as publisher:
        producer = Producer(publisher.channel())
        for number in range(20):
            producer.publish({"n": number}, exchange=exchange)
    with Connection(broker_url) as consumer:
        received = bodies(drain(consumer, [queue]))
    assert [body["n"] for body in received] == list(range(20))


def test_fanout_stream_empties_after_all_ack(
    broker_url: str, redis_client: redis.Redis
) -> None:
    exchange = Exchange("news", "fanout")
    queues = [Queue("news-1", exchange), Queue("news-2", exchange)]
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        for number in range(30):
            producer.publish({"n": number}, exchange=exchange, declare=queues)
        assert len(drain(connection, [queues[0]])) == 30
        # One group acked everything; the other still needs every entry.
        assert redis_client.xlen(FANOUT_STREAM) == 30
        assert len(drain(connection, [queues[1]])) == 30
    assert redis_client.xlen(FANOUT_STREAM) == 0


def test_deleted_queue_releases_fanout_entries(
    broker_url: str, redis_client: redis.Redis
) -> None:
    exchange = Exchange("news", "fanout")
    kept = Queue("news-kept", exchange)
    dropped = Queue("news-dropped", exchange)
    with Connection(broker_url) as connection:
        channel = connection.channel()
        producer = Producer(channel)
        for number in range(10):
            producer.publish({"n": number}, exchange=exchange, declare=[kept, dropped])
        assert len(drain(connection, [kept])) == 10
        assert redis_client.xlen(FANOUT_STREAM) == 10
        dropped(channel).delete()
        groups = [
            group["name"].decode() for group in redis_client.xinfo_groups(FANOUT_STREAM)
        ]
        assert groups == ["kombu:news-kept"]
        assert redis_client.xlen(FANOUT_STREAM) == 0
        producer.publish({"n": 99}, exchange=exchange)
        assert bodies(drain(connection, [kept])) == [{"n": 99}]


def test_no_ack_fanout_trims_stream(broker_url: str, redis_client: redis.Redis) -> None:
    exchange = Exchange("news", "fanout")
    queue = Queue("news-noack", exchange)
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        for number in range(10):
            producer.publish({"n": number}, exchange=exchange, declare=[queue])
        assert redis_client.xlen(FANOUT_STREAM) == 10
        got = []
        with connection.Consumer([queue], no_ack=True) as consumer:
            consumer.register_callback(lambda body, message: got.append(body["n"]))
            for _ in range(10):
                connection.drain_events(timeout=2)
            # Entries read with NOACK are never pending, so they leave at once.
            assert redis_client.xlen(FANOUT_STREAM) == 0
    assert got == list(range(10))
