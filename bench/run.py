"""Benchmark redis-streams:// against kombu's redis:// and, if present, pyamqp://.

Usage::

    python bench/run.py [--quick | --full] [--out bench/results/NAME.json]

Every metric runs for several rounds; within a round each broker takes one
sample, and the order of the brokers rotates from round to round. The table
shows medians and the ratio of each median to kombu's redis transport, and the
JSON result keeps every sample. See bench/README.md for what each metric does.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import workloads as w
from brokers import AMQP, BASELINE, LISTS, STREAMS, Broker, start_brokers, stop_brokers

#: Brokers whose errors make the run exit with status 1.
REDIS_NAMES = (STREAMS, LISTS)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SCHEMA_VERSION = 1
#: Environment variable with the folder that contains the copy of the package
#: that this run measures, set when the run restarts itself on that copy.
SNAPSHOT_ENV = "BENCH_PACKAGE_SNAPSHOT"


@dataclass(frozen=True)
class Sizes:
    """Message counts, rounds and durations of one mode of the suite."""

    mode: str
    rounds: int
    publish: int
    consume: int
    simple: int
    latency: int
    wake_latency: int
    cost: int
    idle_s: float
    queue_counts: tuple[int, ...]
    queue_total: int
    processes: tuple[int, ...]
    process_total: int
    backlogs: tuple[int, ...]
    celery: int
    celery_time_limit_s: float

    @classmethod
    def for_mode(cls, mode: str) -> Sizes:
        """Return the sizes of ``quick``, ``default`` or ``full``."""
        if mode == "quick":
            return cls(
                mode="quick",
                rounds=1,
                publish=1000,
                consume=1000,
                simple=300,
                latency=200,
                wake_latency=100,
                cost=300,
                idle_s=2.0,
                queue_counts=(1, 10, 100),
                queue_total=1000,
                processes=(1, 4),
                process_total=2000,
                backlogs=(1_000, 10_000),
                celery=200,
                celery_time_limit_s=15.0,
            )
        backlogs = (10_000, 100_000, 1_000_000) if mode == "full" else (10_000, 100_000)
        return cls(
            mode=mode,
            rounds=3,
            publish=10_000,
            consume=10_000,
            simple=2_000,
            latency=1_000,
            wake_latency=500,
            cost=2_000,
            idle_s=5.0,
            queue_counts=(1, 10, 100),
            queue_total=5_000,
            processes=(1, 4),
            process_total=10_000,
            backlogs=backlogs,
            celery=3_000,
            celery_time_limit_s=30.0,
        )


def backlog_chunk(size: int) -> int:
    """Return how many messages one round consumes from a backlog of ``size``."""
    return max(min(size // 10, 10_000), 100)


def rate(key: str, title: str, group: str, unit: str = "msg/s") -> w.Metric:
    """Describe a throughput metric, where higher is better."""
    return w.Metric(key, title, unit, True, group)


def cost(key: str, title: str, group: str, unit: str) -> w.Metric:
    """Describe a latency or cost metric, where lower is better."""
    return w.Metric(key, title, unit, False, group)


def build_workloads(sizes: Sizes, celery: bool) -> list[w.Workload]:
    """List the workloads of one run, in the order they run."""
    rounds = sizes.rounds
    items = [
        w.Workload(
            "publish",
            (rate("publish", "Producer.publish", "publish"),),
            rounds,
            lambda b, r: w.publish_rate(b, f"publish.{r}", sizes.publish, batch=False),
            {"messages": sizes.publish},
        ),
        w.Workload(
            "batch_publish",
            (rate("batch_publish", "Producer.batch publish", "publish"),),
            rounds,
            lambda b, r: w.publish_rate(b, f"batch.{r}", sizes.publish, batch=True),
            {"messages": sizes.publish},
        ),
        w.Workload(
            "consume",
            (rate("consume", "consume, ack each, prefetch 100", "consume"),),
            rounds,
            lambda b, r: w.consume_rate(b, f"consume.{r}", sizes.consume),
            {"messages": sizes.consume, "prefetch": w.PREFETCH},
        ),
        w.Workload(
            "simple_get",
            (rate("simple_get", "SimpleQueue.get + ack", "consume"),),
            rounds,
            lambda b, r: w.simple_get_rate(b, f"simple.{r}", sizes.simple, block=True),
            {"messages": sizes.simple},
        ),
        w.Workload(
            "simple_get_nowait",
            (rate("simple_get_nowait", "SimpleQueue.get_nowait + ack", "consume"),),
            rounds,
            lambda b, r: w.simple_get_rate(b, f"nowait.{r}", sizes.simple, block=False),
            {"messages": sizes.simple},
        ),
        w.Workload(
            "latency",
            (
                cost("latency_p50", "round trip p50", "latency", "ms"),
                cost("latency_p99", "round trip p99", "latency", "ms"),
            ),
            rounds,
            lambda b, r: w.round_trip_latency(b, f"latency.{r}", sizes.latency),
            {"samples": sizes.latency},
        ),
        w.Workload(
            "wake_latency",
            (
                cost("wake_latency_p50", "wake-up round trip p50", "latency", "ms"),
                cost("wake_latency_p99", "wake-up round trip p99", "latency", "ms"),
            ),
            rounds,
            lambda b, r: w.wake_up_latency(b, f"wake.{r}", sizes.wake_latency),
            {"samples": sizes.wake_latency, "gap_s": w.WAKE_GAP_S},
        ),
        w.Workload(
            "publish_cost",
            (
                cost("commands_per_publish", "commands / publish", "cost", "cmds"),
                cost("round_trips_per_publish", "round trips / publish", "cost", "RTT"),
            ),
            rounds,
            lambda b, r: w.publish_cost(b, f"pubcost.{r}", sizes.cost),
            {"messages": sizes.cost},
        ),
        w.Workload(
            "consume_cost",
            (
                cost("commands_per_consume", "commands / consume", "cost", "cmds"),
                cost("round_trips_per_consume", "round trips / consume", "cost", "RTT"),
            ),
            rounds,
            lambda b, r: w.consume_cost(b, f"concost.{r}", sizes.cost),
            {"messages": sizes.cost, "prefetch": w.PREFETCH},
        ),
        w.Workload(
            "idle",
            (
                cost("idle_commands_per_s", "idle consumer commands", "cost", "cmd/s"),
                cost(
                    "idle_round_trips_per_s",
                    "idle consumer round trips",
                    "cost",
                    "RTT/s",
                ),
                cost("idle_cpu_pct", "idle consumer CPU", "cost", "% core"),
            ),
            rounds,
            lambda b, r: w.idle_cost(b, f"idle.{r}", sizes.idle_s),
            {"seconds": sizes.idle_s},
        ),
    ]
    for count in sizes.queue_counts:
        items.append(
            w.Workload(
                f"queues_{count}",
                (rate(f"consume_queues_{count}", f"consume, {count} queues", "scale"),),
                rounds,
                partial(_many_queues, count=count, total=sizes.queue_total),
                {"queues": count, "messages": sizes.queue_total},
            )
        )
    for processes in sizes.processes:
        items.append(
            w.Workload(
                f"processes_{processes}",
                (
                    rate(
                        f"consume_procs_{processes}",
                        f"consume, {processes} processes",
                        "scale",
                    ),
                ),
                rounds,
                partial(_processes, processes=processes, total=sizes.process_total),
                {"processes": processes, "messages": sizes.process_total},
            )
        )
    for size in sizes.backlogs:
        backlog = w.Backlog(size, backlog_chunk(size), rounds)
        items.append(
            w.Workload(
                f"backlog_{size}",
                (
                    rate(
                        f"consume_backlog_{size}", f"consume, backlog {size:,}", "scale"
                    ),
                    cost(
                        f"memory_per_msg_{size}",
                        f"memory / queued msg ({size:,})",
                        "cost",
                        "bytes",
                    ),
                ),
                rounds,
                backlog.run,
                {"backlog": size, "messages_per_round": backlog.chunk},
                prepare=backlog.prepare,
                stateful=True,
            )
        )
    if celery:
        for pool in ("solo", "prefork"):
            name = f"celery_{pool}"
            title = "Celery e2e, solo" if pool == "solo" else "Celery e2e, prefork -c 2"
            items.append(
                w.Workload(
                    name,
                    (rate(name, title, "celery", "tasks/s"),),
                    rounds,
                    partial(
                        _celery,
                        pool=pool,
                        count=sizes.celery,
                        time_limit_s=sizes.celery_time_limit_s,
                    ),
                    {
                        "tasks": sizes.celery,
                        "pool": pool,
                        "concurrency": 2 if pool == "prefork" else 1,
                        "time_limit_s": sizes.celery_time_limit_s,
                    },
                )
            )
    return items


def _many_queues(broker: Broker, round_index: int, count: int, total: int) -> w.Sample:
    return w.many_queues_rate(broker, f"queues{count}.{round_index}", count, total)


def _processes(
    broker: Broker, round_index: int, processes: int, total: int
) -> w.Sample:
    return w.processes_rate(broker, f"procs{processes}.{round_index}", processes, total)


def _celery(
    broker: Broker,
    round_index: int,
    pool: str,
    count: int,
    time_limit_s: float,
) -> w.Sample:
    label = f"celery.{pool}.{round_index}"
    return w.celery_rate(broker, label, pool, count, time_limit_s)


# -- running ----------------------------------------------------------------------


@dataclass
class Outcome:
    """Samples of one metric on one broker, or the reason there are none."""

    samples: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"
    note: str = ""
    #: Notes of samples that stopped at their time limit.
    partial: list[str] = field(default_factory=list)

    def median(self) -> float | None:
        """Return the median of the samples, or None without samples."""
        return statistics.median(self.samples) if self.samples else None


Results = dict[str, dict[str, Outcome]]


def run_workloads(
    workloads: list[w.Workload],
    brokers: list[Broker],
    log: Any,
    timings: list[dict[str, Any]],
) -> Results:
    """Run every workload on every broker, rotating the broker order by round.

    Appends the duration and the system load average before and after each
    workload to ``timings``: other processes on the machine skew the figures.
    """
    results: Results = {}
    for workload in workloads:
        started = time.monotonic()
        load_before = os.getloadavg()
        for metric in workload.metrics:
            results[metric.key] = {broker.name: Outcome() for broker in brokers}
        failed: set[str] = set()
        if workload.prepare is not None:
            for broker in brokers:
                _attempt(workload, broker, -1, results, failed, log)
        for round_index in range(workload.rounds):
            shift = round_index % len(brokers)
            for broker in brokers[shift:] + brokers[:shift]:
                if broker.name not in failed:
                    _attempt(workload, broker, round_index, results, failed, log)
        if workload.stateful:
            for broker in brokers:
                broker.clean()
        seconds = time.monotonic() - started
        timings.append(
            {
                "workload": workload.name,
                "seconds": round(seconds, 1),
                "loadavg_1min_before": load_before[0],
                "loadavg_1min_after": os.getloadavg()[0],
            }
        )
        log(f"{workload.name}: {seconds:.1f} s, load average {os.getloadavg()[0]:.2f}")
    return results


def _attempt(
    workload: w.Workload,
    broker: Broker,
    round_index: int,
    results: Results,
    failed: set[str],
    log: Any,
) -> None:
    """Take one sample (or the preparation when ``round_index`` is -1)."""
    step = "prepare" if round_index < 0 else f"round {round_index + 1}"
    try:
        if round_index < 0:
            assert workload.prepare is not None
            sample = workload.prepare(broker)
        else:
            sample = workload.run(broker, round_index)
    except w.NotApplicable as exc:
        failed.add(broker.name)
        for metric in workload.metrics:
            outcome = results[metric.key][broker.name]
            outcome.status, outcome.note = "n/a", str(exc)
        log(f"  {workload.name:<18} {step:<8} {broker.name:<14} n/a: {exc}")
        return
    except Exception as exc:
        failed.add(broker.name)
        for metric in workload.metrics:
            outcome = results[metric.key][broker.name]
            outcome.status, outcome.note = "error", f"{type(exc).__name__}: {exc}"
        log(f"  {workload.name:<18} {step:<8} {broker.name:<14} ERROR: {exc}")
        log(traceback.format_exc())
        if not workload.stateful:
            _clean_quietly(broker, log)
        return
    if not workload.stateful:
        _clean_quietly(broker, log)
    if sample is None:
        return
    parts = []
    for metric in workload.metrics:
        outcome = results[metric.key][broker.name]
        value = sample.values.get(metric.key)
        if value is None:
            if not outcome.samples:
                outcome.status = "n/a"
                outcome.note = outcome.note or "not measured on this broker"
            continue
        outcome.status, outcome.note = "ok", ""
        outcome.samples.append(value)
        if sample.details:
            outcome.details.append(sample.details)
        if sample.partial_note:
            outcome.partial.append(sample.partial_note)
        parts.append(f"{metric.key}={format_value(value)}")
    if sample.partial_note:
        parts.append(f"({sample.partial_note})")
    summary = " ".join(parts) or "(nothing measured)"
    log(f"  {workload.name:<18} {step:<8} {broker.name:<14} {summary}")


def _clean_quietly(broker: Broker, log: Any) -> None:
    try:
        broker.clean()
    except Exception as exc:
        log(f"  could not clean {broker.name}: {exc}")


# -- reporting --------------------------------------------------------------------


def format_value(value: float | None) -> str:
    """Format a number with about three significant digits."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def ratio_of(value: float | None, baseline: float | None) -> float | None:
    """Return ``value / baseline``, or None when either is missing or zero."""
    if value is None or not baseline:
        return None
    return value / baseline


