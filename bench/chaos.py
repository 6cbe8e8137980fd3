"""Run the same bounded chaos experiment on redis-streams:// and kombu's redis://.

For each transport in turn the script starts a fresh AOF-backed ``redis-server``
(``appendfsync always``) as the broker and a second, plain ``redis-server`` for
bookkeeping, which is never restarted. It writes a Celery app module to a
temporary directory, starts two ``celery worker --pool=prefork -c 2`` processes
and two producer processes. The producers send tasks with unique ids at a
steady rate. Meanwhile the script SIGKILLs a random worker process group at
random moments and starts a replacement. Now and then it also kills the broker
with SIGKILL and starts it again on the same AOF. When the sending phase ends,
faults stop and the workers run until every sent task has completed and the
broker contains no message of the queue, or until the drain timeout passes.

Every execution of a task increments ``exec:<task id>`` and appends one line to
the ``runs`` list (start time, worker node name, pid, redelivered flag) on the
bookkeeping server, and its first completion time goes to the ``done`` hash.
Producers record a task in the ``sent`` hash only after ``apply_async``
returned. From these the script counts lost tasks (sent, never executed, not
in the broker), duplicates, and which duplicates were in flight at a worker
kill or at a broker restart, and computes send-to-completion latency.

Usage::

    python bench/chaos.py --quick --out bench/results/chaos-quick.json
    python bench/chaos.py --tasks 100000 --rate 100 --out bench/results/chaos-100k.json

The script exits non-zero when a transport lost a task or an experiment could
not run. It runs itself as a producer with the hidden ``_produce`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from kombu_redis_streams.embedded import EmbeddedServer

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
REDIS_SERVER_BINARY = "/usr/bin/redis-server"
SCHEMA_VERSION = 1

STREAMS = "redis-streams"
LISTS = "redis"
TRANSPORTS = (STREAMS, LISTS)

APP_MODULE = "chaos_app"
TASK_NAME = "chaos.work"
QUEUE = "celery"
WORKER_HOST = "chaos"
WORKERS = 2
WORKER_CONCURRENCY = 2
PRODUCERS = 2

#: Broker transport options given to both transports.
VISIBILITY_TIMEOUT_S = 10
UNACKED_RESTORE_INTERVAL_S = 1

#: Seconds a worker may take to log that it is ready.
WORKER_READY_TIMEOUT_S = 60.0
#: Workers in a row that may exit before they are ready before the run stops.
MAX_FAILED_STARTS = 5
#: Seconds a worker may take to exit after SIGTERM (warm shutdown).
WORKER_STOP_TIMEOUT_S = 30.0
#: Seconds a producer may take to exit after the sending phase ended. It is
#: longer than the retry budget, so a send stuck in retries can finish or fail.
PRODUCER_STOP_TIMEOUT_S = 90.0
#: Seconds the restarted broker may take to load its AOF and reply to PING.
BROKER_START_TIMEOUT_S = 60.0
#: Seconds between two checks of the sending and draining phases.
TICK_S = 0.2
#: Seconds between two progress lines on stderr.
PROGRESS_EVERY_S = 10.0
#: Seconds added to each transport's time budget for starting and stopping.
SETUP_BUDGET_S = 150.0

#: kombu's retry policy of every send: about 60 s of retries, then an error.
RETRY_POLICY = {
    "max_retries": 120,
    "interval_start": 0.0,
    "interval_step": 0.25,
    "interval_max": 0.5,
}

APP_SOURCE = textwrap.dedent(
    '''
    """Celery app of bench/chaos.py, written to a temporary directory."""

    import os
    import random
    import time

    import redis
    from celery import Celery
    from celery.signals import worker_ready

    import kombu_redis_streams  # noqa: F401  (registers redis-streams://)

    app = Celery("chaos_app", broker=os.environ["CHAOS_BROKER_URL"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "unacked_restore_interval": UNACKED_RESTORE_INTERVAL_S,
        },
        task_ignore_result=True,
        task_default_queue="QUEUE",
    )
    MAX_SLEEP_S = float(os.environ.get("CHAOS_MAX_SLEEP_MS", "50")) / 1000
    _book = None


    def book():
        """Return this process's client of the bookkeeping server.

        A prefork child must not share its parent's socket, so the client is
        created again when the process id changes.
        """
        global _book
        if _book is None or _book[0] != os.getpid():
            port = int(os.environ["CHAOS_BOOK_PORT"])
            _book = (os.getpid(), redis.Redis(host="127.0.0.1", port=port))
        return _book[1]


    @worker_ready.connect
    def mark_ready(sender, **kwargs):
        """Write ``<node name>.ready`` beside this module, whatever the log level."""
        path = os.path.join(os.path.dirname(__file__), f"{sender.hostname}.ready")
        with open(path, "w") as handle:
            handle.write(f"{time.time():.6f}")


    @app.task(name="TASK_NAME", bind=True)
    def work(self, task_id):
        """Record this execution, sleep a little and record the completion."""
        started = time.time()
        info = self.request.delivery_info or {}
        redelivered = 1 if info.get("redelivered") else 0
        run = f"{task_id} {started:.6f} {self.request.hostname} {os.getpid()} "
        pipe = book().pipeline(transaction=False)
        pipe.incr(f"exec:{task_id}")
        pipe.rpush("runs", run + str(redelivered))
        pipe.execute()
        time.sleep(random.uniform(0, MAX_SLEEP_S))
        pipe = book().pipeline(transaction=False)
        pipe.hsetnx("done", task_id, f"{time.time():.6f}")
        pipe.hincrby("completions", task_id, 1)
        pipe.execute()
    '''
)


def app_source() -> str:
    """Return the app module's source with this script's constants filled in."""
    return (
        APP_SOURCE.replace("VISIBILITY_TIMEOUT_S", str(VISIBILITY_TIMEOUT_S))
        .replace("UNACKED_RESTORE_INTERVAL_S", str(UNACKED_RESTORE_INTERVAL_S))
        .replace('"QUEUE"', repr(QUEUE))
        .replace('"TASK_NAME"', repr(TASK_NAME))
        .lstrip()
    )


def log(message: str) -> None:
    """Print a timestamped progress line on stderr."""
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# -- producer process ---------------------------------------------------------------


def produce(args: argparse.Namespace) -> int:
    """Send ``args.count`` tasks at ``args.rate`` per second, then print a summary.

    Runs in a producer process. A task goes into the ``sent`` hash, with the
    time its send started, only after ``apply_async`` returned. A send that
    kombu retried after a connection error goes into the ``send_retries``
    hash with its number of retries. The loop stops early on SIGTERM or at
    ``args.deadline`` (seconds since the epoch).
    """
    stopping = False

    def on_term(signum: int, frame: types.FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    sys.path.insert(0, args.app_dir)
    import chaos_app

    book = redis.Redis(host="127.0.0.1", port=args.book_port)
    retries = 0

    def on_retry(exc: BaseException, interval: float) -> None:
        # kombu's Connection.ensure calls this before each new attempt.
        nonlocal retries
        retries += 1

    policy = dict(RETRY_POLICY, errback=on_retry)
    interval = 1.0 / args.rate
    next_send = time.monotonic()
    sent = failed = reschedules = 0
    errors: list[str] = []
    for seq in range(args.count):
        if stopping or time.time() >= args.deadline:
            break
        delay = next_send - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            # More than a second behind (a broker restart held a send): start
            # the schedule again from now instead of sending a burst.
            next_send = time.monotonic()
            reschedules += 1
        next_send += interval
        task_id = f"p{args.index}-{seq:07d}"
        started = time.time()
        retries = 0
        try:
            chaos_app.work.apply_async(
                (task_id,), task_id=task_id, retry=True, retry_policy=policy
            )
        except Exception as exc:  # retries are used up: the send failed
            failed += 1
            if len(errors) < 20:
                errors.append(f"{task_id}: {type(exc).__name__}: {exc}")
            continue
        finally:
            if retries:
                book.hset("send_retries", task_id, retries)
        book.hset("sent", task_id, f"{started:.6f}")
        sent += 1
    summary = {
        "index": args.index,
        "sent": sent,
        "failed": failed,
        "reschedules": reschedules,
        "errors": errors,
    }
    print(json.dumps(summary), flush=True)
    chaos_app.app.close()
    return 0


# -- configuration and fault plan ---------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Sizes, rates and fault settings of one run, the same for each transport."""

    mode: str
    tasks: int
    duration_s: float | None
    rate: float
    seed: int
    max_sleep_ms: float
    worker_kills: int | None
    broker_restarts: int | None
    fault_interval_s: tuple[float, float]
    broker_restart_share: float
    drain_timeout_s: float
    inflight_window_s: float
    worker_loglevel: str

    @property
    def expected_send_s(self) -> float:
        """Seconds the sending phase takes at the configured rate."""
        by_count = self.tasks / self.rate
        if self.duration_s is None:
            return by_count
        return min(by_count, self.duration_s)

    @property
    def send_limit_s(self) -> float:
        """Seconds after which the sending phase ends whatever was sent."""
        if self.duration_s is not None:
            return self.duration_s
        return self.expected_send_s * 1.5 + 30.0

    @property
    def transport_budget_s(self) -> float:
        """Upper bound in seconds of one transport's whole experiment."""
        return (
            self.send_limit_s
            + PRODUCER_STOP_TIMEOUT_S
            + self.drain_timeout_s
            + WORKER_STOP_TIMEOUT_S
            + SETUP_BUDGET_S
        )


