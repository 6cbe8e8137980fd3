"""Workloads: each one measures one or more metrics on one broker.

Every message body is 100 bytes of raw data, every queue is durable and bound
to a direct exchange of the same name (as Celery does), and every consumer
acknowledges each message. One call of a ``run`` function is one sample. Each
loop is bounded by a message count and by :data:`SAMPLE_TIMEOUT_S`, so a
transport that loses a message fails its sample instead of stalling the suite.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any

import redis
import redis.connection
from brokers import Broker
from kombu import Connection, Consumer, Exchange, Producer, Queue

BODY = b"x" * 100
PREFETCH = 100
#: Messages published and consumed before a timed section, to open
#: connections, load scripts and fill routing caches.
WARMUP = 50
#: Upper bound in seconds of one sample of any workload.
SAMPLE_TIMEOUT_S = 300.0
#: Seconds between two publishes of the wake-up latency workload, so that the
#: consumer is blocked in ``drain_events`` when each message arrives.
WAKE_GAP_S = 0.002
#: Seconds the Celery worker may take to start and run its first task.
WORKER_START_TIMEOUT_S = 60.0
BENCH_DIR = Path(__file__).resolve().parent

#: Commands sent by the statistics client itself, left out of command counts.
STATS_COMMANDS = frozenset({"cmdstat_config|resetstat", "cmdstat_info", "cmdstat_ping"})


class NotApplicable(Exception):
    """The workload cannot run on this broker, for the reason in the message."""


class SampleTimeout(Exception):
    """A sample did not finish within its time bound."""


@dataclass(frozen=True)
class Metric:
    """One measured quantity, as shown in the table and the JSON result."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    group: str


@dataclass
class Sample:
    """The values of one run of a workload, by metric key, plus raw details."""

    values: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    #: Set when the sample stopped at its time limit and measured what it had.
    partial_note: str = ""


@dataclass
class Workload:
    """A measurement repeated for several rounds on every broker.

    ``prepare`` runs once per broker before the first round and may return a
    sample of its own (the backlog workloads measure memory while filling).
    ``run`` takes the broker and the round index. ``stateful`` workloads keep
    their queues between rounds; the others are cleaned after every sample.
    """

    name: str
    metrics: tuple[Metric, ...]
    rounds: int
    run: Callable[[Broker, int], Sample]
    params: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[Broker], Sample | None] | None = None
    stateful: bool = False


# -- helpers --------------------------------------------------------------------


def deadline_after(seconds: float = SAMPLE_TIMEOUT_S) -> float:
    """Return the ``monotonic()`` time ``seconds`` from now."""
    return monotonic() + seconds


def drain_until(
    connection: Connection, done: Callable[[], bool], deadline: float, operation: str
) -> None:
    """Call ``drain_events`` until ``done()`` is true.

    Raises:
        SampleTimeout: ``deadline`` passed first.
    """
    while not done():
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise SampleTimeout(f"{operation} timed out")
        try:
            connection.drain_events(timeout=min(remaining, 1.0))
        except socket.timeout:
            continue


def producer_for(channel: Any, queue: Queue) -> Producer:
    """Create a producer that publishes to ``queue`` through its exchange."""
    return Producer(channel, exchange=queue.exchange, routing_key=queue.routing_key)


def fill(broker: Broker, queues: Sequence[Queue], count: int) -> None:
    """Publish ``count`` messages spread over ``queues`` and wait until queued.

    Uses ``Producer.batch`` where the transport implements it, because the fill
    is not timed. Waiting matters for RabbitMQ, which queues asynchronously.

    Raises:
        SampleTimeout: the queues did not hold the messages in time.
    """
    with broker.connection() as connection:
        producer = Producer(connection.channel())
        batch = producer.batch() if producer.supports_batch_publish else nullcontext()
        with batch:
            for index in range(count):
                queue = queues[index % len(queues)]
                producer.publish(
                    BODY, exchange=queue.exchange, routing_key=queue.routing_key
                )
    wait_queued(broker, queues, count)


