"""Acks, rejects, requeues, closing with unacked messages, and prefetch."""

from __future__ import annotations

import socket
import time

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from .helpers import drain

QUEUE = Queue("acks", Exchange("acks", "direct"), "acks")


def publish(connection: Connection, count: int, queue: Queue = QUEUE) -> None:
    producer = Producer(connection.channel())
    for number in range(count):
        producer.publish(
            {"n": number},
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
        )


def pending_count(client: redis.Redis, stream: str = "{acks}") -> int:
    return int(client.xpending(stream, "kombu:acks")["pending"])


def test_acked_entries_leave_stream(broker_url: str, redis_client: redis.Redis) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 100)
        assert len(drain(connection, [QUEUE])) == 100
    assert redis_client.xlen("{acks}") == 0
    assert pending_count(redis_client) == 0


def test_reject_requeue_redelivers_at_tail(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 3)
        simple = connection.SimpleQueue(QUEUE)
        first = simple.get_nowait()
        assert first.payload == {"n": 0}
        first.requeue()
        order = []
        for _ in range(3):
            message = simple.get_nowait()
            order.append(
                (message.payload["n"], message.delivery_info.get("redelivered"))
            )
            message.ack()
        with pytest.raises(simple.Empty):
            simple.get_nowait()
        simple.close()
    assert order == [(1, None), (2, None), (0, True)]


def test_reject_without_requeue_drops(
    broker_url: str, redis_client: redis.Redis
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 2)
        simple = connection.SimpleQueue(QUEUE)
        simple.get_nowait().reject()
        simple.get_nowait().ack()
        with pytest.raises(simple.Empty):
            simple.get_nowait()
        simple.close()
    assert redis_client.xlen("{acks}") == 0


def test_redelivery_carries_delivery_count(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 1)
        simple = connection.SimpleQueue(QUEUE)
        counts = []
        for _ in range(3):
            message = simple.get(timeout=2)
            counts.append(message.headers.get("x-delivery-count"))
            message.requeue()
        simple.get(timeout=2).ack()
        simple.close()
    assert counts == [None, 2, 3]


def test_close_gives_back_unacked(broker_url: str, redis_client: redis.Redis) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 10)
        held = drain(connection, [QUEUE], ack=False, limit=4, prefetch=4)
        assert len(held) == 4
    assert pending_count(redis_client) == 0
    with Connection(broker_url) as connection:
        received = drain(connection, [QUEUE])
    numbers = [message.payload["n"] for message in received]
    assert sorted(numbers) == list(range(10))
    redelivered = [
        m.payload["n"] for m in received if m.delivery_info.get("redelivered")
    ]
    assert sorted(redelivered) == [0, 1, 2, 3]


def test_close_leaves_no_consumer_behind(
    broker_url: str, redis_client: redis.Redis
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 5)
        drain(connection, [QUEUE])
    for stream in ("{acks}", "{acks}:3", "{acks}:6", "{acks}:9"):
        assert redis_client.xinfo_consumers(stream, "kombu:acks") == []


def test_prefetch_bounds_pending_entries(
    broker_url: str, redis_client: redis.Redis
) -> None:
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        for number in range(40):
            producer.publish(
                {"n": number},
                exchange=QUEUE.exchange,
                routing_key="acks",
                priority=[0, 3, 6, 9][number % 4],
                declare=[QUEUE],
            )
        received = []

        def hold(body: object, message: object) -> None:
            received.append(message)

        with Consumer(connection, [QUEUE], callbacks=[hold], prefetch_count=5):
            with pytest.raises(socket.timeout):
                for _ in range(10):
                    connection.drain_events(timeout=0.5)
            pending = sum(
                int(redis_client.xpending(f"{{acks}}{suffix}", "kombu:acks")["pending"])
                for suffix in ("", ":3", ":6", ":9")
            )
            assert len(received) == 5
            assert pending == 5
            for message in received:
                message.ack()
            rest = drain(connection, [QUEUE], prefetch=5)
    assert len(received) + len(rest) == 40


