"""``kombu-streams demo --celery``: the Celery example, end to end.

It starts a real prefork worker of ``examples/celery`` on the broker, runs the
example's sender, and reports tasks sent, executed, duplicated and lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .demo import DemoError

#: Seconds the worker gets to stop after SIGTERM before it is killed.
WORKER_STOP_TIMEOUT_S = 30.0


@dataclass
class CeleryDemoReport:
    """Counts of one run of the Celery example."""

    summary: dict[str, Any]
    worker_log: str

    @property
    def ok(self) -> bool:
        """True when no task was lost, duplicated or wrong."""
        return (
            self.summary.get("lost") == 0
            and self.summary.get("duplicates") == 0
            and self.summary.get("wrong_results") == 0
        )


def example_dir() -> Path:
    """Return the folder of the Celery example, installed or in a checkout.

    Raises:
        DemoError: the example is not found.
    """
    package = Path(__file__).resolve().parent.parent
    for candidate in (
        package / "examples" / "celery",
        package.parent.parent / "examples" / "celery",
    ):
        if (candidate / "tasks.py").is_file():
            return candidate
    raise DemoError(
        "The Celery example was not found next to the package or in the source "
        "checkout. Reinstall kombu-redis-streams, or run it from a checkout."
    )


def result_url(broker_url: str) -> str:
    """Return the plain ``redis://`` URL of the broker's server for results."""
    scheme, _, rest = broker_url.partition("://")
    plain = "rediss" if scheme.startswith("rediss") else "redis"
    return f"{plain}://{rest}"


def run_celery_demo(broker_url: str, tasks: int, timeout_s: float) -> CeleryDemoReport:
    """Run a worker and the sender of the example and return the counts.

    Raises:
        DemoError: the worker or the sender failed to run.
    """
    folder = example_dir()
    env = dict(
        os.environ,
        EXAMPLE_BROKER_URL=broker_url,
        EXAMPLE_RESULT_URL=result_url(broker_url),
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(folder), os.environ.get("PYTHONPATH")])
        ),
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--queues=celery,example.broadcast",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sender = subprocess.run(
            [sys.executable, "send.py", f"--tasks={tasks}", f"--timeout={timeout_s}"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s + 30,
        )
    except subprocess.TimeoutExpired:
        sender = None
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker_log, _ = worker.communicate(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker_log, _ = worker.communicate()
    if sender is None:
        raise DemoError(
            f"The example's sender did not finish within {timeout_s + 30:.0f} s."
        )
    lines = [line for line in sender.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise DemoError(
            "The example's sender printed no summary. Its output:\n"
            + sender.stdout
            + sender.stderr
            + "\nWorker log:\n"
            + worker_log
        )
    return CeleryDemoReport(json.loads(lines[-1]), worker_log)