def wait_queued(broker: Broker, queues: Sequence[Queue], count: int) -> None:
    """Wait until ``queues`` together report ``count`` ready messages.

    Raises:
        SampleTimeout: they did not within 60 s.
    """
    deadline = deadline_after(60.0)
    with broker.connection() as connection:
        channel = connection.channel()
        while True:
            ready = sum(
                queue(channel).queue_declare(passive=True).message_count
                for queue in queues
            )
            if ready == count:
                return
            if monotonic() > deadline:
                raise SampleTimeout(
                    f"the queues hold {ready} messages after the fill, not {count}"
                )
            time.sleep(0.05)


def consume(
    broker: Broker, queues: Sequence[Queue], count: int, prefetch: int = PREFETCH
) -> float:
    """Consume ``count`` messages, acking each one; return the seconds taken.

    The clock starts before the consumer is registered, because RabbitMQ starts
    pushing messages as soon as it is.
    """
    received = 0

    def on_message(body: Any, message: Any) -> None:
        nonlocal received
        message.ack()
        received += 1

    with broker.connection() as connection:
        channel = connection.channel()
        start = perf_counter()
        with Consumer(
            channel, list(queues), callbacks=[on_message], prefetch_count=prefetch
        ):
            drain_until(
                connection, lambda: received >= count, deadline_after(), "consume"
            )
            return perf_counter() - start


def percentile(values: Sequence[float], percent: float) -> float:
    """Return the nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    rank = max(math.ceil(percent / 100 * len(ordered)), 1)
    return ordered[rank - 1]


@contextmanager
def count_round_trips() -> Iterator[list[int]]:
    """Count the requests redis-py sends from this process while active.

    A request is one ``send_packed_command`` call: a single command or a whole
    pipeline, so the count is the number of network round trips. The counter
    wraps redis-py's connection class for the duration of the block only.
    """
    counter = [0]
    cls = redis.connection.AbstractConnection
    original: Any = cls.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        original(self, command, check_health)

    cls.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        cls.send_packed_command = original  # type: ignore[method-assign]


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Return the server's calls per command since the last CONFIG RESETSTAT.

    Commands run inside Lua scripts are counted too, on top of the EVALSHA.
    """
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name not in STATS_COMMANDS
    }


def require_redis(broker: Broker) -> None:
    """Raise NotApplicable unless the broker is a Redis server.

    Raises:
        NotApplicable: the broker is RabbitMQ.
    """
    if not broker.is_redis:
        raise NotApplicable("Redis-only: there are no Redis commands to count")


# -- publish ----------------------------------------------------------------------


def publish_rate(broker: Broker, label: str, count: int, *, batch: bool) -> Sample:
    """Time ``count`` publishes, one call each or inside ``Producer.batch``.

    Raises:
        NotApplicable: ``batch`` is set and the transport does not batch.
    """
    with broker.connection() as connection:
        channel = connection.channel()
        queue = broker.declare_queue(channel, label)
        producer = producer_for(channel, queue)
        if batch and not hasattr(producer, "batch"):
            raise NotApplicable("this kombu has no Producer.batch")
        if batch and not producer.supports_batch_publish:
            raise NotApplicable(
                "the transport does not implement batch publishing, so "
                "Producer.batch would publish one message at a time"
            )
        for _ in range(WARMUP):
            producer.publish(BODY)
        start = perf_counter()
        if batch:
            with producer.batch():
                for _ in range(count):
                    producer.publish(BODY)
        else:
            for _ in range(count):
                producer.publish(BODY)
        elapsed = perf_counter() - start
    key = "batch_publish" if batch else "publish"
    return Sample({key: count / elapsed})


# -- consume ----------------------------------------------------------------------


def consume_rate(broker: Broker, label: str, count: int) -> Sample:
    """Fill one queue with ``count`` messages, then time consuming them."""
    with broker.connection() as connection:
        queue = broker.declare_queue(connection.channel(), label)
    fill(broker, [queue], count)
    return Sample({"consume": count / consume(broker, [queue], count)})