@dataclass(frozen=True)
class Fault:
    """One planned fault: seconds after the sending phase starts, kind, target."""

    at_s: float
    kind: str  # "worker" or "broker"
    slot: int  # which of the worker slots a worker kill hits


def plan_faults(config: Config) -> list[Fault]:
    """Draw the fault plan from the seeded RNG, the same for every transport.

    With fixed counts (``--worker-kills``, ``--broker-restarts``) the faults are
    shuffled and each falls at a random moment of its own equal share of the
    middle 70 % of the sending phase. Otherwise faults come at intervals drawn
    from ``fault_interval_s`` until the expected end of sending, and each is a
    broker restart with probability ``broker_restart_share``.
    """
    rng = random.Random(config.seed)
    span = config.expected_send_s
    if config.worker_kills is not None or config.broker_restarts is not None:
        kinds = ["worker"] * (config.worker_kills or 0)
        kinds += ["broker"] * (config.broker_restarts or 0)
        rng.shuffle(kinds)
        if not kinds:
            return []
        start, width = 0.15 * span, 0.70 * span / len(kinds)
        return [
            Fault(
                round(start + width * (i + rng.uniform(0.1, 0.9)), 3),
                kind,
                rng.randrange(WORKERS),
            )
            for i, kind in enumerate(kinds)
        ]
    faults: list[Fault] = []
    low, high = config.fault_interval_s
    at = rng.uniform(low, high)
    while at < span - low / 2 and len(faults) < 10_000:
        kind = "broker" if rng.random() < config.broker_restart_share else "worker"
        faults.append(Fault(round(at, 3), kind, rng.randrange(WORKERS)))
        at += rng.uniform(low, high)
    return faults


# -- processes ----------------------------------------------------------------------


@dataclass
class Worker:
    """One ``celery worker`` process group, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    ready_at: float | None = None
    ended_at: float | None = None
    end: str = ""  # "killed", "stopped", "crashed (exit code)"; "" while running

    @property
    def nodename(self) -> str:
        """Celery node name, as tasks see it in ``request.hostname``."""
        return f"{self.name}@{WORKER_HOST}"

    def check_ready(self) -> bool:
        """Return True once the worker wrote its ready file (``worker_ready``)."""
        if self.ready_at is None:
            with contextlib.suppress(OSError, ValueError):
                ready_file = self.log_path.with_name(f"{self.nodename}.ready")
                self.ready_at = float(ready_file.read_text())
        return self.ready_at is not None

    def kill(self) -> None:
        """Send SIGKILL to the whole process group: main process and pool."""
        kill_group(self.process)
        self.ended_at = self.ended_at or time.time()
        self.end = self.end or "killed"


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``process`` and reap its leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def stop_group(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """Send SIGTERM and wait; SIGKILL the group if it is still running after."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return None
    # Pool children that outlived their parent still share its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return code


# -- one transport's experiment -----------------------------------------------------


@dataclass
class Events:
    """Faults as they happened, in seconds since the epoch."""

    worker_kills: list[dict[str, Any]] = field(default_factory=list)
    worker_crashes: list[dict[str, Any]] = field(default_factory=list)
    broker_restarts: list[dict[str, Any]] = field(default_factory=list)


