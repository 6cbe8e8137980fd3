"""The ``kombu-streams demo`` command: run the demo and print its counts."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .celery_demo import CeleryDemoReport, run_celery_demo
from .common import CommandError, make_console
from .demo import DemoError, DemoReport, demo_server, run_demo


@click.command()
@click.option(
    "--url",
    default=None,
    help="Broker URL of a server to run on (redis-streams://host:port/db or "
    "redis://host:port/db). Without it, an embedded valkey-server is started "
    "and removed afterwards.",
)
@click.option(
    "--messages",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    help="Number of messages to publish.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the next message before the missing ones count as lost.",
)
@click.option(
    "--celery",
    "with_celery",
    is_flag=True,
    help="Run the Celery example instead: a real worker, plain, ETA, chord and "
    "broadcast tasks, then print sent, executed, duplicated and lost.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    url: str | None,
    messages: int,
    timeout: float,
    with_celery: bool,
) -> None:
    """Publish through direct, topic and fanout exchanges, consume and count.

    The demo keeps its keys under a key prefix of its own and deletes them at
    the end. It exits with code 0 when every expected message arrived exactly
    once and was acknowledged and no other message arrived, else with code 1.
    """
    console = make_console()
    try:
        with demo_server(url) as (broker_url, server):
            if server is not None:
                console.print(
                    f"Started an embedded valkey-server on 127.0.0.1:{server.port}; "
                    "it is removed when the demo ends."
                )
            if with_celery:
                celery_report = run_celery_demo(broker_url, min(messages, 500), 60.0)
                print_celery_report(console, celery_report)
                ctx.exit(0 if celery_report.ok else 1)
            report = run_demo(broker_url, messages, timeout)
    except DemoError as exc:
        raise CommandError(str(exc)) from None
    print_report(console, report)
    ctx.exit(0 if report.ok else 1)


def print_celery_report(console: Console, report: CeleryDemoReport) -> None:
    """Print the counts of a Celery example run and its verdict."""
    table = Table(title="Celery example on the streams transport")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in report.summary.items():
        table.add_row(name.replace("_", " "), str(value))
    console.print(table)
    if report.ok:
        console.print("PASS: every task ran exactly once with the right result.")
    else:
        console.print("FAIL: a task was lost, ran twice or returned a wrong result.")
        console.print(report.worker_log[-4000:], markup=False)


def print_report(console: Console, report: DemoReport) -> None:
    """Print the per-queue table, the rates and the verdict of a demo run."""
    table = Table(title=f"Demo on {report.server}, key prefix {report.prefix!r}")
    table.add_column("queue", overflow="fold")
    table.add_column("consumer group", overflow="fold")
    for name in ("expected", "received", "duplicates", "lost", "unexpected", "pending"):
        table.add_column(name, justify="right")
    for result in report.queues:
        table.add_row(
            Text(result.queue),
            Text(result.group),
            str(result.expected),
            str(result.received),
            str(result.duplicates),
            str(result.lost),
            str(result.unexpected),
            str(result.pending),
        )
    console.print(table)
    console.print(
        f"Published {report.messages} messages in {report.publish_s:.2f} s "
        f"({report.publish_rate:.0f} msg/s)."
    )
    console.print(
        f"Consumed {report.deliveries} deliveries in {report.consume_s:.2f} s "
        f"({report.consume_rate:.0f} msg/s)."
    )
    counts = (
        f"{report.lost} lost, {report.duplicates} duplicated, "
        f"{report.unexpected} unexpected, {report.pending} pending"
    )
    if report.ok:
        console.print(
            f"PASS: all {report.expected} expected deliveries arrived exactly once "
            f"({counts})."
        )
    else:
        console.print(f"FAIL: {counts} of {report.expected} expected deliveries.")