def simple_get_rate(broker: Broker, label: str, count: int, *, block: bool) -> Sample:
    """Time ``SimpleQueue.get`` (or ``get_nowait``) plus ack on a filled queue."""
    with broker.connection() as connection:
        queue = broker.declare_queue(connection.channel(), label)
    fill(broker, [queue], count)
    deadline = deadline_after()
    with broker.connection() as connection:
        simple = connection.SimpleQueue(queue)
        try:
            start = perf_counter()
            for _ in range(count):
                if block:
                    remaining = deadline - monotonic()
                    message = simple.get(block=True, timeout=max(remaining, 0.0))
                else:
                    message = simple.get_nowait()
                message.ack()
            elapsed = perf_counter() - start
        except simple.Empty:
            raise SampleTimeout("SimpleQueue found the filled queue empty") from None
        finally:
            simple.close()
    key = "simple_get" if block else "simple_get_nowait"
    return Sample({key: count / elapsed})


# -- latency ----------------------------------------------------------------------


def round_trip_latency(broker: Broker, label: str, samples: int) -> Sample:
    """Publish one message, then drain it on a second connection; repeat.

    Each sample is the time from the publish call to the consumer's callback;
    the ack follows outside the timed window.
    """
    times: list[float] = []
    arrived: list[float] = []

    def on_message(body: Any, message: Any) -> None:
        arrived.append(perf_counter())
        message.ack()

    deadline = deadline_after()
    with broker.connection() as consuming, broker.connection() as publishing:
        channel = consuming.channel()
        queue = broker.declare_queue(channel, label)
        producer = producer_for(publishing.channel(), queue)
        with Consumer(
            channel, [queue], callbacks=[on_message], prefetch_count=PREFETCH
        ):
            for index in range(WARMUP + samples):
                arrived.clear()
                start = perf_counter()
                producer.publish(BODY)
                drain_until(consuming, lambda: bool(arrived), deadline, "latency")
                if index >= WARMUP:
                    times.append(arrived[0] - start)
    return Sample(
        {
            "latency_p50": percentile(times, 50) * 1000,
            "latency_p99": percentile(times, 99) * 1000,
        }
    )


def wake_up_latency(broker: Broker, label: str, samples: int) -> Sample:
    """Measure publish-to-callback time while the consumer waits for messages.

    A thread publishes one message every :data:`WAKE_GAP_S` seconds after the
    previous one arrived, while the main thread sits in ``drain_events``. This
    is the path of an idle worker woken by a new task.
    """
    times: list[float] = []
    sent_at = [0.0]
    delivered = threading.Event()
    finished = threading.Event()
    errors: list[str] = []

    def on_message(body: Any, message: Any) -> None:
        times.append(perf_counter() - sent_at[0])
        message.ack()
        delivered.set()

    def publish_loop(queue: Queue) -> None:
        try:
            with broker.connection() as publishing:
                producer = producer_for(publishing.channel(), queue)
                for _ in range(WARMUP + samples):
                    time.sleep(WAKE_GAP_S)
                    delivered.clear()
                    sent_at[0] = perf_counter()
                    producer.publish(BODY)
                    if not delivered.wait(10.0):
                        errors.append("a message did not arrive within 10 s")
                        return
        except Exception as exc:  # reported by the main thread
            errors.append(repr(exc))
        finally:
            finished.set()

    deadline = deadline_after()
    with broker.connection() as consuming:
        channel = consuming.channel()
        queue = broker.declare_queue(channel, label)
        with Consumer(
            channel, [queue], callbacks=[on_message], prefetch_count=PREFETCH
        ):
            thread = threading.Thread(target=publish_loop, args=(queue,), daemon=True)
            thread.start()
            try:
                drain_until(consuming, finished.is_set, deadline, "wake-up latency")
            finally:
                finished.wait(15.0)
                thread.join(15.0)
    if errors:
        raise SampleTimeout(errors[0])
    measured = times[WARMUP:]
    return Sample(
        {
            "wake_latency_p50": percentile(measured, 50) * 1000,
            "wake_latency_p99": percentile(measured, 99) * 1000,
        }
    )


# -- scaling ----------------------------------------------------------------------