class Experiment:
    """Start the servers and processes of one transport, inject faults, count."""

    def __init__(
        self, transport: str, config: Config, work_dir: Path, code_dir: Path
    ) -> None:
        self.transport = transport
        self.config = config
        self.work_dir = work_dir
        self.code_dir = code_dir
        self.broker: EmbeddedServer | None = None
        self.bookkeeper: EmbeddedServer | None = None
        self.book: redis.Redis | None = None
        self.workers: list[Worker] = []
        self.slots: list[Worker] = []
        self.producers: list[subprocess.Popen[bytes]] = []
        self.events = Events()
        self.worker_serial = 0
        self.failed_starts = 0

    # -- setup

    @property
    def broker_url(self) -> str:
        """Broker URL of the transport under test."""
        assert self.broker is not None
        if self.transport == STREAMS:
            return self.broker.url
        return self.broker.redis_url

    def env(self) -> dict[str, str]:
        """Return the environment of the worker and producer processes."""
        assert self.bookkeeper is not None
        python_path = [
            str(self.work_dir),
            str(self.code_dir),
            os.environ.get("PYTHONPATH", ""),
        ]
        return dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(p for p in python_path if p),
            CHAOS_BROKER_URL=self.broker_url,
            CHAOS_BOOK_PORT=str(self.bookkeeper.port),
            CHAOS_MAX_SLEEP_MS=str(self.config.max_sleep_ms),
        )

    def start_servers(self) -> None:
        """Start the AOF-backed broker and the plain bookkeeping server."""
        self.broker = EmbeddedServer(REDIS_SERVER_BINARY, appendonly=True)
        self.broker.start()
        self.bookkeeper = EmbeddedServer(REDIS_SERVER_BINARY)
        self.bookkeeper.start()
        self.book = redis.Redis(host="127.0.0.1", port=self.bookkeeper.port)
        (self.work_dir / f"{APP_MODULE}.py").write_text(app_source())

    def start_worker(self) -> Worker:
        """Start one ``celery worker`` in a process group of its own."""
        self.worker_serial += 1
        name = f"w{self.worker_serial}"
        log_path = self.work_dir / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    APP_MODULE,
                    "worker",
                    "--pool=prefork",
                    "-c",
                    str(WORKER_CONCURRENCY),
                    "-n",
                    f"{name}@{WORKER_HOST}",
                    f"--loglevel={self.config.worker_loglevel}",
                    "--without-mingle",
                    "--without-gossip",
                ],
                cwd=self.work_dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(name, process, log_path, time.time())
        self.workers.append(worker)
        return worker

    def wait_ready(self, workers: Sequence[Worker]) -> None:
        """Wait until every worker in ``workers`` is ready.

        Raises:
            RuntimeError: a worker exited or was not ready in time.
        """
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for worker in workers:
                if worker.process.poll() is not None:
                    raise RuntimeError(
                        f"worker {worker.name} exited at start; see {worker.log_path}"
                    )
            if all(worker.check_ready() for worker in workers):
                return
            time.sleep(TICK_S)
        raise RuntimeError(f"workers not ready in {WORKER_READY_TIMEOUT_S} s")

    def start_producers(self, send_started: float) -> None:
        """Start the producer processes, each with its share of tasks and rate."""
        config = self.config
        counts = [config.tasks // PRODUCERS] * PRODUCERS
        counts[0] += config.tasks - sum(counts)
        deadline = send_started + config.send_limit_s
        for index, count in enumerate(counts):
            log_path = self.work_dir / f"producer{index}.log"
            out_path = self.work_dir / f"producer{index}.json"
            with log_path.open("wb") as log_file, out_path.open("wb") as out_file:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "_produce",
                        "--app-dir",
                        str(self.work_dir),
                        "--book-port",
                        str(self.env()["CHAOS_BOOK_PORT"]),
                        "--index",
                        str(index),
                        "--count",
                        str(count),
                        "--rate",
                        str(config.rate / PRODUCERS),
                        "--deadline",
                        f"{deadline:.3f}",
                    ],
                    cwd=self.work_dir,
                    env=self.env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out_file,
                    stderr=log_file,
                    start_new_session=True,
                )
            self.producers.append(process)

    # -- faults

    def kill_worker(self, slot: int) -> None:
        """SIGKILL the worker in ``slot`` with its pool and start a replacement."""
        victim = self.slots[slot]
        pid = victim.process.pid
        killed_at = time.time()
        victim.kill()
        replacement = self.start_worker()
        self.slots[slot] = replacement
        self.events.worker_kills.append(
            {
                "at": killed_at,
                "node": victim.nodename,
                "pid": pid,
                "was_ready": victim.ready_at is not None,
                "replacement": replacement.nodename,
            }
        )
        log(f"{self.transport}: killed {victim.nodename}, started {replacement.name}")

    def watch_workers(self) -> None:
        """Note which workers became ready and replace any that exited.

        A worker that exits without being killed by this script has crashed:
        the crash is recorded and a replacement keeps the worker count.
        """
        for slot, worker in enumerate(self.slots):
            worker.check_ready()
            code = worker.process.poll()
            if code is None:
                continue
            worker.kill()  # reap pool processes that outlived the main process
            worker.end = f"crashed ({code})"
            self.failed_starts = 0 if worker.ready_at else self.failed_starts + 1
            if self.failed_starts >= MAX_FAILED_STARTS:
                raise RuntimeError(
                    f"{MAX_FAILED_STARTS} workers in a row exited before they were "
                    f"ready; see {worker.log_path}"
                )
            replacement = self.start_worker()
            self.slots[slot] = replacement
            self.events.worker_crashes.append(
                {
                    "at": time.time(),
                    "node": worker.nodename,
                    "pid": worker.process.pid,
                    "exit_code": code,
                    "replacement": replacement.nodename,
                }
            )
            log(
                f"{self.transport}: {worker.nodename} exited by itself with code "
                f"{code}, started {replacement.name}"
            )

    def restart_broker(self) -> None:
        """Kill the broker with SIGKILL and start it again on the same AOF."""
        assert self.broker is not None
        killed_at = time.time()
        self.broker.kill()
        self.broker.start(timeout_s=BROKER_START_TIMEOUT_S)
        up_at = time.time()
        self.events.broker_restarts.append(
            {"at": killed_at, "up_at": up_at, "downtime_s": round(up_at - killed_at, 3)}
        )
        log(f"{self.transport}: broker restarted in {up_at - killed_at:.2f} s")

    # -- phases

    def progress(self, phase: str, started: float) -> None:
        """Log how many tasks were sent and completed so far."""
        assert self.book is not None
        sent, done = self.book.hlen("sent"), self.book.hlen("done")
        alive = sum(worker.process.poll() is None for worker in self.slots)
        log(
            f"{self.transport} {phase} {time.time() - started:6.0f} s: sent {sent}, "
            f"completed {done}, workers alive {alive}"
        )

    def send_phase(self, faults: list[Fault]) -> tuple[float, float]:
        """Run producers and faults until sending ends; return start and end."""
        started = time.time()
        self.start_producers(started)
        pending = list(faults)
        hard_end = started + self.config.send_limit_s
        next_progress = started + PROGRESS_EVERY_S
        while any(p.poll() is None for p in self.producers):
            now = time.time()
            if now >= hard_end:
                for process in self.producers:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGTERM)
                break
            if pending and now - started >= pending[0].at_s:
                fault = pending.pop(0)
                if fault.kind == "worker":
                    self.kill_worker(fault.slot)
                else:
                    self.restart_broker()
            self.watch_workers()
            if now >= next_progress:
                self.progress("sending", started)
                next_progress += PROGRESS_EVERY_S
            time.sleep(TICK_S)
        for process in self.producers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=PRODUCER_STOP_TIMEOUT_S)
            if process.poll() is None:
                log(f"{self.transport}: producer {process.pid} stuck, killing it")
                kill_group(process)
        if pending:
            log(f"{self.transport}: sending ended before {len(pending)} faults")
        return started, time.time()

    def unfinished(self) -> int:
        """Return how many sent tasks have no completion yet."""
        assert self.book is not None
        sent = set(self.book.hkeys("sent"))
        return len(sent.difference(self.book.hkeys("done")))

    def drain_phase(self) -> tuple[float, bool]:
        """Wait until all sent tasks completed and the broker is idle.

        Returns:
            The time the drain ended and whether it ended before the timeout.
        """
        started = time.time()
        deadline = started + self.config.drain_timeout_s
        next_progress = started + PROGRESS_EVERY_S
        while time.time() < deadline:
            self.watch_workers()
            with contextlib.suppress(redis.RedisError):
                if self.unfinished() == 0 and self.broker_backlog() == 0:
                    return time.time(), True
            if time.time() >= next_progress:
                self.progress("draining", started)
                next_progress += PROGRESS_EVERY_S
            time.sleep(1.0)
        return time.time(), False

    def broker_client(self) -> redis.Redis:
        """Open a plain client of the broker's database 0."""
        assert self.broker is not None
        return redis.Redis(host="127.0.0.1", port=self.broker.port, socket_timeout=10)

    def queue_keys(self, client: redis.Redis) -> list[tuple[str, str]]:
        """Return (key, type) of every broker key that contains task messages."""
        found = []
        for raw in client.scan_iter(count=1000):
            key = raw.decode(errors="replace")
            kind = as_text(client.type(raw))
            if "pidbox" in key or key.endswith(":dead"):
                continue
            if self.transport == STREAMS and kind == "stream" and QUEUE in key:
                found.append((key, kind))
            elif self.transport == LISTS and (
                (kind == "list" and key.startswith(QUEUE)) or key == "unacked"
            ):
                found.append((key, kind))
        return found

    def broker_backlog(self) -> int:
        """Return how many task messages the broker holds, ready or unacked.

        For redis-streams:// this is the length of the queue's streams, since
        acked entries are deleted. For redis:// it is the length of the queue
        lists plus the entries of kombu's ``unacked`` hash.
        """
        with self.broker_client() as client:
            total = 0
            for key, kind in self.queue_keys(client):
                if kind == "stream":
                    total += client.xlen(key)
                elif kind == "list":
                    total += client.llen(key)
                else:
                    total += client.hlen(key)
            return total

    def broker_summary(self) -> dict[str, Any]:
        """Describe the broker's keys at the end: type, length, pending entries."""
        summary: dict[str, Any] = {}
        with self.broker_client() as client:
            for raw in sorted(client.scan_iter(count=1000))[:50]:
                key = raw.decode(errors="replace")
                kind = as_text(client.type(raw))
                item: dict[str, Any] = {"type": kind}
                if kind == "stream":
                    item["length"] = client.xlen(raw)
                    groups = client.xinfo_groups(raw)
                    item["pending"] = sum(int(g["pending"]) for g in groups)
                elif kind == "list":
                    item["length"] = client.llen(raw)
                elif kind == "hash":
                    item["length"] = client.hlen(raw)
                summary[key] = item
        return summary

    def find_in_broker(self, task_ids: Iterable[str]) -> dict[str, str]:
        """Return, for each task id still stored in the broker, the key holding it."""
        wanted = {f'"{task_id}"'.encode(): task_id for task_id in task_ids}
        if not wanted:
            return {}
        found: dict[str, str] = {}
        with self.broker_client() as client:
            for raw in client.scan_iter(count=1000):
                kind = as_text(client.type(raw))
                if kind == "stream":
                    values = [
                        b"".join(fields.values())
                        for _, fields in client.xrange(raw, count=None)
                    ]
                elif kind == "list":
                    values = client.lrange(raw, 0, -1)
                elif kind == "hash":
                    values = client.hvals(raw)
                else:
                    continue
                for value in values:
                    for needle, task_id in wanted.items():
                        if needle in value:
                            found.setdefault(task_id, raw.decode(errors="replace"))
        return found

    def stop_workers(self) -> None:
        """Stop the live workers with a warm shutdown, or kill them."""
        for worker in self.slots:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        for worker in self.slots:
            code = stop_group(worker.process, WORKER_STOP_TIMEOUT_S)
            worker.ended_at = worker.ended_at or time.time()
            worker.end = worker.end or ("stopped" if code is not None else "killed")

    def remove_dump_files(self) -> int:
        """Delete the emergency dump files that this run's workers wrote.

        At a connection loss, kombu pickles the messages it could not give back
        into a temporary file and logs "EMERGENCY DUMP STATE TO FILE" with its
        path. The result keeps their count, and the files are removed.

        Returns:
            The number of dump files named in the worker logs.
        """
        named = 0
        for worker in self.workers:
            with contextlib.suppress(OSError):
                for match in DUMP_FILE.finditer(worker.log_path.read_bytes()):
                    named += 1
                    Path(match.group(1).decode()).unlink(missing_ok=True)
        return named

    def cleanup(self) -> None:
        """Kill every process and stop every server this experiment started."""
        for process in self.producers:
            kill_group(process)
        for worker in self.workers:
            kill_group(worker.process)
        self.remove_dump_files()
        if self.book is not None:
            self.book.close()
        for server in (self.broker, self.bookkeeper):
            if server is not None:
                server.stop()

    def run(self, faults: list[Fault]) -> dict[str, Any]:
        """Run the whole experiment and return its counts; always clean up."""
        try:
            self.start_servers()
            self.slots = [self.start_worker() for _ in range(WORKERS)]
            self.wait_ready(self.slots)
            log(f"{self.transport}: {WORKERS} workers ready, sending")
            send_started, send_ended = self.send_phase(faults)
            log(f"{self.transport}: sending ended, draining")
            drain_ended, drained = self.drain_phase()
            if not drained:
                log(f"{self.transport}: drain timeout passed")
            backlog = self.broker_backlog()
            self.stop_workers()
            result = self.analyse()
            result["emergency_dump_files"] = self.remove_dump_files()
            result["broker"] = self.broker_summary()
            result["broker_backlog_at_end"] = backlog
            unexecuted = result.pop("_unexecuted")
            in_broker = self.find_in_broker(unexecuted)
            result["lost"] = len(unexecuted) - len(in_broker)
            lost_ids = sorted(set(unexecuted) - set(in_broker))
            result["lost_ids"] = lost_ids[:1000]
            result["lost_details"] = self.describe_lost(lost_ids, send_started)
            result["unexecuted_in_broker"] = len(in_broker)
            result["unexecuted_in_broker_sample"] = dict(sorted(in_broker.items())[:20])
            result.update(self.timing(send_started, send_ended, drain_ended, drained))
            self.dump_bookkeeping(send_started)
            return result
        finally:
            self.cleanup()

    # -- analysis

    def timing(
        self, send_started: float, send_ended: float, drain_ended: float, drained: bool
    ) -> dict[str, Any]:
        """Return the phase durations and throughput figures."""
        assert self.book is not None
        sent = {as_text(k): float(v) for k, v in self.book.hgetall("sent").items()}
        done = {as_text(k): float(v) for k, v in self.book.hgetall("done").items()}
        latencies = sorted(done[t] - sent[t] for t in sent if t in done)
        last_done = max(done.values(), default=send_started)
        run_s = max(last_done - send_started, 1e-9)
        return {
            "send_phase_s": round(send_ended - send_started, 3),
            "drain_s": round(drain_ended - send_ended, 3),
            "drained": drained,
            "send_rate_per_s": round(
                len(sent) / max(send_ended - send_started, 1e-9), 2
            ),
            "completed_per_s": round(len(done) / run_s, 2),
            "latency_s": {
                "p50": percentile(latencies, 50),
                "p95": percentile(latencies, 95),
                "p99": percentile(latencies, 99),
                "max": round(latencies[-1], 4) if latencies else None,
            },
            "events": self.relative_events(send_started),
            "workers": [
                {
                    "node": worker.nodename,
                    "pid": worker.process.pid,
                    "started_s": round(worker.started_at - send_started, 3),
                    "ready_after_s": round(worker.ready_at - worker.started_at, 3)
                    if worker.ready_at
                    else None,
                    "end": worker.end,
                    **log_counts(worker.log_path),
                }
                for worker in self.workers
            ],
        }

    def relative_events(self, origin: float) -> dict[str, Any]:
        """Return the fault events with times in seconds since ``origin``."""
        events: dict[str, Any] = json.loads(json.dumps(asdict(self.events)))
        for group in events.values():
            for event in group:
                for key in ("at", "up_at"):
                    if key in event:
                        event[key] = round(event[key] - origin, 3)
        return events

    def analyse(self) -> dict[str, Any]:
        """Count sent, executed, lost and duplicated tasks from the bookkeeping."""
        assert self.book is not None
        sent = {as_text(k) for k in self.book.hkeys("sent")}
        runs: dict[str, list[Run]] = {}
        for line in self.book.lrange("runs", 0, -1):
            run = Run.parse(as_text(line))
            runs.setdefault(run.task_id, []).append(run)

        executed_ids = sorted(sent | set(runs))
        exec_counts: dict[str, int] = {}
        for chunk in chunks(executed_ids, 1000):
            values = self.book.mget([f"exec:{task_id}" for task_id in chunk])
            for task_id, value in zip(chunk, values):
                exec_counts[task_id] = int(value) if value is not None else 0
        completions = {
            as_text(k): int(v) for k, v in self.book.hgetall("completions").items()
        }

        executed = {t for t in sent if exec_counts.get(t, 0) >= 1}
        duplicated = sorted(t for t, n in exec_counts.items() if n >= 2)
        mismatched = sorted(
            t for t, n in exec_counts.items() if n != len(runs.get(t, []))
        )
        send_retries = {
            as_text(k): int(v) for k, v in self.book.hgetall("send_retries").items()
        }
        classes = self.classify(duplicated, runs, send_retries)
        producers = read_producer_summaries(self.work_dir)

        return {
            "transport": self.transport,
            "broker_url": self.broker_url,
            "sent": len(sent),
            "send_failures": sum(p.get("failed", 0) for p in producers),
            "sends_retried": len(send_retries),
            "producers": producers,
            "executed": len(executed),
            "executions": sum(exec_counts.values()),
            "completed": self.book.hlen("done"),
            "_unexecuted": sorted(sent - executed),
            "executed_not_recorded_as_sent": len(
                [t for t, n in exec_counts.items() if n >= 1 and t not in sent]
            ),
            "duplicated": len(duplicated),
            "duplicated_twice": sum(exec_counts[t] == 2 for t in duplicated),
            "duplicated_3_or_more": sum(exec_counts[t] >= 3 for t in duplicated),
            "runs_interrupted": sum(
                max(exec_counts.get(t, 0) - completions.get(t, 0), 0)
                for t in exec_counts
            ),
            "bookkeeping_mismatches": len(mismatched),
            "worker_kills": len(self.events.worker_kills),
            "worker_crashes": len(self.events.worker_crashes),
            "broker_restarts": len(self.events.broker_restarts),
            **classes,
        }

    def classify(
        self,
        duplicated: list[str],
        runs: dict[str, list[Run]],
        send_retries: dict[str, int],
    ) -> dict[str, Any]:
        """Explain each duplicate by a fault or by a send that was retried.

        A run flagged ``redelivered`` needs an earlier run that a fault cut
        short. An earlier run is in flight at a worker kill when the killed
        worker ran it and it started at most ``inflight_window_s`` before the
        kill. It is in flight at a broker restart when it started within that
        window before the broker was killed, or while the broker was down. It
        is in flight at a worker crash when the worker that ran it exited by
        itself within that window, plus one second because a crash is noticed
        up to a second late. Two or more runs without the flag mean the
        message was published twice, because the producer retried a send whose
        first attempt reached the broker. Such a duplicate counts as explained
        only when the producer recorded a retry of that task's send, and so
        does a redelivered run with no fault before it. Every other duplicate
        is listed as unexplained.
        """
        window = self.config.inflight_window_s
        kills = self.events.worker_kills
        crashes = self.events.worker_crashes
        restarts = self.events.broker_restarts

        def fault_cause(run: Run) -> str | None:
            gap = gap_to_end(run, kills)
            if gap is not None and gap <= window:
                return "worker_kill"
            if any(
                r["at"] - window <= run.started <= r["up_at"] + window for r in restarts
            ):
                return "broker_restart"
            crash_gap = gap_to_end(run, crashes)
            if crash_gap is not None and crash_gap <= window + 1.0:
                return "worker_crash"
            return None

        order = (
            "unexplained",
            "worker_kill",
            "broker_restart",
            "worker_crash",
            "send_retry",
        )
        counts = dict.fromkeys(order, 0)
        gap_buckets = dict.fromkeys(("<=1s", "1-3s", "3-10s", ">10s", "no_kill"), 0)
        details: list[dict[str, Any]] = []
        for task_id in duplicated:
            ordered = sorted(runs.get(task_id, []), key=lambda r: r.started)
            retried = task_id in send_retries
            causes = set()
            for run in ordered[:-1]:
                gap_buckets[bucket(gap_to_end(run, kills))] += 1
            for index, run in enumerate(ordered):
                if not run.redelivered:
                    continue
                earlier = [fault_cause(r) for r in ordered[:index]]
                found = [cause for cause in earlier if cause is not None]
                if found:
                    causes.add(found[0])
                else:
                    causes.add("send_retry" if retried else "unexplained")
            if sum(not run.redelivered for run in ordered) >= 2 or len(ordered) < 2:
                causes.add("send_retry" if retried else "unexplained")
            cause = next(c for c in order if c in causes)
            counts[cause] += 1
            if cause == "unexplained" or len(details) < 50:
                details.append(
                    {
                        "task_id": task_id,
                        "cause": cause,
                        "send_retries": send_retries.get(task_id, 0),
                        "runs": [asdict(run) for run in ordered],
                    }
                )
        return {
            "duplicates_in_flight_at_worker_kill": counts["worker_kill"],
            "duplicates_in_flight_at_broker_restart": counts["broker_restart"],
            "duplicates_in_flight_at_worker_crash": counts["worker_crash"],
            "duplicates_published_twice_by_send_retry": counts["send_retry"],
            "duplicates_unexplained": counts["unexplained"],
            "duplicate_run_gap_to_kill_of_its_worker": gap_buckets,
            "duplicate_details": details[:300],
        }

    def dump_bookkeeping(self, origin: float) -> None:
        """Write the bookkeeping server's data beside the logs, for investigation.

        ``bookkeeping.json.gz`` contains the send time of every task, its first
        completion, every recorded run and the retried sends. ``origin`` is the
        start of the sending phase, in seconds since the epoch.
        """
        book = self.book
        assert book is not None

        def text_hash(name: str) -> dict[str, str]:
            return {as_text(k): as_text(v) for k, v in book.hgetall(name).items()}

        data = {
            "origin": origin,
            "sent": text_hash("sent"),
            "done": text_hash("done"),
            "send_retries": text_hash("send_retries"),
            "runs": [as_text(line) for line in book.lrange("runs", 0, -1)],
        }
        with gzip.open(self.work_dir / "bookkeeping.json.gz", "wt") as handle:
            json.dump(data, handle)

    def describe_lost(self, lost_ids: Sequence[str], origin: float) -> list[Any]:
        """Place each lost task in time: its send, and the nearest faults."""
        assert self.book is not None
        details = []
        for task_id in list(lost_ids)[:200]:
            raw = self.book.hget("sent", task_id)
            sent_at = float(raw) if raw is not None else None
            item: dict[str, Any] = {"task_id": task_id}
            if sent_at is not None:
                item["sent_s"] = round(sent_at - origin, 3)
                for name, events in (
                    ("worker_kill", self.events.worker_kills),
                    ("worker_crash", self.events.worker_crashes),
                    ("broker_restart", self.events.broker_restarts),
                ):
                    after = [e for e in events if e["at"] >= sent_at]
                    if after:
                        first = min(after, key=lambda e: e["at"])
                        item[f"next_{name}_after_s"] = round(first["at"] - sent_at, 3)
                        if "node" in first:
                            item[f"next_{name}_node"] = first["node"]
            item["send_retries"] = int(self.book.hget("send_retries", task_id) or 0)
            details.append(item)
        return details


