"""Celery features that depend on the broker, run by real ``celery worker`` processes.

Each test writes a small app module to its ``tmp_path`` and starts workers as
subprocesses. Every task counts its executions with ``INCR runs:<task id>`` in
database 2 of the test server, so each test checks exact counts: a lost task
has no key and a duplicate has a count above the expected one. Results go to
the Redis result backend in database 1 of the same server.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from celery import chain, chord, group
from celery.exceptions import TimeLimitExceeded

from kombu_redis_streams.embedded import EmbeddedServer

pytestmark = pytest.mark.celery

APP_MODULE = "streams_app"

#: Seconds a worker may take to log that it is ready.
WORKER_READY_TIMEOUT_S = 30.0
#: Seconds a worker may take to exit after SIGTERM before it is killed.
WORKER_STOP_TIMEOUT_S = 20.0
#: Seconds one ``celery`` command line call may run before it is killed.
CLI_TIMEOUT_S = 30.0
#: Seconds a test waits for results that a live worker should produce at once.
RESULT_TIMEOUT_S = 30.0
#: Seconds between two checks of a condition that a test waits for.
POLL_INTERVAL_S = 0.05
#: Seconds ``celery inspect`` and ``celery control`` wait for replies (``-t``).
REPLY_TIMEOUT = "5"
#: Seconds the event receiver waits for the event of one task.
EVENT_TIMEOUT_S = 10.0
#: Seconds a worker may take to reconnect and run a task after a connection loss.
RECONNECT_TIMEOUT_S = 15.0

APP_HEADER = textwrap.dedent(
    """
    import os
    import signal
    import time

    import redis
    from celery import Celery

    import kombu_redis_streams  # noqa: F401

    PORT = int(os.environ["SERVER_PORT"])
    app = Celery(
        "streams_app",
        broker=os.environ["BROKER_URL"],
        backend=f"redis://127.0.0.1:{PORT}/1",
    )
    app.conf.broker_connection_retry_on_startup = True
    counts = redis.Redis(host="127.0.0.1", port=PORT, db=2)
    """
)

APP_TASKS = textwrap.dedent(
    """

    def record(task):
        # Count one execution of this task id and return the count so far.
        return counts.incr(f"runs:{task.request.id}")


    @app.task(bind=True)
    def echo(self, value):
        record(self)
        return value


    @app.task(bind=True)
    def add(self, x, y):
        record(self)
        return x + y


    @app.task(bind=True)
    def total(self, values):
        record(self)
        return sum(values)


    @app.task(bind=True)
    def stamp(self):
        record(self)
        counts.set(f"ran_at:{self.request.id}", repr(time.time()))


    @app.task(bind=True)
    def flaky(self):
        if record(self) < 3:
            raise self.retry(countdown=0.2, max_retries=5)
        return "ok"


    @app.task(bind=True, time_limit=1)
    def overrun(self):
        record(self)
        time.sleep(5)


    @app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
    def crash_once(self):
        if record(self) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"


    @app.task(bind=True)
    def ordered(self, index):
        record(self)
        counts.rpush("order", index)


    @app.task(bind=True)
    def to_a(self):
        record(self)
        return self.request.delivery_info.get("routing_key")


    @app.task(bind=True)
    def to_b(self):
        record(self)
        return self.request.delivery_info.get("routing_key")


    @app.task(bind=True)
    def pause(self, seconds):
        record(self)
        time.sleep(seconds)
        counts.incr(f"done:{self.request.id}")


    @app.task(bind=True, acks_late=True)
    def pause_late(self, seconds):
        record(self)
        time.sleep(seconds)
        counts.incr(f"done:{self.request.id}")
    """
)


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / POLL_INTERVAL_S) + 1):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    return condition()


def drain_until(
    connection: Any, condition: Callable[[], bool], timeout_s: float
) -> None:
    """Deliver messages on ``connection`` until ``condition`` is true or time is up."""
    deadline = time.monotonic() + timeout_s
    for _ in range(1000):
        if condition() or time.monotonic() >= deadline:
            return
        try:
            connection.drain_events(timeout=min(1.0, timeout_s))
        except socket.timeout:
            continue


@dataclass
class Worker:
    """A ``celery worker`` subprocess in its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def nodename(self) -> str:
        return f"{self.name}@test"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_ready(self) -> bool:
        return f"{self.nodename} ready." in self.log()

    def stop(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> int | None:
        """Send SIGTERM (warm shutdown) and return the exit code.

        A worker that has not exited after ``timeout_s`` is killed with its
        pool processes, and None is returned.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """Kill the worker and its pool processes with SIGKILL."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group has exited already
        self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)