def build_report(
    sizes: Sizes,
    workloads: list[w.Workload],
    brokers: list[Broker],
    results: Results,
    elapsed_s: float,
    argv: list[str],
    timings: list[dict[str, Any]],
    package: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the JSON result: machine facts, settings and every metric."""
    metrics = []
    for workload in workloads:
        for metric in workload.metrics:
            outcomes = results.get(metric.key, {})
            baseline = outcomes.get(BASELINE)
            baseline_median = baseline.median() if baseline else None
            per_broker = {}
            for name, outcome in outcomes.items():
                median = outcome.median()
                ratio = ratio_of(median, baseline_median)
                better = None
                if ratio:
                    better = ratio if metric.higher_is_better else 1 / ratio
                per_broker[name] = {
                    "status": outcome.status,
                    "note": outcome.note,
                    "partial_samples": outcome.partial,
                    "samples": outcome.samples,
                    "median": median,
                    "ratio": ratio,
                    "relative_performance": better,
                    "details": outcome.details,
                }
            metrics.append(
                {
                    "key": metric.key,
                    "title": metric.title,
                    "unit": metric.unit,
                    "group": metric.group,
                    "higher_is_better": metric.higher_is_better,
                    "workload": workload.name,
                    "params": workload.params,
                    "rounds": workload.rounds,
                    "results": per_broker,
                }
            )
    return {
        "schema": SCHEMA_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": " ".join(argv),
        "mode": sizes.mode,
        "elapsed_s": round(elapsed_s, 1),
        "baseline": BASELINE,
        "machine": machine_facts(),
        "package": package,
        "brokers": {
            broker.name: {"url": broker.url, "server": broker.server_version}
            for broker in brokers
        },
        "sizes": sizes.__dict__ | {"body_bytes": len(w.BODY)},
        "ratio_definition": (
            "ratio = median / median of kombu's redis transport; "
            "relative_performance = ratio for rates and 1 / ratio for latency "
            "and cost, so that above 1 is better than kombu's redis transport"
        ),
        "metrics": metrics,
        "workload_timings": timings,
    }


def restart_on_snapshot(argv: list[str]) -> NoReturn:
    """Copy the package source to a temporary folder and restart on that copy.

    A run takes minutes, and the source may be edited meanwhile. The Celery
    workers and consumer processes import the package when they start, so the
    copy keeps every process of the run on the same code. The restarted run
    finds the copy first through PYTHONPATH and deletes it when it ends.
    """
    import kombu_redis_streams

    source = Path(kombu_redis_streams.__file__).resolve().parent
    directory = tempfile.mkdtemp(prefix="kombu-streams-bench-")
    shutil.copytree(
        source,
        Path(directory) / "kombu_redis_streams",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    path = os.pathsep.join(filter(None, [directory, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, **{SNAPSHOT_ENV: directory})
    os.execve(sys.executable, [sys.executable, str(Path(__file__)), *argv], env)


def package_facts() -> dict[str, Any]:
    """Describe the measured copy of the package: where from, hash and git state."""
    import kombu_redis_streams

    folder = Path(kombu_redis_streams.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".lua"}:
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return {
        "imported_from": str(folder),
        "source_sha256": digest.hexdigest(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def machine_facts() -> dict[str, Any]:
    """Describe the machine, the interpreter and the library versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for package in (
        "kombu",
        "celery",
        "redis",
        "hiredis",
        "amqp",
        "kombu-redis-streams",
    ):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_total_kib": _meminfo_total(),
        "kernel": platform.release(),
        "loadavg_at_end": list(os.getloadavg()),
        "python": platform.python_version(),
        "packages": versions,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def render_table(report: dict[str, Any]) -> str:
    """Render the medians and the ratios to kombu's redis transport as text."""
    names = list(report["brokers"])
    others = [name for name in names if name != BASELINE]
    header = ["metric", "unit", *names, *(f"{name}/{BASELINE}" for name in others)]
    rows = [header]
    for metric in report["metrics"]:
        arrow = "^" if metric["higher_is_better"] else "v"
        row = [metric["title"], f"{metric['unit']} {arrow}"]
        for name in names:
            result = metric["results"].get(name, {})
            status = result.get("status", "n/a")
            cell = format_value(result["median"]) if status == "ok" else status
            row.append(cell + ("*" if result.get("partial_samples") else ""))
        for name in others:
            ratio = metric["results"].get(name, {}).get("ratio")
            row.append("-" if ratio is None else f"{ratio:.2f}")
        rows.append(row)

    widths = [max(len(row[index]) for row in rows) for index in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if index < 2 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))

    lines.append("")
    lines.append(
        "^ higher is better, v lower is better; ratio = median / median of "
        f"kombu's {BASELINE} transport; * some samples stopped at their time "
        "limit and count only the work done by then."
    )
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(temporary, path)