def gap_to_end(run: Run, ends: list[dict[str, Any]]) -> float | None:
    """Return seconds from a run's start to the next kill or crash of its worker."""
    gaps = [
        end["at"] - run.started
        for end in ends
        if end["node"] == run.node and end["at"] >= run.started
    ]
    return min(gaps) if gaps else None


@dataclass
class Run:
    """One execution of a task as the task recorded it."""

    task_id: str
    started: float
    node: str
    pid: int
    redelivered: bool

    @classmethod
    def parse(cls, line: str) -> Run:
        """Parse a line of the ``runs`` list written by the task."""
        task_id, started, node, pid, redelivered = line.split()
        return cls(task_id, float(started), node, int(pid), redelivered == "1")


def as_text(value: Any) -> str:
    """Decode a reply of redis-py, which returns bytes, to text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def bucket(gap: float | None) -> str:
    """Name the bucket of a run's distance in seconds to the kill of its worker."""
    if gap is None:
        return "no_kill"
    if gap <= 1:
        return "<=1s"
    if gap <= 3:
        return "1-3s"
    if gap <= 10:
        return "3-10s"
    return ">10s"


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """Yield consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Return the nearest-rank percentile of already sorted values, in seconds."""
    if not sorted_values:
        return None
    rank = max(int(round(pct / 100 * len(sorted_values) + 0.5)) - 1, 0)
    return round(sorted_values[min(rank, len(sorted_values) - 1)], 4)


