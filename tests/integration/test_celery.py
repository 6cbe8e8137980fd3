"""Celery features that depend on the broker, run by real ``celery worker`` processes.

The harness (``celery_harness.py``) writes a small app module to each test's
``tmp_path`` and starts workers as subprocesses. Every task counts its
executions with ``INCR runs:<task id>`` in database 2 of the test server, so
each test checks exact counts: a lost task has no key and a duplicate has a
count above the expected one. Results go to the Redis result backend in
database 1 of the same server.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import chain, chord, group
from celery.exceptions import TimeLimitExceeded

from kombu_redis_streams.embedded import EmbeddedServer

from .celery_harness import (
    EVENT_TIMEOUT_S,
    RECONNECT_TIMEOUT_S,
    REPLY_TIMEOUT,
    RESULT_TIMEOUT_S,
    WORKER_STOP_TIMEOUT_S,
    Harness,
    drain_until,
    open_harness,
    wait_for,
)

pytestmark = pytest.mark.celery

#: Countdown of the ETA tasks a worker keeps unacked while it is shut down.
ETA_DELAY_S = 3.0
#: Seconds after which an AOF with appendfsync everysec has the last writes.
AOF_FSYNC_WAIT_S = 1.5


def pending_count(port: int, queue: str = "celery") -> int:
    """Return how many entries of ``queue`` are delivered and not yet acked."""
    with redis.Redis(host="127.0.0.1", port=port) as client:
        try:
            reply = client.xpending(f"{{{queue}}}", f"kombu:{queue}")
        except redis.ResponseError:
            return 0  # no stream or group yet
    return int(reply["pending"])


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


def test_queue_order_strategy_sorted(harness: Harness) -> None:
    # With "sorted" a worker empties its queues in name order, whatever the
    # order of -Q; kombu's default, round_robin, would alternate them.
    tasks = harness.load_app(
        """
        app.conf.worker_prefetch_multiplier = 1
        app.conf.broker_transport_options = {"queue_order_strategy": "sorted"}
        """
    )
    results = [
        tasks.ordered.apply_async((index,), queue="b" if index < 5 else "a")
        for index in range(10)
    ]
    worker = harness.start_worker("--pool=solo", "--concurrency=1", "-Q", "b,a")

    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    order = [int(index) for index in harness.counts.lrange("order", 0, -1)]
    assert order == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
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


def test_warm_shutdown_returns_eta_tasks(
    harness: Harness, server: EmbeddedServer
) -> None:
    tasks = harness.load_app(
        """
        app.conf.broker_transport_options = {"visibility_timeout": 3600}
        """
    )
    first = harness.start_worker("--pool=solo", name="w1")
    sent_at = time.time()
    results = [tasks.stamp.apply_async(countdown=ETA_DELAY_S) for _ in range(3)]

    # The worker keeps ETA tasks unacked until they are due. A warm shutdown
    # before then must give them back at once, not leave them pending for
    # the hour of visibility_timeout.
    held = wait_for(lambda: pending_count(server.port) == 3, RESULT_TIMEOUT_S)
    first_code = first.stop()
    ran_in_first = harness.runs()
    second = harness.start_worker("--pool=solo", name="w2")
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    second_code = second.stop()

    assert held, first.log()
    assert ran_in_first == {}
    assert first_code == 0, first.log()
    assert harness.runs() == {result.id: 1 for result in results}
    for result in results:
        assert harness.ran_at(result.id) >= sent_at + ETA_DELAY_S
    assert second_code == 0, second.log()


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


def test_cold_shutdown_tasks_recovered(harness: Harness) -> None:
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

    # SIGQUIT is Celery's cold shutdown: the pool processes are terminated
    # mid-task and the worker exits without waiting for them.
    two_started = wait_for(lambda: len(harness.runs()) == 2, RESULT_TIMEOUT_S)
    first.process.send_signal(signal.SIGQUIT)
    first_code = first.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
    in_flight = set(harness.runs())
    second = harness.start_worker("--pool=prefork", "--concurrency=4", name="w2")
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    second_code = second.stop()

    # The interrupted acks_late tasks run again, the prefetched ones once.
    expected = {result.id: 2 if result.id in in_flight else 1 for result in results}
    assert two_started, first.log()
    assert first_code is not None
    assert harness.runs() == expected
    assert second_code == 0, second.log()
    assert harness.ready_count("celery") == 0


def test_killed_worker_backlog_returns_quickly(
    harness: Harness, server: EmbeddedServer
) -> None:
    tasks = harness.load_app(
        """
        app.conf.broker_transport_options = {
            "visibility_timeout": 1,
            "unacked_restore_interval": 5,
        }
        """
    )
    blocker = tasks.hold.delay()
    results = [tasks.echo.delay(number) for number in range(20)]
    # The first worker's pool process runs the blocking task while its main
    # process prefetches the 20 others; then the worker dies with them.
    first = harness.start_worker(
        "--pool=prefork", "--concurrency=1", "--prefetch-multiplier=21", name="w1"
    )
    held = wait_for(lambda: pending_count(server.port) == 20, RESULT_TIMEOUT_S)
    first.kill()
    harness.counts.set("release", 1)

    # The second worker takes one task per scan (its prefetch is 1). Scans
    # must go on as its acks free credit, not one per interval: that pace
    # would need 100 s for 20 tasks, longer than the results are waited for.
    second = harness.start_worker("--pool=solo", "--prefetch-multiplier=1", name="w2")
    all_ran = wait_for(
        lambda: all(harness.run_count(result.id) for result in results),
        RESULT_TIMEOUT_S,
    )
    values = [result.get(timeout=RESULT_TIMEOUT_S) for result in results]
    second_code = second.stop()

    assert held, first.log()
    assert all_ran, second.log()
    assert values == list(range(20))
    runs = harness.runs()
    assert {task_id: runs[task_id] for task_id in runs if task_id != blocker.id} == {
        result.id: 1 for result in results
    }
    assert runs[blocker.id] == 1
    assert second_code == 0, second.log()


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


def test_worker_keeps_eta_tasks_over_aof_restart(
    tmp_path: Path, server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ETA tasks held by a worker survive a kill -9 of a server with an AOF.

    The server loses its clients, so the worker's channel cannot give the
    held tasks back. They stay pending under the lost consumer and another
    channel takes them over after ``visibility_timeout``; each runs once.
    """
    with (
        EmbeddedServer(server.binary, appendonly=True) as durable,
        open_harness(
            tmp_path,
            monkeypatch,
            broker_url=durable.url,
            backend_url=f"redis://127.0.0.1:{durable.port}/1",
            counts_url=f"redis://127.0.0.1:{durable.port}/2",
        ) as harness,
    ):
        tasks = harness.load_app(
            """
            app.conf.broker_transport_options = {
                "visibility_timeout": 3,
                "unacked_restore_interval": 0.5,
            }
            """
        )
        worker = harness.start_worker("--pool=solo")
        held = [tasks.echo.apply_async(("eta",), countdown=2) for _ in range(3)]
        all_held = wait_for(lambda: pending_count(durable.port) == 3, RESULT_TIMEOUT_S)
        # appendfsync everysec: wait until the AOF has the reads on disk.
        time.sleep(AOF_FSYNC_WAIT_S)

        durable.restart()
        after = tasks.echo.delay("after restart")
        every_id = [result.id for result in held] + [after.id]

        def all_ran() -> bool:
            try:
                return all(harness.run_count(task_id) >= 1 for task_id in every_id)
            except redis.ConnectionError:
                return False

        ran = wait_for(all_ran, RECONNECT_TIMEOUT_S + 3)
        # A duplicate would come from the old channel's timers or a second
        # reclaim; give both time to show.
        time.sleep(1.0)
        runs = harness.runs()
        # Reading the results unsubscribes them from the result backend
        # while its server still runs.
        values = [result.get(timeout=RESULT_TIMEOUT_S) for result in [*held, after]]
        exit_code = worker.stop()

    assert all_held, worker.log()
    assert ran, worker.log()
    assert runs == {task_id: 1 for task_id in every_id}, worker.log()
    assert values == ["eta", "eta", "eta", "after restart"]
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
