"""Leases and consumer lifecycle: who may take which entry, and when."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import redis
from kombu import Connection, Exchange, Producer, Queue

from .helpers import drain

QUEUE = Queue("lease", Exchange("lease", "direct"), "lease")

HOLD_THEN_DIE = textwrap.dedent(
    """
    import os, sys
    import kombu_redis_streams
    from kombu import Connection, Consumer, Exchange, Queue
    queue = Queue("lease", Exchange("lease", "direct"), "lease")
    options = {"consumer_name": sys.argv[3]} if sys.argv[3] else {}
    with Connection(sys.argv[1], transport_options=options) as connection:
        held = []
        with Consumer(connection, [queue], callbacks=[lambda b, m: held.append(m)],
                      prefetch_count=int(sys.argv[2])):
            while len(held) < int(sys.argv[2]):
                connection.drain_events(timeout=5)
        print(connection.default_channel.consumer_name, flush=True)
        os._exit(0)
    """
)


def publish(connection: Connection, count: int) -> None:
    producer = Producer(connection.channel())
    for number in range(count):
        producer.publish(
            {"n": number}, exchange=QUEUE.exchange, routing_key="lease", declare=[QUEUE]
        )


def die_holding(url: str, count: int, name: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-c", HOLD_THEN_DIE, url, str(count), name],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_restart_same_name_takes_back(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 6)
    die_holding(broker_url, 4, "worker-a")
    # visibility_timeout is long: only the stable name can bring them back.
    options = {"consumer_name": "worker-a", "visibility_timeout": 3600}
    with Connection(broker_url, transport_options=options) as connection:
        received = drain(connection, [QUEUE], timeout=1)
    assert sorted(m.payload["n"] for m in received) == list(range(6))
    redelivered = sorted(
        m.payload["n"] for m in received if m.delivery_info.get("redelivered")
    )
    assert redelivered == [0, 1, 2, 3]


def test_other_name_waits_for_timeout(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 3)
    die_holding(broker_url, 3, "worker-a")
    options = {"consumer_name": "worker-b", "visibility_timeout": 3600}
    with Connection(broker_url, transport_options=options) as connection:
        assert drain(connection, [QUEUE], timeout=1) == []


def test_dead_consumer_reclaimed_promptly(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 5)
    die_holding(broker_url, 5)
    options = {"visibility_timeout": 1.0, "unacked_restore_interval": 0.25}
    started = time.monotonic()
    with Connection(broker_url, transport_options=options) as connection:
        received = drain(connection, [QUEUE], timeout=2, limit=5)
    elapsed = time.monotonic() - started
    assert sorted(m.payload["n"] for m in received) == list(range(5))
    # Within visibility_timeout plus one reclaim interval, with scheduling slack.
    assert elapsed < 1.0 + 0.25 + 1.0


def test_concurrent_reclaimers_never_share(broker_url: str) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 40)
    die_holding(broker_url, 40)
    options = {"visibility_timeout": 0.5, "unacked_restore_interval": 0.1}
    results: list[list[int]] = []

    def reclaim() -> None:
        with Connection(broker_url, transport_options=options) as connection:
            messages = drain(connection, [QUEUE], timeout=1.5)
        results.append([m.payload["n"] for m in messages])

    threads = [threading.Thread(target=reclaim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    everything = [number for part in results for number in part]
    assert len(results) == 4
    assert sorted(everything) == list(range(40))


def test_long_hold_not_stolen(broker_url: str) -> None:
    options = {"visibility_timeout": 0.6, "unacked_restore_interval": 0.1}
    with Connection(broker_url, transport_options=options) as holder:
        publish(holder, 1)
        message = holder.default_channel.basic_get("lease")
        assert message is not None
        # The holder calls nothing for 2 s, like a worker busy with a long
        # task; its lease thread keeps the entry while another consumer scans.
        with Connection(broker_url, transport_options=options) as other:
            stolen = drain(other, [QUEUE], timeout=2)
        message.ack()
    assert stolen == []


def test_dead_consumers_are_pruned(broker_url: str, redis_client: redis.Redis) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 2)
    name = die_holding(broker_url, 2)
    options = {"visibility_timeout": 0.5, "unacked_restore_interval": 0.1}
    with Connection(broker_url, transport_options=options) as connection:
        assert len(drain(connection, [QUEUE], timeout=1.5)) == 2
        consumers = {
            c["name"].decode()
            for c in redis_client.xinfo_consumers("{lease}", "kombu:lease")
        }
        assert name not in consumers


def test_gone_queue_fanout_group_swept(
    broker_url: str, redis_client: redis.Redis
) -> None:
    exchange = Exchange("sweep", "fanout")
    alive = Queue("sweep-alive", exchange)
    gone = Queue("sweep-gone", exchange, expires=0.5)
    stream = "_kombu_streams.fanout.{sweep}"
    options = {"visibility_timeout": 0.2, "unacked_restore_interval": 0.1}
    with Connection(broker_url, transport_options=options) as connection:
        gone(connection.channel()).declare()
        alive(connection.channel()).declare()
        time.sleep(1.0)  # the expiring queue's streams vanish
        assert redis_client.exists("{sweep-gone}") == 0
        producer = Producer(connection.channel())
        for number in range(5):
            producer.publish({"n": number}, exchange=exchange)
        groups = {g["name"].decode() for g in redis_client.xinfo_groups(stream)}
        assert groups == {"kombu:sweep-alive"}
        assert len(drain(connection, [alive])) == 5
    assert redis_client.xlen(stream) == 0