DUMP_FILE = re.compile(rb"EMERGENCY DUMP STATE TO FILE -> (/\S+) <-")
LOG_PATTERNS = {
    "errors": re.compile(rb": (?:ERROR|CRITICAL)/"),
    "warnings": re.compile(rb": WARNING/"),
    "connection_lost": re.compile(rb"[Cc]onnection to broker lost"),
    "entries_taken_over": re.compile(rb"taken over and delivered again"),
    "emergency_dumps": re.compile(rb"EMERGENCY DUMP STATE"),
}


def log_counts(path: Path) -> dict[str, int]:
    """Count error, warning and recovery lines in a worker log."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    return {name: len(pattern.findall(data)) for name, pattern in LOG_PATTERNS.items()}


def read_producer_summaries(work_dir: Path) -> list[dict[str, Any]]:
    """Read the summary line each producer printed, or note that it printed none."""
    summaries = []
    for index in range(PRODUCERS):
        path = work_dir / f"producer{index}.json"
        try:
            summaries.append(json.loads(path.read_text().strip().splitlines()[-1]))
        except (OSError, ValueError, IndexError):
            summaries.append({"index": index, "summary": "none (killed or crashed)"})
    return summaries


# -- code under test ----------------------------------------------------------------


def snapshot_package(source: str, code_dir: Path) -> dict[str, Any]:
    """Copy the package under test into ``code_dir`` and describe the copy.

    Workers and producers import the copy, which ``Experiment.env`` puts
    ahead of the editable install on ``PYTHONPATH``. A change to ``src/``
    while the run goes on then reaches no process, so all workers of a run
    use one version of the code. ``source`` is ``worktree`` (the files as
    they are now) or ``head`` (the last commit).

    Raises:
        RuntimeError: the copy could not be made or does not import.
    """
    package = "src/kombu_redis_streams"
    code_dir.mkdir(parents=True)
    if source == "head":
        archive = subprocess.run(
            ["git", "-C", str(REPO_DIR), "archive", "HEAD", package],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(
            ["tar", "-x", "-C", str(code_dir), "--strip-components=1"],
            input=archive,
            check=True,
            timeout=60,
        )
    else:
        shutil.copytree(
            REPO_DIR / package,
            code_dir / "kombu_redis_streams",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    digest = hashlib.sha256()
    for path in sorted((code_dir / "kombu_redis_streams").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(code_dir)).encode())
            digest.update(path.read_bytes())
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import kombu_redis_streams; print(kombu_redis_streams.__file__)",
        ],
        env=dict(os.environ, PYTHONPATH=str(code_dir)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0 or not check.stdout.startswith(str(code_dir)):
        raise RuntimeError(
            f"the {source} copy of kombu_redis_streams does not import from "
            f"{code_dir}: {check.stderr.strip()[-500:]}"
        )
    status = subprocess.run(
        ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", package],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {
        "source": source,
        "sha256": digest.hexdigest(),
        "worktree_differs_from_head": bool(status.strip()),
    }


# -- machine facts and output -------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """Collect the hardware, OS and software versions behind the numbers."""
    import billiard
    import celery
    import kombu

    import kombu_redis_streams

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    server = subprocess.run(
        [REDIS_SERVER_BINARY, "--version"], capture_output=True, text=True, timeout=10
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "billiard": billiard.__version__,
        "redis_py": redis.__version__,
        "kombu_redis_streams": getattr(kombu_redis_streams, "__version__", "?"),
        "redis_server": server,
        "git_commit": commit,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


TABLE_ROWS = (
    ("sent", "sent"),
    ("send_failures", "send failures (retries used up)"),
    ("sends_retried", "sends retried after an error"),
    ("executed", "executed (distinct ids)"),
    ("lost", "lost (sent, never executed)"),
    ("unexecuted_in_broker", "not executed, still in broker"),
    ("executed_not_recorded_as_sent", "executed, not recorded as sent"),
    ("duplicated", "executed 2+ times"),
    ("duplicates_in_flight_at_worker_kill", "  in flight at a worker kill"),
    ("duplicates_in_flight_at_broker_restart", "  in flight at a broker restart"),
    ("duplicates_in_flight_at_worker_crash", "  in flight at a worker crash"),
    ("duplicates_published_twice_by_send_retry", "  published twice (send retry)"),
    ("duplicates_unexplained", "  unexplained"),
    ("duplicated_3_or_more", "executed 3+ times"),
    ("runs_interrupted", "runs cut short by a kill"),
    ("worker_kills", "worker kills"),
    ("worker_crashes", "workers that exited by themselves"),
    ("broker_restarts", "broker restarts"),
    ("latency_p50", "latency p50 (s)"),
    ("latency_p95", "latency p95 (s)"),
    ("latency_p99", "latency p99 (s)"),
    ("latency_max", "latency max (s)"),
    ("send_rate_per_s", "send rate (tasks/s)"),
    ("completed_per_s", "completed (tasks/s over run)"),
    ("send_phase_s", "sending phase (s)"),
    ("drain_s", "drain after sending (s)"),
    ("drained", "drained before timeout"),
    ("emergency_dump_files", "kombu emergency dump files"),
)


def table(results: dict[str, dict[str, Any]]) -> str:
    """Format the results of every transport side by side."""
    names = list(results)
    rows = [["metric", *names]]
    for key, title in TABLE_ROWS:
        row = [title]
        for name in names:
            result = results[name]
            if "error" in result:
                row.append("error")
                continue
            if key.startswith("latency_"):
                value = result.get("latency_s", {}).get(key.split("_", 1)[1])
            else:
                value = result.get(key)
            row.append("-" if value is None else str(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append(" | ".join(cells))
        if index == 0:
            lines.append("-+-".join("-" * width for width in widths))
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line of the experiment or of a producer process."""
    if argv[:1] == ["_produce"]:
        parser = argparse.ArgumentParser(prog="chaos.py _produce")
        parser.add_argument("command")
        parser.add_argument("--app-dir", required=True)
        parser.add_argument("--book-port", type=int, required=True)
        parser.add_argument("--index", type=int, required=True)
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--rate", type=float, required=True)
        parser.add_argument("--deadline", type=float, required=True)
        return parser.parse_args(argv)

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )

    parser.add_argument("--quick", action="store_true", help="2,000 tasks, ~45 s")
    parser.add_argument("--tasks", type=int, help="tasks to send (100000)")
    parser.add_argument("--duration", type=float, help="max seconds of sending")
    parser.add_argument(
        "--rate",
        type=float,
        help="tasks per second (100; keep it below what the workers complete)",
    )
    parser.add_argument("--seed", type=int, default=1, help="fault RNG seed (1)")
    parser.add_argument(
        "--max-sleep-ms", type=float, default=50.0, help="task sleep 0..N ms (50)"
    )

    parser.add_argument("--worker-kills", type=int, help="exact worker kill count")
    parser.add_argument("--broker-restarts", type=int, help="exact restart count")
    parser.add_argument(
        "--fault-interval",
        type=float,
        nargs=2,
        default=(15.0, 45.0),
        metavar=("MIN", "MAX"),
        help="seconds between faults without exact counts (15 45)",
    )
    parser.add_argument(
        "--broker-restart-share",
        type=float,
        default=0.25,
        help="share of faults that restart the broker (0.25)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=VISIBILITY_TIMEOUT_S + 60.0,
        help="seconds to wait after sending (visibility_timeout + 60)",
    )
    parser.add_argument(
        "--inflight-window",
        type=float,
        default=1.0,
        help="seconds before a kill in which a run counts as in flight (1)",
    )

    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help=f"comma-separated, in order ({','.join(TRANSPORTS)})",
    )
    parser.add_argument(
        "--worker-loglevel",
        default="WARNING",
        help="celery worker --loglevel; INFO logs every task (WARNING)",
    )
    parser.add_argument(
        "--code",
        choices=("worktree", "head"),
        default="worktree",
        help="test a copy of src/ as it is now, or as in the last commit (worktree)",
    )
    parser.add_argument("--out", type=Path, help="JSON result file")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the worker logs even when nothing went wrong",
    )
    parser.add_argument(
        "--hard-timeout", type=float, help="seconds before the whole run is aborted"
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    """Turn the command line into a :class:`Config`, filling the mode defaults."""
    if args.quick:
        tasks = args.tasks or 2_000
        rate = args.rate or 45.0
        kills = 2 if args.worker_kills is None else args.worker_kills
        restarts = 1 if args.broker_restarts is None else args.broker_restarts
    else:
        tasks = args.tasks or 100_000
        rate = args.rate or 100.0
        kills, restarts = args.worker_kills, args.broker_restarts
    if args.duration is None and tasks <= 0:
        raise SystemExit("--tasks must be positive")
    if rate <= 0:
        raise SystemExit("--rate must be positive")
    return Config(
        mode="quick" if args.quick else "default",
        tasks=tasks,
        duration_s=args.duration,
        rate=rate,
        seed=args.seed,
        max_sleep_ms=args.max_sleep_ms,
        worker_kills=kills,
        broker_restarts=restarts,
        fault_interval_s=(args.fault_interval[0], args.fault_interval[1]),
        broker_restart_share=args.broker_restart_share,
        drain_timeout_s=args.drain_timeout,
        inflight_window_s=args.inflight_window,
        worker_loglevel=args.worker_loglevel,
    )


class HardTimeout(Exception):
    """The whole run took longer than its hard timeout."""


def on_alarm(signum: int, frame: types.FrameType | None) -> None:
    """Abort the run: the handler of SIGALRM set by the hard timeout."""
    raise HardTimeout("hard timeout passed")


def on_terminate(signum: int, frame: types.FrameType | None) -> None:
    """Turn SIGTERM and SIGHUP into an exit that runs every ``finally`` block."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    """Run the experiment on each transport and print and save the results."""
    args = parse_args(argv)
    if args.__dict__.get("command") == "_produce":
        return produce(args)
    config = build_config(args)
    transports = [name.strip() for name in args.transports.split(",") if name.strip()]
    unknown = set(transports) - set(TRANSPORTS)
    if unknown:
        raise SystemExit(f"unknown transports: {', '.join(sorted(unknown))}")

    faults = plan_faults(config)
    hard_timeout = args.hard_timeout or config.transport_budget_s * len(transports)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_terminate)
    signal.signal(signal.SIGHUP, on_terminate)
    signal.alarm(int(hard_timeout))
    log(
        f"{config.tasks} tasks at {config.rate}/s per transport, "
        f"{len(faults)} faults planned, hard timeout {hard_timeout:.0f} s"
    )

    document: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": " ".join([Path(sys.argv[0]).name, *argv]),
        "machine": machine_facts(),
        "config": {
            **asdict(config),
            "workers": WORKERS,
            "worker_concurrency": WORKER_CONCURRENCY,
            "producers": PRODUCERS,
            "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
            "unacked_restore_interval_s": UNACKED_RESTORE_INTERVAL_S,
            "retry_policy": RETRY_POLICY,
        },
        "fault_plan": [asdict(fault) for fault in faults],
        "results": {},
    }
    root = Path(tempfile.mkdtemp(prefix="kombu-chaos-"))
    keep = args.keep_logs
    try:
        code_dir = root / "code"
        document["code"] = snapshot_package(args.code, code_dir)
        log(f"testing {document['code']['source']} snapshot {code_dir}")
        for transport in transports:
            work_dir = root / transport
            work_dir.mkdir()
            log(f"{transport}: starting in {work_dir}")
            try:
                experiment = Experiment(transport, config, work_dir, code_dir)
                result = experiment.run(faults)
            except HardTimeout:
                document["results"][transport] = {"error": "hard timeout passed"}
                keep = True
                break
            except Exception as exc:
                log(f"{transport}: experiment failed: {exc!r}")
                document["results"][transport] = {"error": repr(exc)}
                keep = True
                continue
            if result["lost"] or result["duplicates_unexplained"]:
                keep = True
            document["results"][transport] = result
    finally:
        signal.alarm(0)
        document["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        document["logs_kept_in"] = str(root) if keep else None
        if keep:
            log(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(document, indent=2) + "\n")

    print(table(document["results"]))
    failed = any(
        "error" in result or result.get("lost")
        for result in document["results"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