@dataclass
class Harness:
    """Test helper for one test's app module, workers and execution counts."""

    app_dir: Path
    server: EmbeddedServer
    counts: redis.Redis
    workers: list[Worker] = field(default_factory=list)
    module: Any = None

    def load_app(self, extra: str = "") -> ModuleType:
        """Write the app module with ``extra`` configuration lines and import it."""
        source = APP_HEADER + textwrap.dedent(extra) + APP_TASKS
        (self.app_dir / f"{APP_MODULE}.py").write_text(source)
        sys.modules.pop(APP_MODULE, None)
        importlib.invalidate_caches()
        module = importlib.import_module(APP_MODULE)
        self.module = module
        return module

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(self.app_dir))

    def start_worker(
        self, *args: str, name: str = "w1", wait_ready: bool = True
    ) -> Worker:
        """Start ``celery worker`` with ``args`` and wait until it logs ready."""
        log_path = self.app_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    APP_MODULE,
                    "worker",
                    "-n",
                    f"{name}@test",
                    "--loglevel=INFO",
                    "--without-mingle",
                    "--without-gossip",
                    *args,
                ],
                cwd=self.app_dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(name, process, log_path)
        self.workers.append(worker)
        if wait_ready:
            ready = wait_for(
                lambda: worker.is_ready() or process.poll() is not None,
                WORKER_READY_TIMEOUT_S,
            )
            assert ready, f"worker {name} did not start:\n{worker.log()}"
            assert process.poll() is None, f"worker {name} exited:\n{worker.log()}"
        return worker

    def celery(self, *args: str, timeout_s: float = CLI_TIMEOUT_S) -> tuple[int, str]:
        """Run ``celery -A streams_app ARGS`` and return its exit code and output."""
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP_MODULE, *args],
            cwd=self.app_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout_s)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        return process.returncode, output

    def runs(self) -> dict[str, int]:
        """Return the execution count of every task id that ran."""
        keys = sorted(self.counts.scan_iter(match="runs:*", count=1000))
        values = self.counts.mget(keys) if keys else []
        return {
            key.decode()[len("runs:") :]: int(value)
            for key, value in zip(keys, values)
            if value is not None
        }

    def run_count(self, task_id: str) -> int:
        value = self.counts.get(f"runs:{task_id}")
        return int(value) if value is not None else 0

    def ran_at(self, task_id: str) -> float:
        """Return the time.time() at which the ``stamp`` task ``task_id`` ran."""
        value = self.counts.get(f"ran_at:{task_id}")
        assert value is not None, f"task {task_id} recorded no run time"
        return float(value)

    def ready_count(self, queue: str) -> int:
        """Return the number of messages of ``queue`` that wait for a consumer."""
        with self.module.app.connection_for_write() as connection:
            channel = connection.default_channel
            return int(channel.queue_declare(queue=queue, passive=True).message_count)

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.kill()
        if self.module is not None:
            self.module.app.close()
        sys.modules.pop(APP_MODULE, None)


@pytest.fixture
def harness(
    tmp_path: Path,
    server: EmbeddedServer,
    broker_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Harness]:
    monkeypatch.setenv("BROKER_URL", broker_url)
    monkeypatch.setenv("SERVER_PORT", str(server.port))
    monkeypatch.syspath_prepend(str(tmp_path))
    counts = redis.Redis(host="127.0.0.1", port=server.port, db=2)
    harness = Harness(tmp_path, server, counts)
    try:
        yield harness
    finally:
        harness.close()
        counts.close()


# -- pools -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "concurrency"), [("solo", "1"), ("prefork", "2"), ("threads", "4")]
)
def test_pool_runs_each_once(harness: Harness, pool: str, concurrency: str) -> None:
    tasks = harness.load_app()
    worker = harness.start_worker(f"--pool={pool}", f"--concurrency={concurrency}")

    results = [tasks.echo.delay(number) for number in range(50)]
    values = [result.get(timeout=RESULT_TIMEOUT_S) for result in results]
    exit_code = worker.stop()

    assert values == list(range(50))
    assert harness.runs() == {result.id: 1 for result in results}
    assert exit_code == 0, worker.log()
    assert harness.ready_count("celery") == 0


# -- backlog throughput ----------------------------------------------------------------