def many_queues_rate(broker: Broker, label: str, queues: int, total: int) -> Sample:
    """Spread ``total`` messages over ``queues`` queues; time one consumer on all."""
    with broker.connection() as connection:
        channel = connection.channel()
        declared = [
            broker.declare_queue(channel, f"{label}.{index}") for index in range(queues)
        ]
    fill(broker, declared, total)
    return Sample(
        {f"consume_queues_{queues}": total / consume(broker, declared, total)}
    )


def consumer_process(
    url: str,
    queue_name: str,
    total: int,
    ready: Any,
    go: Any,
    acked: Any,
    last_ack: Any,
    index: int,
    timeout_s: float,
) -> None:
    """Consume from ``queue_name`` in a child process until ``total`` are acked.

    Connects first, reports ``ready``, and registers its consumer only after
    ``go`` is set, so that no message is taken before the parent's clock runs.
    Stores the ``monotonic()`` time of its last ack in ``last_ack[index]``;
    CLOCK_MONOTONIC is shared by all processes on Linux.
    """
    exchange = Exchange(queue_name, type="direct", durable=True)
    queue = Queue(queue_name, exchange, routing_key=queue_name, durable=True)

    def on_message(body: Any, message: Any) -> None:
        message.ack()
        with acked.get_lock():
            acked.value += 1
        last_ack[index] = monotonic()

    with Connection(url) as connection:
        connection.connect()
        channel = connection.channel()
        with ready.get_lock():
            ready.value += 1
        if not go.wait(timeout_s):
            return
        deadline = monotonic() + timeout_s
        with Consumer(
            channel, [queue], callbacks=[on_message], prefetch_count=PREFETCH
        ):
            while acked.value < total and monotonic() < deadline:
                try:
                    connection.drain_events(timeout=0.2)
                except socket.timeout:
                    continue


