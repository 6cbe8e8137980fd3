"""The server restarts, forgets, or disappears from the network."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from kombu_redis_streams import Transport
from kombu_redis_streams.embedded import EmbeddedServer

from .proxy import DroppingProxy
from .test_liveness import HOLD_THEN_DIE

QUEUE = Queue("outage", Exchange("outage", "direct"), "outage")


def publish(url: str, numbers: range) -> None:
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        for number in numbers:
            producer.publish(
                {"n": number},
                exchange=QUEUE.exchange,
                routing_key="outage",
                declare=[QUEUE],
            )


def consume_until(
    connection: Connection, received: list, count: int, seconds: float
) -> None:
    """Drain like a kombu user: on connection errors, wait and go on."""
    deadline = time.monotonic() + seconds
    while len(received) < count and time.monotonic() < deadline:
        try:
            connection.drain_events(timeout=0.3)
        except socket.timeout:
            continue
        except Transport.connection_errors:
            time.sleep(0.2)


@pytest.fixture
def aof_server() -> Iterator[EmbeddedServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    server = EmbeddedServer(binary, appendonly=True).start()
    yield server
    server.stop()


def test_aof_restart_keeps_unacked_only(aof_server: EmbeddedServer) -> None:
    url = aof_server.url
    publish(url, range(20))
    with Connection(url) as connection:
        received: list = []
        with Consumer(
            connection,
            [QUEUE],
            callbacks=[lambda b, m: (received.append(b), m.ack())],
            prefetch_count=1,
        ):
            consume_until(connection, received, 10, 10)
    assert len(received) == 10
    # A consumer takes five more and dies without acking them.
    subprocess.run(
        [
            sys.executable,
            "-c",
            HOLD_THEN_DIE.replace('"lease"', '"outage"'),
            url,
            "5",
            "",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    aof_server.restart()

    options = {"visibility_timeout": 0.5, "unacked_restore_interval": 0.2}
    with Connection(url, transport_options=options) as connection:
        rest: list = []
        with Consumer(
            connection, [QUEUE], callbacks=[lambda b, m: (rest.append(b["n"]), m.ack())]
        ):
            consume_until(connection, rest, 10, 10)
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=1)
    assert sorted(rest) == list(range(10, 20))


def test_client_kill_during_consume(broker_url: str, redis_client: redis.Redis) -> None:
    publish(broker_url, range(10))
    received: list[int] = []
    with Connection(broker_url) as connection:
        with Consumer(
            connection,
            [QUEUE],
            callbacks=[lambda b, m: (received.append(b["n"]), m.ack())],
            prefetch_count=2,
        ):
            consume_until(connection, received, 3, 5)
            for _ in range(3):
                redis_client.client_kill_filter(_type="normal", skipme=True)
                time.sleep(0.1)
            publish(broker_url, range(10, 20))
            consume_until(connection, received, 20, 15)
    assert sorted(received) == list(range(20))


def test_silent_drop_then_recover(server: EmbeddedServer, broker_url: str) -> None:
    proxy = DroppingProxy(server.port)
    proxied = f"redis-streams://127.0.0.1:{proxy.port}/0"
    options = {"health_check_interval": 1, "socket_timeout": 2, "polling_interval": 0.5}
    received: list[int] = []
    held = []

    def on_message(body: dict, message: object) -> None:
        received.append(body["n"])
        if body["n"] == 0:
            held.append(message)  # acked only after the network is back
        else:
            message.ack()  # type: ignore[attr-defined]

    try:
        publish(broker_url, range(5))
        with Connection(proxied, transport_options=options) as connection:
            with Consumer(connection, [QUEUE], callbacks=[on_message]):
                consume_until(connection, received, 5, 10)
                proxy.drop()
                publish(broker_url, range(5, 10))
                consume_until(connection, received, 10, 4)
                proxy.restore()
                publish(broker_url, range(10, 15))
                consume_until(connection, received, 15, 20)
                held[0].ack()
        with Connection(broker_url) as check:
            leftover = Queue("outage", QUEUE.exchange, "outage")(check.channel())
            assert leftover.queue_declare(passive=True).message_count == 0
    finally:
        proxy.close()
    assert sorted(set(received)) == list(range(15))
    assert len(received) == 15
    assert redis.Redis(port=server.port).xlen("{outage}") == 0


def test_script_flush_mid_consume(broker_url: str, redis_client: redis.Redis) -> None:
    publish(broker_url, range(30))
    received: list[int] = []
    with Connection(broker_url) as connection:
        with Consumer(
            connection,
            [QUEUE],
            callbacks=[lambda b, m: (received.append(b["n"]), m.ack())],
            prefetch_count=5,
        ):
            consume_until(connection, received, 7, 5)
            # Acks are waiting to ride with the next fetch when the scripts go.
            redis_client.script_flush()
            consume_until(connection, received, 30, 10)
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=0.5)
    assert sorted(received) == list(range(30))
    assert redis_client.xlen("{outage}") == 0


def test_failed_requeue_not_repeated(
    server: EmbeddedServer, broker_url: str, redis_client: redis.Redis
) -> None:
    exchange = Exchange("rq-ex", "direct")
    queue = Queue("rq-queue", exchange, "rq.key")
    proxy = DroppingProxy(server.port)
    proxied = f"redis-streams://127.0.0.1:{proxy.port}/0"
    options = {"socket_timeout": 1, "health_check_interval": 1}
    try:
        with Connection(broker_url) as setup:
            Producer(setup.channel()).publish(
                {"n": 1}, exchange=exchange, routing_key="rq.key", declare=[queue]
            )
        connection = Connection(proxied, transport_options=options)
        simple = connection.SimpleQueue(queue)
        message = simple.get(timeout=2)
        proxy.drop()
        with pytest.raises(Transport.connection_errors):
            message.requeue()
        proxy.restore()
        # Closing gives the message back once, on a new connection.
        connection.close()
        with Connection(broker_url) as check:
            again = [m.payload["n"] for m in drain_all(check, queue)]
    finally:
        proxy.close()
    assert again == [1]
    assert redis_client.exists("{rq.key}") == 0


def drain_all(connection: Connection, queue: Queue) -> list:
    received: list = []
    with Consumer(
        connection, [queue], callbacks=[lambda b, m: (received.append(m), m.ack())]
    ):
        consume_until(connection, received, 2, 2)
    return received


def test_close_without_server_dumps_nothing(
    server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    own = EmbeddedServer(server.binary).start()
    try:
        publish(own.url, range(3))
        connection = Connection(own.url)
        simple = connection.SimpleQueue(QUEUE)
        held = [simple.get(timeout=1) for _ in range(2)]
        own.kill()
        with caplog.at_level(logging.WARNING):
            connection.close()
    finally:
        own.stop()
    assert len(held) == 2
    assert "EMERGENCY DUMP" not in caplog.text
    assert "UNABLE TO RESTORE" not in caplog.text
    assert "stay pending" in caplog.text
