"""Recovery: dead consumers, lost groups, broken keys, malformed entries."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from .helpers import drain

QUEUE = Queue("recover", Exchange("recover", "direct"), "recover")

CONSUME_THEN_DIE = textwrap.dedent(
    """
    import os, sys
    import kombu_redis_streams
    from kombu import Connection, Consumer, Exchange, Queue
    queue = Queue("recover", Exchange("recover", "direct"), "recover")
    with Connection(sys.argv[1]) as connection:
        held = []
        with Consumer(connection, [queue], callbacks=[lambda b, m: held.append(m)],
                      prefetch_count=int(sys.argv[2])):
            while len(held) < int(sys.argv[2]):
                connection.drain_events(timeout=5)
        print(len(held), flush=True)
        os._exit(0)  # like a kill: no close, no restore
    """
)


def publish(connection: Connection, count: int) -> None:
    producer = Producer(connection.channel())
    for number in range(count):
        producer.publish(
            {"n": number},
            exchange=QUEUE.exchange,
            routing_key="recover",
            declare=[QUEUE],
        )


def test_killed_consumer_entries_reclaimed(
    broker_url: str, redis_client: redis.Redis
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 10)
    dead = subprocess.run(
        [sys.executable, "-c", CONSUME_THEN_DIE, broker_url, "4"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert dead.stdout.strip() == "4"
    assert int(redis_client.xpending("{recover}", "kombu:recover")["pending"]) == 4

    options = {"visibility_timeout": 1, "unacked_restore_interval": 0.2}
    with Connection(broker_url, transport_options=options) as connection:
        received = drain(connection, [QUEUE], timeout=2.5)
    numbers = sorted(message.payload["n"] for message in received)
    assert numbers == list(range(10))
    redelivered = [m for m in received if m.delivery_info.get("redelivered")]
    assert sorted(m.payload["n"] for m in redelivered) == [0, 1, 2, 3]
    assert all(m.headers["x-delivery-count"] == 2 for m in redelivered)
    assert int(redis_client.xpending("{recover}", "kombu:recover")["pending"]) == 0


def test_large_reclaim_not_paced_by_interval(
    broker_url: str, redis_client: redis.Redis
) -> None:
    # A dead consumer held 40 entries and the survivor's prefetch is 4. Each
    # scan takes at most 4, and the next share is taken as soon as acks free
    # credit, not one share per unacked_restore_interval (60 s here).
    with Connection(broker_url) as connection:
        publish(connection, 40)
    dead = subprocess.run(
        [sys.executable, "-c", CONSUME_THEN_DIE, broker_url, "40"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert dead.stdout.strip() == "40"

    options = {"visibility_timeout": 1, "unacked_restore_interval": 60}
    with Connection(broker_url, transport_options=options) as connection:
        # The channel's first scan is due one interval after it opens, so
        # the test starts it once the entries are idle.
        channel = connection.default_channel
        channel._next_reclaim = 0.0
        time.sleep(1.1)
        received = drain(connection, [QUEUE], timeout=2.0, prefetch=4)
    numbers = sorted(message.payload["n"] for message in received)
    assert numbers == list(range(40))
    assert all(m.headers["x-delivery-count"] == 2 for m in received)
    assert int(redis_client.xpending("{recover}", "kombu:recover")["pending"]) == 0


def test_reclaim_walks_past_live_entries(
    broker_url: str, redis_client: redis.Redis
) -> None:
    # A live consumer has the first 30 entries and a dead one the next 10.
    # With a prefetch of 1, each scan may take one entry, and the live run
    # in front must not end the scan: the dead entries come back one after
    # the other, not one per interval (60 s here).
    options = {"visibility_timeout": 1, "unacked_restore_interval": 60}
    with Connection(broker_url, transport_options=options) as live:
        publish(live, 40)
        held = drain(live, [QUEUE], ack=False, limit=30, prefetch=30)
        dead = subprocess.run(
            [sys.executable, "-c", CONSUME_THEN_DIE, broker_url, "10"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        with Connection(broker_url, transport_options=options) as survivor:
            survivor.default_channel._next_reclaim = 0.0  # first scan at once
            time.sleep(1.1)
            received = drain(survivor, [QUEUE], timeout=2.0, prefetch=1)
        for message in held:
            message.ack()

    assert len(held) == 30
    assert dead.stdout.strip() == "10"
    assert sorted(message.payload["n"] for message in received) == list(range(30, 40))
    assert int(redis_client.xpending("{recover}", "kombu:recover")["pending"]) == 0


def test_live_consumer_keeps_held_entries(broker_url: str) -> None:
    options = {"visibility_timeout": 1, "unacked_restore_interval": 0.2}
    with (
        Connection(broker_url, transport_options=options) as holder,
        Connection(broker_url, transport_options=options) as other,
    ):
        publish(holder, 2)
        held = drain(holder, [QUEUE], ack=False, limit=2, prefetch=2)
        assert len(held) == 2
        # The holder keeps running its drain loop, which renews its entries,
        # while the other consumer scans for idle entries for 3 s.
        stolen = []
        for _ in range(6):
            stolen += drain(other, [QUEUE], timeout=0.25)
            with pytest.raises(OSError):
                holder.drain_events(timeout=0.25)
        assert stolen == []
        for message in held:
            message.ack()


def test_flushall_is_repaired(
    broker_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"unacked_restore_interval": 0.3}
    received = []
    with Connection(broker_url, transport_options=options) as connection:
        with connection.Consumer([QUEUE], callbacks=[lambda b, m: received.append(m)]):
            with pytest.raises(OSError):
                connection.drain_events(timeout=0.3)
            redis_client.flushall()
            with caplog.at_level(logging.WARNING):
                # The consumer notices the loss by itself and writes its group
                # and bindings again, so a publisher that never saw the old
                # state routes to it.
                with pytest.raises(OSError):
                    connection.drain_events(timeout=1.5)
            with Connection(broker_url) as publisher:
                producer = Producer(publisher.channel())
                for number in range(5):
                    producer.publish(
                        {"n": number}, exchange=QUEUE.exchange, routing_key="recover"
                    )
            for _ in range(5):
                connection.drain_events(timeout=2)
        for message in received:
            message.ack()
    assert sorted(m.payload["n"] for m in received) == [0, 1, 2, 3, 4]
    assert "was missing" in caplog.text
    assert "bindings of this process" in caplog.text


def test_malformed_entry_set_aside(
    broker_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 1)
        bad_id = redis_client.xadd("{recover}", {"junk": b"\xff\x00"}).decode()
        redis_client.xadd("{recover}", {"body": b"x", "meta": b"{broken"})
        publish(connection, 1)
        with caplog.at_level(logging.ERROR):
            received = drain(connection, [QUEUE])
    assert [m.payload["n"] for m in received] == [0, 0]
    dead = redis_client.xrange("{recover}:dead")
    assert len(dead) == 2
    first = dead[0][1]
    assert first[b"junk"] == b"\xff\x00"
    assert b"no 'body' field" in first[b"x-dead-letter-reason"]
    assert first[b"x-dead-letter-source"] == f"{{recover}} {bad_id}".encode()
    assert bad_id in caplog.text
    assert redis_client.xlen("{recover}") == 0


def test_wrong_key_type_is_skipped(
    broker_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 2)
        redis_client.delete("{recover}:9")
        redis_client.rpush("{recover}:9", "not a stream")
        with caplog.at_level(logging.ERROR):
            received = drain(connection, [QUEUE])
    assert sorted(m.payload["n"] for m in received) == [0, 1]
    assert "{recover}:9" in caplog.text
    assert "WRONGTYPE" in caplog.text


def test_wrong_key_type_on_publish(
    broker_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    from kombu.exceptions import ChannelError

    redis_client.set("{clash}", "a string")
    queue = Queue("clash", routing_key="clash")
    with Connection(broker_url) as connection:
        with caplog.at_level(logging.ERROR):
            queue(connection.channel()).declare()
        assert "not a stream" in caplog.text
        with pytest.raises(ChannelError) as info:
            Producer(connection.channel()).publish({"x": 1}, routing_key="clash")
    assert "'{clash}'" in str(info.value)
    assert "global_keyprefix" in str(info.value)
    assert redis_client.get("{clash}") == b"a string"


@pytest.mark.parametrize(
    "meta",
    [
        b'{"properties": {"__type__": "uuid", "__value__": 5}}',
        b'{"properties": {}, "headers": {"__type__": "bytes", "__value__": 5}}',
    ],
)
def test_bad_typed_json_set_aside(
    broker_url: str, redis_client: redis.Redis, meta: bytes
) -> None:
    with Connection(broker_url) as connection:
        publish(connection, 1)
        redis_client.xadd("{recover}", {"body": b"x", "meta": meta})
        publish(connection, 1)
        received = drain(connection, [QUEUE])
    assert [m.payload["n"] for m in received] == [0, 0]
    assert redis_client.xlen("{recover}:dead") == 1
