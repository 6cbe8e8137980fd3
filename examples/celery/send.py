"""Send a mix of tasks to the example app and check that each ran once.

Run a worker first (``celery -A tasks worker`` in this folder), then
``python send.py``. It sends plain tasks, an ETA task, a chord and a
broadcast, waits for them, and prints sent, executed, duplicates, lost and the
rate. It exits with code 1 when a task was lost or ran twice.
"""

import argparse
import json
import sys
import time
from datetime import datetime, timezone

import redis
from celery import chord
from tasks import add, announce, app, at_time, total


def main() -> int:
    """Send the tasks, wait, count, and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=500, help="plain tasks to send")
    parser.add_argument("--workers", type=int, default=1, help="workers on broadcast")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    options = parser.parse_args()

    counter = redis.Redis.from_url(app.conf.result_backend)
    counter.delete(
        *[f"example:runs:{kind}" for kind in ("add", "eta", "chord", "broadcast")]
    )

    # A broadcast reaches only the queues bound when it is sent, so wait until
    # the workers are up and have declared theirs.
    deadline = time.monotonic() + options.timeout
    while len(app.control.ping(timeout=0.5) or []) < options.workers:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no worker replied to ping"}))
            return 1

    started = time.monotonic()
    results = [add.delay(number, number) for number in range(options.tasks)]
    due = time.time() + 2
    eta = datetime.fromtimestamp(due, tz=timezone.utc)
    eta_result = at_time.apply_async((due,), eta=eta)
    chord_result = chord(add.s(number, 1) for number in range(10))(total.s())
    announce.delay("hello")
    # Plain tasks, the ETA task, the chord's ten adds and its callback, and
    # the broadcast, counted once however many workers run it.
    sent = options.tasks + 1 + 10 + 1 + 1

    values = [
        result.get(timeout=max(deadline - time.monotonic(), 0.1)) for result in results
    ]
    lateness = eta_result.get(timeout=max(deadline - time.monotonic(), 0.1))
    chord_total = chord_result.get(timeout=max(deadline - time.monotonic(), 0.1))
    elapsed = time.monotonic() - started
    while time.monotonic() < deadline:
        if counter.hlen("example:runs:broadcast") >= options.workers:
            break
        time.sleep(0.1)

    runs = {
        kind: [int(count) for count in counter.hvals(f"example:runs:{kind}")]
        for kind in ("add", "eta", "chord", "broadcast")
    }
    executed = sum(len(counts) for kind, counts in runs.items() if kind != "broadcast")
    executed += 1 if runs["broadcast"] else 0
    duplicates = sum(count - 1 for counts in runs.values() for count in counts)
    summary = {
        "sent": sent,
        "executed": executed,
        "duplicates": duplicates,
        "lost": sent - executed,
        "wrong_results": sum(value != number * 2 for number, value in enumerate(values))
        + (chord_total != sum(range(1, 11))),
        "eta_late_s": round(lateness, 3),
        "broadcast_workers": len(runs["broadcast"]),
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(sent / elapsed, 1),
    }
    print(json.dumps(summary))
    ok = summary["lost"] == 0 and duplicates == 0 and summary["wrong_results"] == 0
    return 0 if ok and lateness >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
