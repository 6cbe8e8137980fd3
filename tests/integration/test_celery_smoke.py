"""A real Celery worker process runs tasks through the streams transport."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kombu_redis_streams.embedded import EmbeddedServer

pytestmark = pytest.mark.celery

APP = textwrap.dedent(
    """
    import os

    import kombu_redis_streams  # noqa: F401
    from celery import Celery

    app = Celery(
        "smoke", broker=os.environ["BROKER_URL"], backend=os.environ["RESULT_URL"]
    )
    app.conf.broker_connection_retry_on_startup = True

    @app.task
    def add(x, y):
        return x + y
    """
)


@pytest.fixture
def celery_app_dir(
    tmp_path: Path,
    server: EmbeddedServer,
    broker_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    (tmp_path / "smoke_app.py").write_text(APP)
    monkeypatch.setenv("BROKER_URL", broker_url)
    monkeypatch.setenv("RESULT_URL", f"redis://127.0.0.1:{server.port}/1")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("smoke_app", None)


def start_worker(
    app_dir: Path,
    pool: str,
    extra: tuple[str, ...] = ("--without-mingle", "--without-gossip"),
) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(app_dir))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "smoke_app",
            "worker",
            f"--pool={pool}",
            "--concurrency=2",
            "--loglevel=INFO",
            *extra,
        ],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("pool", ["solo", "prefork", "gevent", "eventlet"])
def test_worker_runs_tasks(celery_app_dir: Path, pool: str) -> None:
    if pool in ("gevent", "eventlet"):
        pytest.importorskip(pool)
    import smoke_app  # type: ignore[import-not-found]

    worker = start_worker(celery_app_dir, pool)
    try:
        results = [smoke_app.add.delay(number, number) for number in range(20)]
        values = [result.get(timeout=30) for result in results]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert values == [number * 2 for number in range(20)], output
    assert "redis-streams://" in output
    assert output.count("succeeded in") == 20
    assert worker.returncode == 0, output
    smoke_app.app.close()


def test_worker_with_mingle_and_gossip(celery_app_dir: Path) -> None:
    import smoke_app

    # Mingle drains events before the event loop starts; the read it leaves
    # in flight must be polled by the hub, or the worker stalls for 25 s.
    worker = start_worker(celery_app_dir, "prefork", extra=())
    try:
        value = smoke_app.add.delay(20, 22).get(timeout=15)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert value == 42, output
    assert "mingle: all alone" in output
    smoke_app.app.close()


def run_celery(app_dir: Path, *args: str, seconds: float) -> str:
    """Run a celery command for ``seconds`` (or until it exits); return output."""
    env = dict(os.environ, PYTHONPATH=str(app_dir))
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "smoke_app", *args],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    return output


def test_beat_and_events_commands(celery_app_dir: Path) -> None:
    config = celery_app_dir / "smoke_app.py"
    config.write_text(
        config.read_text()
        + "\napp.conf.beat_schedule = {'tick': {'task': 'smoke_app.add',"
        " 'schedule': 0.5, 'args': (1, 1)}}\n"
    )
    worker = start_worker(celery_app_dir, "solo", extra=("--without-mingle", "-E"))
    try:
        beat_output = run_celery(
            celery_app_dir,
            "beat",
            "--loglevel=INFO",
            f"--schedule={celery_app_dir / 'beat-schedule'}",
            seconds=4,
        )
        events_output = run_celery(celery_app_dir, "events", "--dump", seconds=4)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker_output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker_output, _ = worker.communicate()
    assert "Scheduler: Sending due task tick" in beat_output, beat_output
    assert worker_output.count("succeeded in") >= 3, worker_output
    assert "heartbeat:" in events_output, events_output
