"""Conformance checks modelled on the behaviour kombu's integration suites test.

Each class runs against both servers through the ``broker_url`` fixture.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import OperationalError

from kombu_redis_streams import Transport


def unreachable_url() -> str:
    # A port on loopback that nothing listens on: bound, then closed.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis-streams://127.0.0.1:{port}/0"


class TestBasicFunctionality:
    def test_connect_and_close_twice(self, broker_url: str) -> None:
        connection = Connection(broker_url)
        connection.connect()
        assert connection.connected
        connection.close()
        connection.connect()
        connection.close()

    def test_failed_connect_raises(self) -> None:
        connection = Connection(unreachable_url(), connect_timeout=1)
        with pytest.raises(OperationalError):
            connection.ensure_connection(max_retries=1)

    def test_connection_error_is_sorted(self) -> None:
        connection = Connection(unreachable_url())
        with pytest.raises(redis.exceptions.ConnectionError) as info:
            connection.connect()
        assert isinstance(info.value, Transport.connection_errors)
        assert isinstance(info.value, connection.connection_errors)

    def test_response_error_is_channel_error(self) -> None:
        assert issubclass(redis.exceptions.ResponseError, Transport.channel_errors)
        assert not issubclass(
            redis.exceptions.ResponseError, Transport.connection_errors
        )

    def test_failed_credentials_raise(
        self, broker_url: str, redis_client: redis.Redis
    ) -> None:
        url = broker_url.replace("redis-streams://", "redis-streams://nobody:wrong@")
        with pytest.raises(redis.exceptions.AuthenticationError):
            Connection(url).connect()

    def test_publish_consume_pickle(self, broker_url: str) -> None:
        queue = Queue(f"pickle-{uuid.uuid4().hex}", routing_key="pickle")
        with Connection(broker_url, accept=["pickle"]) as connection:
            producer = Producer(connection.channel())
            producer.publish(
                {"when": (1, 2.5, "x")},
                exchange="",
                routing_key=queue.name,
                serializer="pickle",
                declare=[queue],
            )
            received = []
            with Consumer(
                connection,
                [queue],
                accept=["pickle"],
                callbacks=[lambda body, m: (received.append((body, m)), m.ack())],
            ):
                connection.drain_events(timeout=2)
        body, message = received[0]
        assert body == {"when": (1, 2.5, "x")}
        assert message.content_type == "application/x-python-serialize"

    def test_consume_empty_queue_times_out(self, broker_url: str) -> None:
        queue = Queue("empty-q", routing_key="empty-q")
        calls = []
        with Connection(broker_url) as connection:
            with Consumer(
                connection, [queue], callbacks=[lambda b, m: calls.append(b)]
            ):
                started = time.monotonic()
                with pytest.raises(socket.timeout):
                    connection.drain_events(timeout=0.5)
                elapsed = time.monotonic() - started
        assert calls == []
        assert 0.4 <= elapsed < 1.5

    def test_simple_queue_keeps_headers(self, broker_url: str) -> None:
        with Connection(broker_url) as connection:
            simple = connection.SimpleQueue("simple-q")
            simple.put({"a": 1}, headers={"k": "v"})
            message = simple.get(timeout=2)
            assert message.payload == {"a": 1}
            assert message.headers == {"k": "v"}
            assert message.content_encoding == "utf-8"
            message.ack()
            simple.close()

    def test_simple_buffer_publish_consume(self, broker_url: str) -> None:
        with Connection(broker_url) as connection:
            buffer = connection.SimpleBuffer("simple-buffer")
            buffer.put({"b": 2})
            assert buffer.get(timeout=2).payload == {"b": 2}
            buffer.close()

    def test_failover_keeps_transport(self, broker_url: str) -> None:
        url = f"{unreachable_url()};{broker_url}"
        with Connection(url) as connection:
            connection.ensure_connection(
                max_retries=3, interval_start=0, interval_step=0
            )
            assert isinstance(connection.transport, Transport)
            simple = connection.SimpleQueue("failover-q")
            simple.put({"ok": True})
            assert simple.get(timeout=2).payload == {"ok": True}
            simple.close()


class TestExchangeTypes:
    def test_direct_routes_exactly(self, broker_url: str) -> None:
        exchange = Exchange("conf-direct", "direct")
        first = Queue("conf-d1", exchange, "one")
        second = Queue("conf-d2", exchange, "two")
        with Connection(broker_url) as connection:
            producer = Producer(connection.channel())
            producer.publish(
                {"to": "one"},
                exchange=exchange,
                routing_key="one",
                declare=[first, second],
            )
            producer.publish({"to": "nobody"}, exchange=exchange, routing_key="three")
            assert connection.SimpleQueue(first).get(timeout=1).payload == {"to": "one"}
            other = connection.SimpleQueue(second)
            with pytest.raises(other.Empty):
                other.get(timeout=0.3)

    def test_fanout_to_two_queues(self, broker_url: str) -> None:
        exchange = Exchange("conf-fanout", "fanout")
        queues = [Queue("conf-f1", exchange), Queue("conf-f2", exchange)]
        with Connection(broker_url) as connection:
            for queue in queues:
                queue(connection.channel()).declare()
            Producer(connection.channel()).publish({"all": 1}, exchange=exchange)
            for queue in queues:
                message = connection.SimpleQueue(queue).get(timeout=1)
                assert message.payload == {"all": 1}
                message.ack()

    def test_topic_single_word_wildcard(self, broker_url: str) -> None:
        exchange = Exchange("conf-topic", "topic")
        queue = Queue("conf-t", exchange, "t.*")
        with Connection(broker_url) as connection:
            producer = Producer(connection.channel())
            producer.publish(
                {"k": "t"}, exchange=exchange, routing_key="t", declare=[queue]
            )
            producer.publish({"k": "t.1"}, exchange=exchange, routing_key="t.1")
            simple = connection.SimpleQueue(queue)
            assert simple.get(timeout=1).payload == {"k": "t.1"}
            with pytest.raises(simple.Empty):
                simple.get(timeout=0.3)

    def test_publish_to_empty_exchange(self, broker_url: str) -> None:
        queue = Queue("conf-default", routing_key="conf-default")
        with Connection(broker_url) as connection:
            Producer(connection.channel()).publish(
                {"x": 1}, exchange="", routing_key="conf-default", declare=[queue]
            )
            assert connection.SimpleQueue(queue).get(timeout=1).payload == {"x": 1}


class TestPriority:
    def test_one_delivery_per_drain(self, broker_url: str) -> None:
        queue = Queue("conf-prio", Exchange("conf-prio", "direct"), "prio")
        received = []
        with Connection(broker_url) as connection:
            producer = Producer(connection.channel())
            for priority in (6, 0, 9):
                producer.publish(
                    {"p": priority},
                    exchange=queue.exchange,
                    routing_key="prio",
                    priority=priority,
                    declare=[queue],
                )
            with Consumer(
                connection,
                [queue],
                callbacks=[lambda b, m: (received.append(b["p"]), m.ack())],
            ):
                for expected_count in (1, 2, 3):
                    connection.drain_events(timeout=1)
                    assert len(received) == expected_count
        assert received == [0, 6, 9]

    def test_requeue_goes_behind_new_message(self, broker_url: str) -> None:
        queue = Queue("conf-prio-requeue", Exchange("conf-pr", "direct"), "pr")
        with Connection(broker_url) as connection:
            producer = Producer(connection.channel())
            for priority in (6, 0, 9):
                producer.publish(
                    {"p": priority},
                    exchange=queue.exchange,
                    routing_key="pr",
                    priority=priority,
                    declare=[queue],
                )
            simple = connection.SimpleQueue(queue)
            held = [simple.get(timeout=1) for _ in range(3)]
            producer.publish(
                {"p": "new0"}, exchange=queue.exchange, routing_key="pr", priority=0
            )
            for message in held:
                message.requeue()
            order = []
            for _ in range(4):
                message = simple.get(timeout=1)
                order.append(message.payload["p"])
                message.ack()
        assert order == ["new0", 0, 6, 9]


class TestMessage:
    @pytest.fixture
    def simple(self, broker_url: str):  # type: ignore[no-untyped-def]
        with Connection(broker_url) as connection:
            queue = connection.SimpleQueue("conf-message")
            yield queue
            queue.close()

    def test_ack_removes_message(self, simple) -> None:  # type: ignore[no-untyped-def]
        simple.put({"m": 1})
        simple.get_nowait().ack()
        with pytest.raises(simple.Empty):
            simple.get_nowait()

    def test_reject_no_requeue(self, simple) -> None:  # type: ignore[no-untyped-def]
        simple.put({"m": 1})
        simple.get_nowait().reject()
        with pytest.raises(simple.Empty):
            simple.get_nowait()

    def test_reject_requeue(self, simple) -> None:  # type: ignore[no-untyped-def]
        simple.put({"m": 1})
        simple.get_nowait().reject(requeue=True)
        message = simple.get_nowait()
        assert message.payload == {"m": 1}
        assert message.delivery_info["redelivered"] is True
        message.ack()

    def test_requeue_available_at_once(self, simple) -> None:  # type: ignore[no-untyped-def]
        simple.put({"m": 1})
        simple.get_nowait().requeue()
        message = simple.get_nowait()
        assert message.payload == {"m": 1}
        message.ack()