def test_backlog_drains_without_stalls(harness: Harness) -> None:
    tasks = harness.load_app(
        """
        app.conf.worker_prefetch_multiplier = 1
        """
    )
    results = [tasks.stamp.delay() for _ in range(6)]
    # One task per prefetch window, so a worker that waits for the next poll
    # wake-up (up to polling_interval, 1 s) after each window shows a gap
    # after every task. kombu 5.7's redis transport ran these 6 within 0.1 s.
    worker = harness.start_worker("--pool=solo", "--concurrency=1")

    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    ran_at = [harness.ran_at(result.id) for result in results]
    assert harness.runs() == {result.id: 1 for result in results}
    assert exit_code == 0, worker.log()
    assert max(ran_at) - min(ran_at) < 2.0


# -- countdown and eta -----------------------------------------------------------------


def test_countdown_and_eta_wait(harness: Harness) -> None:
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=solo")

    sent_at = time.time()
    by_countdown = tasks.stamp.apply_async(countdown=2)
    eta = datetime.now(timezone.utc) + timedelta(seconds=2)
    by_eta = tasks.stamp.apply_async(eta=eta)
    by_countdown.get(timeout=RESULT_TIMEOUT_S)
    by_eta.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    countdown_ran_at = harness.ran_at(by_countdown.id)
    eta_ran_at = harness.ran_at(by_eta.id)
    assert countdown_ran_at >= sent_at + 2
    assert eta_ran_at >= eta.timestamp()
    assert harness.runs() == {by_countdown.id: 1, by_eta.id: 1}
    assert exit_code == 0, worker.log()


# -- retries ---------------------------------------------------------------------------


def test_retry_runs_three_times(harness: Harness) -> None:
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=solo")

    result = tasks.flaky.delay()
    value = result.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    assert value == "ok"
    assert harness.runs() == {result.id: 3}
    assert exit_code == 0, worker.log()


# -- time limits -----------------------------------------------------------------------


def test_time_limit_fails_once(harness: Harness) -> None:
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=prefork", "--concurrency=1")

    result = tasks.overrun.delay()
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    assert result.state == "FAILURE"
    assert harness.runs() == {result.id: 1}
    assert exit_code == 0, worker.log()
    assert harness.ready_count("celery") == 0


# -- acks_late with reject_on_worker_lost ----------------------------------------------


def test_lost_child_task_runs_again(harness: Harness) -> None:
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=prefork", "--concurrency=1")

    result = tasks.crash_once.delay()
    value = result.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    assert value == "survived"
    assert harness.runs() == {result.id: 2}
    assert "WorkerLostError" in worker.log()
    assert exit_code == 0, worker.log()
    assert harness.ready_count("celery") == 0


# -- priority --------------------------------------------------------------------------


def test_priority_sets_execution_order(harness: Harness) -> None:
    # One stream per priority makes the order exact: lower numbers first and
    # FIFO within one priority. The default steps (0, 3, 6, 9) sort by bucket
    # only, as kombu's redis transport does.
    tasks = harness.load_app(
        """
        app.conf.worker_prefetch_multiplier = 1
        app.conf.broker_transport_options = {"priority_steps": list(range(10))}
        """
    )
    priorities = [(index * 7) % 10 for index in range(30)]
    results = [
        tasks.ordered.apply_async((index,), priority=priority)
        for index, priority in enumerate(priorities)
    ]
    worker = harness.start_worker("--pool=solo", "--concurrency=1")

    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    order = [int(index) for index in harness.counts.lrange("order", 0, -1)]
    expected = sorted(range(30), key=lambda index: priorities[index])
    assert order == expected
    assert harness.runs() == {result.id: 1 for result in results}
    assert exit_code == 0, worker.log()


# -- routing ---------------------------------------------------------------------------


def test_routes_reach_both_queues(harness: Harness) -> None:
    tasks = harness.load_app(
        """
        app.conf.task_routes = {
            "streams_app.to_a": {"queue": "a"},
            "streams_app.to_b": {"queue": "b"},
        }
        """
    )
    worker = harness.start_worker("--pool=solo", "-Q", "a,b")

    to_a = [tasks.to_a.delay() for _ in range(10)]
    to_b = [tasks.to_b.delay() for _ in range(10)]
    keys_a = [result.get(timeout=RESULT_TIMEOUT_S) for result in to_a]
    keys_b = [result.get(timeout=RESULT_TIMEOUT_S) for result in to_b]
    exit_code = worker.stop()

    assert keys_a == ["a"] * 10
    assert keys_b == ["b"] * 10
    assert harness.runs() == {result.id: 1 for result in to_a + to_b}
    assert exit_code == 0, worker.log()


# -- canvas ----------------------------------------------------------------------------


