"""Profile one hot path of a Redis transport with cProfile.

Usage::

    python bench/profile_paths.py consume [--transport redis] [--messages 20000]

Starts a fresh ``redis-server``, runs the path as the benchmark does, profiles
only the timed section and prints the top functions by cumulative time and by
own time. The file is not named ``profile.py`` because that would shadow the
standard library module that ``cProfile`` imports.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

import workloads as w
from brokers import LISTS, REDIS_SERVER_BINARY, STREAMS, Broker
from kombu import Consumer
from kombu.simple import SimpleQueue

from kombu_redis_streams.embedded import EmbeddedServer


def publish_path(broker: Broker, count: int) -> Callable[[], None]:
    """Prepare a producer; return the loop of ``count`` publishes."""
    connection = broker.connection()
    channel = connection.channel()
    queue = broker.declare_queue(channel, "profile.publish")
    producer = w.producer_for(channel, queue)
    for _ in range(w.WARMUP):
        producer.publish(w.BODY)

    def run() -> None:
        for _ in range(count):
            producer.publish(w.BODY)
        connection.release()

    return run


def consume_path(broker: Broker, count: int) -> Callable[[], None]:
    """Fill a queue; return the consumption of ``count`` messages with acks."""
    with broker.connection() as connection:
        queue = broker.declare_queue(connection.channel(), "profile.consume")
    w.fill(broker, [queue], count)

    def run() -> None:
        w.consume(broker, [queue], count)

    return run


def latency_path(broker: Broker, count: int) -> Callable[[], None]:
    """Return ``count`` one-message round trips (publish, then drain)."""

    def run() -> None:
        w.round_trip_latency(broker, "profile.rt", count)

    return run


def idle_path(broker: Broker, seconds: int) -> Callable[[], None]:
    """Return ``seconds`` of a consumer waiting on an empty queue."""
    connection = broker.connection()
    channel = connection.channel()
    queue = broker.declare_queue(channel, "profile.idle")
    consumer = Consumer(channel, [queue], prefetch_count=w.PREFETCH)
    consumer.consume()

    def run() -> None:
        end = perf_counter() + seconds
        while perf_counter() < end:
            try:
                connection.drain_events(timeout=end - perf_counter())
            except socket.timeout:
                continue
        consumer.cancel()
        connection.release()

    return run


def get_nowait_path(broker: Broker, count: int) -> Callable[[], None]:
    """Fill a queue; return ``count`` calls of ``SimpleQueue.get_nowait`` + ack."""
    with broker.connection() as connection:
        queue = broker.declare_queue(connection.channel(), "profile.nowait")
    w.fill(broker, [queue], count)
    connection = broker.connection()
    simple: SimpleQueue = connection.SimpleQueue(queue)

    def run() -> None:
        for _ in range(count):
            simple.get_nowait().ack()
        simple.close()
        connection.release()

    return run


PATHS: dict[str, Callable[[Broker, int], Callable[[], None]]] = {
    "publish": publish_path,
    "consume": consume_path,
    "latency": latency_path,
    "simple_get_nowait": get_nowait_path,
    "idle": idle_path,
}

#: Paths that profile a Celery worker process, by the pool they use.
CELERY_PATHS = {"celery_solo": "solo", "celery_prefork": "prefork"}


def profile_celery_worker(broker: Broker, pool: str, count: int, top: int) -> None:
    """Run Celery tasks through a worker whose main process runs under cProfile."""
    with tempfile.TemporaryDirectory() as directory:
        stats_path = Path(directory) / "worker.prof"
        sample = w.celery_rate(
            broker, "profile.celery", pool, count, 60.0, profile_to=stats_path
        )
        print(f"celery {pool} on {broker.name}: {sample.values}")
        if sample.partial_note:
            print(f"({sample.partial_note})")
        print(summarize(str(stats_path), top))


def summarize(profile: cProfile.Profile | str, top: int) -> str:
    """Format the top functions by cumulative time, then by own time."""
    out = io.StringIO()
    for key in ("cumulative", "tottime"):
        out.write(f"\n=== top {top} by {key} time ===\n")
        stats = pstats.Stats(profile, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Profile the requested path and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=sorted([*PATHS, *CELERY_PATHS]))
    parser.add_argument("--transport", choices=[STREAMS, LISTS], default=STREAMS)
    parser.add_argument(
        "--messages",
        type=int,
        default=10_000,
        help="messages or tasks; seconds for the idle path",
    )
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)

    with EmbeddedServer(REDIS_SERVER_BINARY) as server:
        url = server.url if args.transport == STREAMS else server.redis_url
        broker = Broker(args.transport, url, server, server, uuid.uuid4().hex[:8])
        if args.path in CELERY_PATHS:
            pool = CELERY_PATHS[args.path]
            profile_celery_worker(broker, pool, args.messages, args.top)
            return 0
        run = PATHS[args.path](broker, args.messages)
        profile = cProfile.Profile()
        start = perf_counter()
        profile.enable()
        run()
        profile.disable()
        elapsed = perf_counter() - start
    if args.path == "idle":
        print(f"idle on {args.transport}: {elapsed:.2f} s under cProfile")
    else:
        rate = args.messages / elapsed
        print(
            f"{args.path} on {args.transport}: {args.messages} messages in "
            f"{elapsed:.2f} s under cProfile ({rate:,.0f} msg/s; profiling slows it)"
        )
    print(summarize(profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
