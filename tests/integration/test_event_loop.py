"""The event-loop path: kombu's Hub polls the blocking read's socket."""

from __future__ import annotations

import time

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub

QUEUE = Queue("looped", Exchange("looped", "direct"), "looped")
BROADCAST = Queue("looped-fanout", Exchange("looped-bcast", "fanout"))


def run_hub(hub: Hub, until: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    loop = hub.create_loop()
    while not until() and time.monotonic() < deadline:  # type: ignore[operator]
        next(loop)


def test_hub_delivers_every_message(broker_url: str, redis_client: redis.Redis) -> None:
    hub = Hub()
    received: list[object] = []

    def on_message(body: object, message: object) -> None:
        received.append(body)
        message.ack()  # type: ignore[attr-defined]

    with (
        Connection(broker_url) as consumer_side,
        Connection(broker_url) as publisher_side,
    ):
        consumer_side.transport.register_with_event_loop(consumer_side.connection, hub)
        with Consumer(
            consumer_side, [QUEUE, BROADCAST], callbacks=[on_message], prefetch_count=10
        ):
            run_hub(hub, lambda: False, timeout_s=0.3)  # idle: a blocking read waits
            producer = Producer(publisher_side.channel())
            for number in range(200):
                producer.publish(
                    {"n": number},
                    exchange=QUEUE.exchange,
                    routing_key="looped",
                    declare=[QUEUE],
                )
            producer.publish(
                {"fanout": True}, exchange=BROADCAST.exchange, declare=[BROADCAST]
            )
            run_hub(hub, lambda: len(received) >= 201)
        hub.close()
    numbers = sorted(body["n"] for body in received if "n" in body)  # type: ignore[index]
    assert numbers == list(range(200))
    assert {"fanout": True} in received
    assert len(received) == 201
    assert redis_client.xlen("{looped}") == 0


def test_idle_hub_sends_few_commands(
    broker_url: str, redis_client: redis.Redis
) -> None:
    hub = Hub()
    with Connection(
        broker_url, transport_options={"polling_interval": 0.5}
    ) as connection:
        connection.transport.register_with_event_loop(connection.connection, hub)
        with Consumer(connection, [QUEUE], callbacks=[lambda b, m: None]):
            run_hub(hub, lambda: False, timeout_s=0.5)
            before = _command_calls(redis_client)
            run_hub(hub, lambda: False, timeout_s=2.0)
            after = _command_calls(redis_client)
        hub.close()
    # About one XREAD per 0.5 s block period; no fetch while nothing arrives.
    assert after.get("xread", 0) - before.get("xread", 0) <= 6
    assert after.get("evalsha", 0) - before.get("evalsha", 0) == 0


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(values["calls"])
        for name, values in stats.items()
    }
