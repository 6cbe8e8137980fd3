"""Tasks of the example app. Each records its run so the sender can count."""

import os
import time

import redis
from celery import Celery

import kombu_redis_streams  # noqa: F401  (registers redis-streams://)

app = Celery("example")
app.config_from_object("celeryconfig")

_counter = None


def _record(kind: str, task_id: str) -> None:
    """Count one execution of ``task_id`` in the result backend's database."""
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(os.environ["EXAMPLE_RESULT_URL"])
    _counter.hincrby(f"example:runs:{kind}", task_id, 1)


@app.task(bind=True)
def add(self, x: int, y: int) -> int:
    """Add two numbers."""
    _record("add", self.request.id)
    return x + y


@app.task(bind=True)
def at_time(self, due: float) -> float:
    """Return how late, in seconds, the task ran after ``due``."""
    _record("eta", self.request.id)
    return time.time() - due


@app.task(bind=True)
def total(self, numbers: list) -> int:
    """Sum the results of a chord's header."""
    _record("chord", self.request.id)
    return sum(numbers)


@app.task(bind=True)
def announce(self, text: str) -> str:
    """Run on every worker that consumes the broadcast queue."""
    _record("broadcast", self.request.id + ":" + self.request.hostname)
    return text