def processes_rate(broker: Broker, label: str, processes: int, total: int) -> Sample:
    """Time ``processes`` consumer processes emptying one queue of ``total``.

    The rate is ``total`` divided by the time from the start signal to the last
    ack of any process. Processes are spawned, not forked, so that none inherits
    this process's sockets or the transports' background threads.
    """
    with broker.connection() as connection:
        queue = broker.declare_queue(connection.channel(), label)
    fill(broker, [queue], total)
    context = multiprocessing.get_context("spawn")
    ready = context.Value("i", 0)
    acked = context.Value("i", 0)
    last_ack = context.Array("d", processes)
    go = context.Event()
    children = [
        context.Process(
            target=consumer_process,
            args=(broker.url, queue.name, total, ready, go, acked, last_ack, index),
            kwargs={"timeout_s": SAMPLE_TIMEOUT_S},
            daemon=True,
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    try:
        startup_deadline = deadline_after(60.0)
        while ready.value < processes:
            if monotonic() > startup_deadline:
                raise SampleTimeout("the consumer processes did not connect in time")
            time.sleep(0.01)
        start = monotonic()
        go.set()
        join_deadline = deadline_after()
        for child in children:
            child.join(max(join_deadline - monotonic(), 0.1))
        if acked.value != total:
            raise SampleTimeout(f"{acked.value} of {total} messages were acked")
        elapsed = max(last_ack[:]) - start
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
                child.join(5.0)
    return Sample({f"consume_procs_{processes}": total / elapsed})


@dataclass
class Backlog:
    """The queues of a backlog workload, kept on each broker across rounds."""

    size: int
    chunk: int
    rounds: int
    queues: dict[str, Queue] = field(default_factory=dict)

    def prepare(self, broker: Broker) -> Sample:
        """Fill the backlog and measure the server memory it takes.

        The queue gets ``size + (rounds - 1) * chunk`` messages, so that every
        round consumes ``chunk`` of them with at least ``size`` queued.
        """
        count = self.size + (self.rounds - 1) * self.chunk
        with broker.connection() as connection:
            queue = broker.declare_queue(connection.channel(), f"backlog.{self.size}")
        self.queues[broker.name] = queue
        before = _used_memory(broker)
        fill(broker, [queue], count)
        values: dict[str, float] = {}
        if before is not None:
            used = _used_memory(broker)
            assert used is not None
            values[f"memory_per_msg_{self.size}"] = (used - before) / count
        return Sample(values, {"queued": count})

    def run(self, broker: Broker, round_index: int) -> Sample:
        """Consume one chunk of the backlog."""
        queue = self.queues[broker.name]
        elapsed = consume(broker, [queue], self.chunk)
        return Sample({f"consume_backlog_{self.size}": self.chunk / elapsed})


def _used_memory(broker: Broker) -> int | None:
    if not broker.is_redis:
        return None
    with broker.stats_client() as client:
        return int(client.info("memory")["used_memory"])


# -- cost -------------------------------------------------------------------------


def publish_cost(broker: Broker, label: str, count: int) -> Sample:
    """Count server commands and client round trips per published message."""
    require_redis(broker)
    with broker.stats_client() as stats, broker.connection() as connection:
        channel = connection.channel()
        queue = broker.declare_queue(channel, label)
        producer = producer_for(channel, queue)
        for _ in range(WARMUP):
            producer.publish(BODY)
        stats.ping()
        stats.config_resetstat()
        with count_round_trips() as trips:
            for _ in range(count):
                producer.publish(BODY)
        calls = command_calls(stats)
    return _cost_sample("publish", calls, trips[0], count)


def consume_cost(broker: Broker, label: str, count: int) -> Sample:
    """Count server commands and client round trips per consumed message.

    The count runs from registering the consumer to closing its connection, so
    that acks a transport holds back and sends at close are included.
    """
    require_redis(broker)
    with broker.connection() as connection:
        queue = broker.declare_queue(connection.channel(), label)
    fill(broker, [queue], count)
    received = 0

    def on_message(body: Any, message: Any) -> None:
        nonlocal received
        message.ack()
        received += 1

    with broker.stats_client() as stats:
        connection = broker.connection()
        channel = connection.channel()
        stats.ping()
        stats.config_resetstat()
        with count_round_trips() as trips:
            with connection:
                with Consumer(
                    channel, [queue], callbacks=[on_message], prefetch_count=PREFETCH
                ):
                    drain_until(
                        connection,
                        lambda: received >= count,
                        deadline_after(),
                        "consume",
                    )
        calls = command_calls(stats)
    return _cost_sample("consume", calls, trips[0], count)


def _cost_sample(path: str, calls: dict[str, int], trips: int, count: int) -> Sample:
    per_message = {name: value / count for name, value in sorted(calls.items())}
    return Sample(
        {
            f"commands_per_{path}": sum(calls.values()) / count,
            f"round_trips_per_{path}": trips / count,
        },
        {"commands_per_message": per_message},
    )


def idle_cost(broker: Broker, label: str, seconds: float) -> Sample:
    """Measure an idle consumer: commands and round trips per second, and CPU.

    The consumer drains an empty queue; its first half second is left out so
    that only the steady state counts. CPU is ``time.process_time`` of this
    process, all threads included, as a percentage of one core.
    """
    with broker.connection() as connection:
        channel = connection.channel()
        queue = broker.declare_queue(channel, label)
        stats = broker.stats_client() if broker.is_redis else None
        try:
            with Consumer(channel, [queue], prefetch_count=PREFETCH):
                _drain_idle(connection, 0.5)
                if stats is not None:
                    stats.ping()
                    stats.config_resetstat()
                with count_round_trips() as trips:
                    cpu_start = time.process_time()
                    wall_start = monotonic()
                    _drain_idle(connection, seconds)
                    wall = monotonic() - wall_start
                    cpu = time.process_time() - cpu_start
            values = {"idle_cpu_pct": 100 * cpu / wall}
            details: dict[str, Any] = {}
            if stats is not None:
                calls = command_calls(stats)
                values["idle_commands_per_s"] = sum(calls.values()) / wall
                values["idle_round_trips_per_s"] = trips[0] / wall
                details["commands_per_s"] = {
                    name: value / wall for name, value in sorted(calls.items())
                }
        finally:
            if stats is not None:
                stats.close()
    return Sample(values, details)


def _drain_idle(connection: Connection, seconds: float) -> None:
    end = monotonic() + seconds
    while (remaining := end - monotonic()) > 0:
        try:
            connection.drain_events(timeout=remaining)
        except socket.timeout:
            continue
        raise RuntimeError("the idle consumer received a message")


# -- Celery -----------------------------------------------------------------------


def celery_rate(
    broker: Broker,
    label: str,
    pool: str,
    count: int,
    time_limit_s: float,
    profile_to: Path | None = None,
) -> Sample:
    """Run ``count`` no-op tasks through a Celery worker subprocess.

    The worker starts and runs one warm-up task first. The clock runs from the
    first send to the moment the counter in database 1 shows all tasks done.
    A run that reaches ``time_limit_s`` returns the rate of the tasks done so
    far, marked as partial. With ``profile_to``, the worker's main process runs
    under cProfile and writes its statistics there when it stops.
    """
    from celery_app import COUNTER_KEY, TASK_NAME, control_exchange_names, make_app

    queue = broker.name_for(label)
    control = broker.name_for(f"{label}.control")
    for name in control_exchange_names(control):
        broker.remember(name)
    counter = redis.Redis.from_url(broker.counter_url)
    counter.delete(COUNTER_KEY)
    app = make_app(broker.url, queue, control)
    log_path = BENCH_DIR / "results" / f".worker-{uuid.uuid4().hex[:8]}.log.tmp"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker = _start_worker(broker, queue, control, pool, log_path, profile_to)
    try:
        app.send_task(TASK_NAME)
        warm = deadline_after(WORKER_START_TIMEOUT_S)
        if _wait_for_count(counter, 1, warm, worker) < 1:
            raise SampleTimeout("the worker did not run the warm-up task in time")
        counter.delete(COUNTER_KEY)
        start = perf_counter()
        for _ in range(count):
            app.send_task(TASK_NAME)
        done = _wait_for_count(counter, count, start_deadline(time_limit_s), worker)
        elapsed = perf_counter() - start
    except Exception as exc:
        raise RuntimeError(f"{exc}; worker log:\n{_tail(log_path)}") from exc
    finally:
        _stop_worker(worker)
        app.close()
        counter.delete(COUNTER_KEY)
        counter.close()
        log_path.unlink(missing_ok=True)
    note = ""
    if done < count:
        note = f"time limit: {done} of {count} tasks done in {elapsed:.1f} s"
    return Sample({f"celery_{pool}": done / elapsed}, {"tasks_done": done}, note)


def start_deadline(seconds: float) -> float:
    """Return the ``monotonic()`` time ``seconds`` from now, capped by a sample."""
    return monotonic() + min(seconds, SAMPLE_TIMEOUT_S)


def _start_worker(
    broker: Broker,
    queue: str,
    control: str,
    pool: str,
    log_path: Path,
    profile_to: Path | None = None,
) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        BENCH_BROKER_URL=broker.url,
        BENCH_COUNTER_URL=broker.counter_url,
        BENCH_QUEUE=queue,
        BENCH_CONTROL_EXCHANGE=control,
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")])
        ),
    )
    profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    command = [
        sys.executable,
        *profiler,
        "-m",
        "celery",
        "-A",
        "celery_app",
        "worker",
        f"--pool={pool}",
        "--loglevel=WARNING",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        f"--hostname=bench-{uuid.uuid4().hex[:8]}@%h",
        f"--queues={queue}",
    ]
    if pool == "prefork":
        command.append("--concurrency=2")
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command,
            cwd=BENCH_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_count(
    counter: redis.Redis,
    count: int,
    deadline: float,
    worker: subprocess.Popen[bytes],
) -> int:
    """Poll the counter until it reaches ``count`` or ``deadline`` passes.

    Returns:
        The last value read, which is below ``count`` after the deadline.

    Raises:
        RuntimeError: the worker exited.
    """
    from celery_app import COUNTER_KEY

    while True:
        done = int(counter.get(COUNTER_KEY) or 0)
        if done >= count or monotonic() > deadline:
            return done
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}")
        time.sleep(0.005)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Stop the worker with SIGTERM; kill its process group if it lingers."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(20.0)
            return
        except subprocess.TimeoutExpired:
            pass
    # The worker runs in a session of its own, so its group ID is its PID and
    # the group holds only the worker and its pool processes.
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait(5.0)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
