"""The Celery app of the end-to-end benchmark: one no-op task that counts itself.

The worker process imports this module (``celery -A celery_app worker``) and
reads its broker and queue from the environment. The benchmark process calls
:func:`make_app` to get a sending app with the same settings. Each task run
increments :data:`COUNTER_KEY` on a plain redis-py connection, in database 1,
so that the sender can tell when all tasks are done without a result backend.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

import kombu_redis_streams  # noqa: F401  # registers redis-streams://

TASK_NAME = "bench.noop"
COUNTER_KEY = "bench:celery:done"


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

_counter: tuple[int, redis.Redis] | None = None


def counter() -> redis.Redis:
    """Return this process's connection to the counter database.

    A prefork child inherits the module but must not share its parent's socket,
    so the connection is opened again when the process ID changes.
    """
    global _counter
    if _counter is None or _counter[0] != os.getpid():
        _counter = (os.getpid(), redis.Redis.from_url(os.environ["BENCH_COUNTER_URL"]))
    return _counter[1]


@app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Increment the done counter and do nothing else."""
    counter().incr(COUNTER_KEY)