# -- command line -----------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="small counts, one round (CI smoke test)"
    )
    mode.add_argument(
        "--full", action="store_true", help="also consume from a backlog of 1M"
    )
    parser.add_argument("--out", type=Path, help="JSON result path")
    parser.add_argument(
        "--only",
        help="comma-separated workload names to run (e.g. publish,consume)",
    )
    parser.add_argument(
        "--rounds", type=int, help="override the number of rounds of every workload"
    )
    parser.add_argument(
        "--no-amqp", action="store_true", help="skip RabbitMQ even when reachable"
    )
    parser.add_argument(
        "--no-celery", action="store_true", help="skip the Celery workloads"
    )
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the table and write the JSON result."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    mode = "default"
    if args.quick:
        mode = "quick"
    elif args.full:
        mode = "full"
    sizes = Sizes.for_mode(mode)
    if args.rounds:
        sizes = Sizes(**(sizes.__dict__ | {"rounds": args.rounds}))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS_DIR / f"{stamp}-{mode}.json"
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if SNAPSHOT_ENV not in os.environ:
        restart_on_snapshot(argv)  # does not return
    snapshot = os.environ[SNAPSHOT_ENV]
    try:
        return run_suite(args, argv, sizes, out)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


def run_suite(
    args: argparse.Namespace, argv: list[str], sizes: Sizes, out: Path
) -> int:
    """Run the suite on the package copy, print the table and write the JSON."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    package = package_facts()
    if not package["imported_from"].startswith(os.environ[SNAPSHOT_ENV]):
        log(f"warning: the package was imported from {package['imported_from']}")

    workloads = build_workloads(sizes, celery=not args.no_celery)
    if args.only:
        requested = {name.strip() for name in args.only.split(",")}
        unknown = requested - {workload.name for workload in workloads}
        if unknown:
            log(f"unknown workloads: {', '.join(sorted(unknown))}")
            return 2
        workloads = [workload for workload in workloads if workload.name in requested]

    started = time.monotonic()
    timings: list[dict[str, Any]] = []
    brokers = start_brokers(use_amqp=not args.no_amqp)
    try:
        if AMQP not in {broker.name for broker in brokers} and not args.no_amqp:
            log("RabbitMQ is not reachable at 127.0.0.1:5672: pyamqp is skipped.")
        for broker in brokers:
            log(f"{broker.name:<14} {broker.server_version:<18} {broker.url}")
        results = run_workloads(workloads, brokers, log, timings)
    finally:
        stop_brokers(brokers)
    report = build_report(
        sizes,
        workloads,
        brokers,
        results,
        time.monotonic() - started,
        argv,
        timings,
        package,
    )
    write_json(report, out)
    print(render_table(report))
    print(f"\n{sizes.mode} run, {report['elapsed_s']:.0f} s; result: {out}")
    errors = [
        (metric["key"], name)
        for metric in report["metrics"]
        for name, result in metric["results"].items()
        if result["status"] == "error"
    ]
    if errors:
        listed = ", ".join(f"{key} on {name}" for key, name in errors)
        print(f"errors: {listed}", file=sys.stderr)
    # RabbitMQ is not this project's server: only Redis errors fail the run.
    return 1 if any(name in REDIS_NAMES for _, name in errors) else 0


if __name__ == "__main__":
    sys.exit(main())