def test_canvas_results_are_correct(harness: Harness) -> None:
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=prefork", "--concurrency=2")

    group_result = group(tasks.add.s(number, number) for number in range(10))()
    chain_result = chain(tasks.add.s(1, 1), tasks.add.s(2), tasks.add.s(3))()
    chord_result = chord(
        (tasks.add.s(number, number) for number in range(5)), tasks.total.s()
    )()
    group_values = group_result.get(timeout=RESULT_TIMEOUT_S)
    chain_value = chain_result.get(timeout=RESULT_TIMEOUT_S)
    chord_value = chord_result.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    runs = harness.runs()
    assert group_values == [number * 2 for number in range(10)]
    assert chain_value == 7
    assert chord_value == 20
    assert len(runs) == 10 + 3 + 6
    assert set(runs.values()) == {1}
    assert exit_code == 0, worker.log()


# -- remote control --------------------------------------------------------------------


def test_remote_control_commands_work(harness: Harness) -> None:
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=solo")
    # Each command waits for the reply of this one worker, at most REPLY_TIMEOUT.
    options = ("-d", worker.nodename, "-t", REPLY_TIMEOUT)

    ping_code, ping_output = harness.celery("inspect", "ping", *options)
    assert ping_code == 0, ping_output
    assert "pong" in ping_output

    queues_code, queues_output = harness.celery("inspect", "active_queues", *options)
    assert queues_code == 0, queues_output
    assert "'name': 'celery'" in queues_output

    add_code, add_output = harness.celery("control", "add_consumer", "c", *options)
    assert add_code == 0, add_output
    assert "add consumer c" in add_output

    routed = tasks.echo.apply_async(("via c",), queue="c")
    assert routed.get(timeout=RESULT_TIMEOUT_S) == "via c"
    assert harness.runs() == {routed.id: 1}

    # The worker stops before it replies (kombu's redis transport behaves the
    # same), so this command exits 69 with "No nodes replied". The worker's
    # exit code is what counts.
    harness.celery("control", "shutdown", "-d", worker.nodename, "-t", "1")
    try:
        worker_code = worker.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        worker_code = None
    assert "Got shutdown from remote" in worker.log()
    assert worker_code == 0, worker.log()


# -- broadcast -------------------------------------------------------------------------


def test_broadcast_runs_on_both(harness: Harness) -> None:
    tasks = harness.load_app(
        """
        from kombu import Queue
        from kombu.common import Broadcast

        app.conf.task_queues = (Queue("celery"), Broadcast("bcast"))
        """
    )
    first = harness.start_worker("--pool=solo", "-Q", "bcast", name="w1")
    second = harness.start_worker("--pool=solo", "-Q", "bcast", name="w2")

    result = tasks.echo.apply_async(("everyone",), queue="bcast")
    both_ran = wait_for(lambda: harness.run_count(result.id) >= 2, RESULT_TIMEOUT_S)
    first_code = first.stop()
    second_code = second.stop()

    assert both_ran, first.log() + second.log()
    assert harness.runs() == {result.id: 2}
    assert "succeeded in" in first.log()
    assert "succeeded in" in second.log()
    assert first_code == 0, first.log()
    assert second_code == 0, second.log()


# -- events ----------------------------------------------------------------------------


def test_events_report_task_success(harness: Harness) -> None:
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=solo", "-E")
    # A monitor that attaches to a busy worker: the worker has sent events
    # before the receiver binds its queue.
    warm_up = tasks.echo.delay("before the receiver")
    assert warm_up.get(timeout=RESULT_TIMEOUT_S) == "before the receiver"
    succeeded: list[dict[str, Any]] = []

    with tasks.app.connection_for_read() as connection:
        receiver = tasks.app.events.Receiver(
            connection, handlers={"task-succeeded": succeeded.append}
        )
        with receiver.consumer_context(wakeup=False) as (consuming, _, _):
            result = tasks.echo.delay("observed")
            drain_until(
                consuming,
                lambda: any(event["uuid"] == result.id for event in succeeded),
                EVENT_TIMEOUT_S,
            )
    exit_code = worker.stop()

    events = [event for event in succeeded if event["uuid"] == result.id]
    assert len(events) == 1
    assert events[0]["hostname"] == worker.nodename
    assert result.get(timeout=RESULT_TIMEOUT_S) == "observed"
    assert harness.runs() == {warm_up.id: 1, result.id: 1}
    assert exit_code == 0, worker.log()


# -- warm shutdown ---------------------------------------------------------------------


