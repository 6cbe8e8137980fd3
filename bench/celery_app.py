"""The Celery app of the end-to-end benchmark: one no-op task that counts itself.

The worker process imports this module (``celery -A celery_app worker``) and
reads its broker and queue from the environment. The benchmark process calls
:func:`make_app` to get a sending app with the same settings.

Task runs are counted in :data:`COUNTER_KEY` on a plain redis-py connection,
in database 1, so that the sender can tell when all tasks are done without a
result backend. Each process adds its runs up in memory and sends the sum
every :data:`REPORT_EVERY` runs and from a thread every
:data:`REPORT_INTERVAL_S`: a round trip per task would cost as much as the
broker's own work and hide the difference between the transports.
"""

from __future__ import annotations

import os
import threading
import time

import redis
from celery import Celery

import kombu_redis_streams  # noqa: F401  # registers redis-streams://

TASK_NAME = "bench.noop"
COUNTER_KEY = "bench:celery:done"

#: Runs a process adds up before it sends them at once.
REPORT_EVERY = 100

#: Seconds between two reports of the runs a process added up since the last.
REPORT_INTERVAL_S = 0.02


def make_app(broker_url: str, queue: str, control_exchange: str = "") -> Celery:
    """Create a Celery app that sends to and consumes from ``queue`` only.

    A non-empty ``control_exchange`` renames the remote control and event
    exchanges, so that a run on a shared RabbitMQ declares no exchange that
    another Celery application uses and can delete all of its own.
    """
    app = Celery("bench_celery", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if control_exchange:
        app.conf.update(
            control_exchange=control_exchange,
            event_exchange=f"{control_exchange}.ev",
        )
    return app


def control_exchange_names(control_exchange: str) -> list[str]:
    """Return the exchanges Celery may declare for ``control_exchange``."""
    return [
        f"{control_exchange}.pidbox",
        f"reply.{control_exchange}.pidbox",
        f"{control_exchange}.ev",
    ]


app = make_app(
    os.environ.get("BENCH_BROKER_URL", "memory://"),
    os.environ.get("BENCH_QUEUE", "bench"),
    os.environ.get("BENCH_CONTROL_EXCHANGE", ""),
)


class RunCounter:
    """Runs of this process not yet added to :data:`COUNTER_KEY`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._pending = 0
        self._client: redis.Redis | None = None

    def add_one(self) -> None:
        """Count one run and send the sum when enough runs were added up."""
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            self._pending += 1
            full = self._pending >= REPORT_EVERY
        if full:
            self.report()

    def report(self) -> None:
        """Add the runs counted since the last report to the shared counter."""
        with self._lock:
            runs, self._pending = self._pending, 0
        if runs and self._client is not None:
            self._client.incrby(COUNTER_KEY, runs)

    def _start(self) -> None:
        # A prefork child inherits the module but must not share its parent's
        # socket or lose its reporting thread, so both are made again here.
        self._pid = os.getpid()
        self._pending = 0
        self._client = redis.Redis.from_url(os.environ["BENCH_COUNTER_URL"])
        threading.Thread(target=self._report_often, daemon=True).start()

    def _report_often(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(REPORT_INTERVAL_S)
            self.report()


runs = RunCounter()


@app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Count this run and do nothing else."""
    runs.add_one()