def test_drain_events_one_message_per_call(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 3)
        received = []
        with Consumer(connection, [QUEUE], callbacks=[lambda b, m: received.append(m)]):
            for expected in (1, 2, 3):
                connection.drain_events(timeout=1)
                assert len(received) == expected
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=0.3)
        for message in received:
            message.ack()


def test_basic_get_no_ack_removes_entry(
    broker_url: str, redis_client: redis.Redis
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 1)
        message = connection.default_channel.basic_get("acks", no_ack=True)
        assert message.payload == {"n": 0}
    assert redis_client.xlen("{acks}") == 0
    assert pending_count(redis_client) == 0


def test_cancel_returns_buffered_entries(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 10)
        received = []
        consumer = Consumer(
            connection, [QUEUE], callbacks=[lambda b, m: received.append(m)]
        )
        consumer.consume()
        connection.drain_events(timeout=1)
        consumer.cancel()
        received[0].ack()
        rest = drain(connection, [QUEUE])
    assert len(received) == 1
    assert sorted(m.payload["n"] for m in rest) == list(range(1, 10))
    assert not any(m.delivery_info.get("redelivered") for m in rest)


def test_ack_reaches_redis_before_return(
    broker_url: str, redis_client: redis.Redis
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 2)
        simple = connection.SimpleQueue(QUEUE)
        message = simple.get(timeout=1)
        assert redis_client.xlen("{acks}") == 2
        message.ack()
        # No other call in between: the ack alone removed the entry.
        assert redis_client.xlen("{acks}") == 1
        simple.close()


def test_acks_ride_with_next_read(broker_url: str, redis_client: redis.Redis) -> None:
    with Connection(broker_url, transport_options={"batch_acks": True}) as connection:
        publish(connection, 300)
        before = redis_client.info("commandstats").get("cmdstat_evalsha", {"calls": 0})
        received = drain(connection, [QUEUE], prefetch=100)
        after = redis_client.info("commandstats")["cmdstat_evalsha"]
    assert len(received) == 300
    # About one fetch and one ack call per batch of 100, not one per message.
    assert after["calls"] - before["calls"] < 30
    assert redis_client.xlen("{acks}") == 0


def test_unsent_acks_redeliver_after_crash(broker_url: str) -> None:
    with Connection(broker_url, transport_options={"batch_acks": True}) as connection:
        publish(connection, 3)
        simple = connection.SimpleQueue(QUEUE)
        for _ in range(3):
            simple.get(timeout=1).ack()
        # The process dies before the acks leave: nothing sends them.
        channel = simple.channel
        channel.connection.leases.stop()
        unsent = channel._acks.take()
        assert sum(len(ids) for ids in unsent.values()) == 3
        channel._deliveries.clear()
    options = {"visibility_timeout": 0.3, "unacked_restore_interval": 0.1}
    with Connection(broker_url, transport_options=options) as connection:
        again = drain(connection, [QUEUE], timeout=1.5)
    assert sorted(m.payload["n"] for m in again) == [0, 1, 2]


def test_acks_from_other_thread(broker_url: str, redis_client: redis.Redis) -> None:
    import queue as queue_module
    import threading

    with Connection(broker_url) as connection:
        publish(connection, 500)
        to_ack: queue_module.Queue = queue_module.Queue()
        acked: list[int] = []

        def acker() -> None:
            while True:
                message = to_ack.get()
                if message is None:
                    return
                acked.append(message.payload["n"])
                message.ack()

        thread = threading.Thread(target=acker)
        thread.start()
        with Consumer(
            connection,
            [QUEUE],
            callbacks=[lambda b, m: to_ack.put(m)],
            prefetch_count=10,
        ):
            deadline = time.monotonic() + 30
            while len(acked) < 500 and time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=1)
                except socket.timeout:
                    pass
        to_ack.put(None)
        thread.join(timeout=10)
    assert sorted(acked) == list(range(500))
    assert redis_client.xlen("{acks}") == 0