def test_warm_shutdown_returns_prefetched(harness: Harness) -> None:
    tasks = harness.load_app(
        """
        app.conf.worker_prefetch_multiplier = 4
        app.conf.broker_transport_options = {"visibility_timeout": 3600}
        """
    )
    results = [tasks.pause.delay(1) for _ in range(10)]
    first = harness.start_worker(
        "--pool=prefork", "--concurrency=2", name="w1", wait_ready=False
    )

    # SIGTERM once a task runs: the started tasks (at most 2, one per child)
    # finish, and the prefetched ones must go back to the queue at once. With
    # visibility_timeout=3600, a transport that left them pending would keep
    # them from the second worker for an hour.
    started = wait_for(lambda: bool(harness.runs()), RESULT_TIMEOUT_S)
    first_code = first.stop()
    ran_in_first = harness.runs()
    second = harness.start_worker("--pool=prefork", "--concurrency=4", name="w2")
    all_done = wait_for(
        lambda: len(harness.counts.keys("done:*")) == 10, RESULT_TIMEOUT_S
    )
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    second_code = second.stop()

    assert started, first.log()
    assert 1 <= len(ran_in_first) <= 2, first.log()
    assert all_done, second.log()
    assert harness.runs() == {result.id: 1 for result in results}
    assert first_code == 0, first.log()
    assert second_code == 0, second.log()
    assert harness.ready_count("celery") == 0


# -- SIGKILL of a worker ---------------------------------------------------------------


def test_killed_worker_tasks_recovered(harness: Harness) -> None:
    tasks = harness.load_app(
        """
        app.conf.broker_transport_options = {
            "visibility_timeout": 3,
            "unacked_restore_interval": 0.5,
        }
        """
    )
    results = [tasks.pause_late.delay(2) for _ in range(4)]
    first = harness.start_worker(
        "--pool=prefork", "--concurrency=2", name="w1", wait_ready=False
    )

    # Kill the worker and its children together, as a crash would, while both
    # children run a task and two more tasks are prefetched.
    two_started = wait_for(lambda: len(harness.runs()) == 2, RESULT_TIMEOUT_S)
    first.kill()
    in_flight = set(harness.runs())
    finished_before_kill = harness.counts.keys("done:*")
    second = harness.start_worker("--pool=prefork", "--concurrency=4", name="w2")
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    second_code = second.stop()

    # The second worker takes all 4 over after visibility_timeout: the two that
    # were running run again, and the prefetched two run for the first time.
    expected = {result.id: 2 if result.id in in_flight else 1 for result in results}
    assert two_started, first.log()
    assert finished_before_kill == []
    assert harness.runs() == expected
    assert "taken over" in second.log()
    assert second_code == 0, second.log()
    assert harness.ready_count("celery") == 0


# -- server restart and killed connections ---------------------------------------------


def test_worker_survives_connection_loss(
    harness: Harness, server: EmbeddedServer
) -> None:
    tasks = harness.load_app(
        """
        app.conf.broker_connection_retry = True
        """
    )
    worker = harness.start_worker("--pool=prefork", "--concurrency=1")

    def ran_once(task_id: str) -> Callable[[], bool]:
        def check() -> bool:
            try:
                return harness.run_count(task_id) == 1
            except redis.ConnectionError:
                return False

        return check

    before = tasks.echo.delay("before")
    ran_before = wait_for(ran_once(before.id), RESULT_TIMEOUT_S)

    server.restart()
    after_restart = tasks.echo.delay("after restart")
    ran_after_restart = wait_for(ran_once(after_restart.id), RECONNECT_TIMEOUT_S)

    admin = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        killed = admin.client_kill_filter(_type="normal")
    finally:
        admin.close()
    after_kill = tasks.echo.delay("after client kill")
    ran_after_kill = wait_for(ran_once(after_kill.id), RECONNECT_TIMEOUT_S)
    exit_code = worker.stop()

    assert ran_before, worker.log()
    assert ran_after_restart, worker.log()
    assert killed >= 1
    assert ran_after_kill, worker.log()
    # The restart without persistence dropped the count of the first task too.
    assert harness.runs() == {after_restart.id: 1, after_kill.id: 1}
    assert exit_code == 0, worker.log()


# -- purge -----------------------------------------------------------------------------


def test_purge_removes_queued_tasks(harness: Harness) -> None:
    tasks = harness.load_app()
    for number in range(5):
        tasks.echo.delay(number)

    first_code, first_output = harness.celery("purge", "-f")
    queued_after = harness.ready_count("celery")
    second_code, second_output = harness.celery("purge", "-f")

    assert first_code == 0, first_output
    assert "Purged 5 messages from 1 known task queue" in first_output
    assert queued_after == 0
    assert second_code == 0, second_output
    assert "No messages purged" in second_output
    assert harness.runs() == {}
