"""Shared harness of the tests that run real ``celery worker`` processes.

Each test writes a small app module to its ``tmp_path`` and starts workers as
subprocesses. Every task counts its executions with ``INCR runs:<task id>`` in
the counts database (database 2 of the test server), so each test checks
exact counts: a lost task has no key and a duplicate has a count above the
expected one. The app module reads its URLs from the environment:
``BROKER_URL``, ``BACKEND_URL`` (the result backend) and ``COUNTS_URL``.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

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

    app = Celery(
        "streams_app",
        broker=os.environ["BROKER_URL"],
        backend=os.environ["BACKEND_URL"],
    )
    app.conf.broker_connection_retry_on_startup = True
    counts = redis.Redis.from_url(os.environ["COUNTS_URL"])
    # Seconds the hold task waits for the test to release it.
    HOLD_LIMIT_S = 30.0
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


    @app.task(bind=True)
    def hold(self):
        # Run until the test sets the "release" key, at most HOLD_LIMIT_S.
        record(self)
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not counts.exists("release") and time.monotonic() < deadline:
            time.sleep(0.05)
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
    """A ``celery`` subprocess, usually a worker, in its own process group."""

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

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(self.app_dir), **(extra or {}))

    def start_worker(
        self,
        *args: str,
        name: str = "w1",
        wait_ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> Worker:
        """Start ``celery worker`` with ``args`` and wait until it logs ready.

        ``env`` adds environment variables for this worker process only.
        """
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
                env=self.env(env),
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

    def spawn_celery(self, *args: str, name: str) -> Worker:
        """Start ``celery -A streams_app ARGS`` in the background, logging to a file.

        The process runs in its own process group, like a worker, so that
        :meth:`Worker.kill` ends it the way a crash would.
        """
        log_path = self.app_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", APP_MODULE, *args],
                cwd=self.app_dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = Worker(name, process, log_path)
        self.workers.append(client)
        return client

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


@contextmanager
def open_harness(
    app_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    broker_url: str,
    backend_url: str,
    counts_url: str,
) -> Iterator[Harness]:
    """Set the app module's URLs, yield a harness, and kill what it started."""
    monkeypatch.setenv("BROKER_URL", broker_url)
    monkeypatch.setenv("BACKEND_URL", backend_url)
    monkeypatch.setenv("COUNTS_URL", counts_url)
    monkeypatch.syspath_prepend(str(app_dir))
    counts = redis.Redis.from_url(counts_url)
    harness = Harness(app_dir, counts)
    try:
        yield harness
    finally:
        harness.close()
        counts.close()
