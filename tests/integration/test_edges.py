"""Message TTL, undecodable bodies, queue order, Unix sockets, old servers."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from kombu_redis_streams import MessageTooLargeError, UnsupportedServerError
from kombu_redis_streams.embedded import EmbeddedServer

from .helpers import bodies, drain


def test_expired_message_is_dropped(broker_url: str, redis_client: redis.Redis) -> None:
    queue = Queue("ttl", routing_key="ttl")
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        producer.publish({"n": 1}, routing_key="ttl", declare=[queue], expiration=0.3)
        producer.publish({"n": 2}, routing_key="ttl", expiration=30)
        producer.publish({"n": 3}, routing_key="ttl")
        time.sleep(0.5)
        received = bodies(drain(connection, [queue]))
    assert received == [{"n": 2}, {"n": 3}]
    assert redis_client.xlen("{ttl}") == 0


def test_undecodable_body_set_aside(
    broker_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue("garbled", routing_key="garbled")
    errors = []
    with Connection(broker_url) as connection:
        producer = Producer(connection.channel())
        producer.publish(
            b"{not json",
            routing_key="garbled",
            declare=[queue],
            content_type="application/json",
            content_encoding="utf-8",
        )
        producer.publish({"ok": True}, routing_key="garbled")
        received = []
        with caplog.at_level(logging.ERROR):
            with Consumer(
                connection,
                [queue],
                callbacks=[lambda b, m: (received.append(b), m.ack())],
                on_decode_error=lambda message, exc: errors.append(exc),
            ):
                for _ in range(2):
                    connection.drain_events(timeout=1)
    assert received == [{"ok": True}]
    assert len(errors) == 1
    dead = redis_client.xrange("{garbled}:dead")
    assert len(dead) == 1
    assert b"cannot be decoded" in dead[0][1][b"x-dead-letter-reason"]
    assert dead[0][1][b"body"] == b"{not json"
    assert "{garbled}:dead" in caplog.text


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("round_robin", ["c", "a", "b", "c", "a", "b"]),
        ("priority", ["c", "c", "a", "a", "b", "b"]),
        ("sorted", ["a", "a", "b", "b", "c", "c"]),
    ],
)
def test_queue_order_strategy(
    broker_url: str, strategy: str, expected: list[str]
) -> None:
    exchange = Exchange("order", "direct")
    queues = [Queue(f"order-{name}", exchange, name) for name in ("c", "a", "b")]
    options = {"queue_order_strategy": strategy}
    with Connection(broker_url, transport_options=options) as connection:
        producer = Producer(connection.channel())
        for name in ("a", "b", "c"):
            for _ in range(2):
                producer.publish(
                    {"q": name}, exchange=exchange, routing_key=name, declare=queues
                )
        received = bodies(drain(connection, queues, prefetch=1))
    assert [body["q"] for body in received] == expected


def test_unix_socket_url(server: EmbeddedServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "redis.sock"
    with EmbeddedServer(server.binary, extra_args=("--unixsocket", str(path))) as local:
        url = f"redis-streams+socket://{path}"
        with Connection(url) as connection:
            simple = connection.SimpleQueue("over-socket")
            simple.put({"via": "socket"})
            message = simple.get(timeout=1)
            message.ack()
            simple.close()
        assert redis.Redis(port=local.port).exists("{over-socket}") == 1
    assert message.payload == {"via": "socket"}


def test_old_server_refused_at_connect(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_info = redis.Redis.info

    def old_info(self: redis.Redis, section: str | None = None, *args: object) -> dict:
        info = real_info(self, section, *args)
        info.pop("valkey_version", None)
        info["redis_version"] = "6.0.16"
        return info

    monkeypatch.setattr(redis.Redis, "info", old_info)
    with pytest.raises(UnsupportedServerError) as error:
        Connection(broker_url).connect()
    assert "Redis 6.0.16 is not supported" in str(error.value)
    assert "6.2.0 or newer" in str(error.value)


def test_oversize_message_refused_clearly(server: EmbeddedServer) -> None:
    # Past proto-max-bulk-len the server drops the connection, which kombu
    # would take for a network failure and retry. The transport refuses the
    # message itself, with the sizes in the error, and writes nothing.
    limited = EmbeddedServer(server.binary, extra_args=("--proto-max-bulk-len", "1mb"))
    with limited, Connection(limited.url) as connection:
        simple = connection.SimpleQueue("big")
        with pytest.raises(MessageTooLargeError) as info:
            simple.put(b"x" * (2 * 1024 * 1024), serializer="raw")
        simple.put({"small": True})
        message = simple.get(timeout=1)
        message.ack()
        left = simple.qsize()
        simple.close()
    assert "proto-max-bulk-len of 1048576 bytes" in str(info.value)
    assert "2097152 bytes" in str(info.value)
    assert message.payload == {"small": True}
    assert left == 0
