"""Memory stays bounded: acked entries leave, nothing unread is trimmed."""

from __future__ import annotations

import logging

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from .helpers import drain


def test_memory_returns_near_baseline(
    broker_url: str, redis_client: redis.Redis
) -> None:
    direct = Queue("retain", Exchange("retain", "direct"), "retain")
    fanout = Exchange("retain-fan", "fanout")
    bound = [Queue(f"retain-f{index}", fanout) for index in range(3)]
    body = "x" * 100
    with Connection(broker_url) as connection:
        for queue in [direct, *bound]:
            queue(connection.channel()).declare()
        producer = Producer(connection.channel())

        # Warm up, so scripts and client buffers are in the baseline.
        producer.publish(body, exchange=direct.exchange, routing_key="retain")
        producer.publish(body, exchange=fanout)
        for queue in [direct, *bound]:
            assert len(drain(connection, [queue], prefetch=100, timeout=0.3)) == 1
        baseline = redis_client.info("memory")["used_memory"]

        for _ in range(2000):
            producer.publish(body, exchange=direct.exchange, routing_key="retain")
            producer.publish(body, exchange=fanout)
        loaded = redis_client.info("memory")["used_memory"]
        assert len(drain(connection, [direct], prefetch=100)) == 2000
        for queue in bound:
            assert len(drain(connection, [queue], prefetch=100)) == 2000
    after = redis_client.info("memory")["used_memory"]
    assert redis_client.xlen("{retain}") == 0
    assert redis_client.xlen("_kombu_streams.fanout.{retain-fan}") == 0
    # Stream nodes may keep a little slack; most of the growth must be gone.
    assert after - baseline < (loaded - baseline) / 10


def test_eviction_policy_warning(
    broker_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING):
            with Connection(broker_url) as connection:
                connection.connect()
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")
    assert "allkeys-lru" in caplog.text
    assert "noeviction" in caplog.text
