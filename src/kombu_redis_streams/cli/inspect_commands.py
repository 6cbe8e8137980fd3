"""The read-only commands: ``queues``, ``consumers``, ``pending`` and ``dead``.

Each command opens an :class:`~kombu_redis_streams.inspect.Inspector`, calls
one of its methods and prints the result as a table, or as JSON with
``--json``. Nothing here writes to the server.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from ..inspect import InspectError, Inspector
from .common import CommandError, make_console

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_LIMIT = 50


def server_options(command: F) -> F:
    """Add the options that name the server and the transport's key layout."""
    options = [
        click.option(
            "--url",
            required=True,
            envvar="KOMBU_STREAMS_URL",
            show_envvar=True,
            help="Broker URL: redis-streams://host:port/db or redis://host:port/db.",
        ),
        click.option(
            "--prefix",
            default="",
            show_default=True,
            help="Key prefix of the transport (its global_keyprefix option).",
        ),
        click.option(
            "--group-prefix",
            default="kombu:",
            show_default=True,
            help="Consumer group prefix of the transport (its "
            "consumer_group_prefix option).",
        ),
        click.option(
            "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


limit_option = click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Maximum number of entries to print.",
)


@contextmanager
def open_inspector(url: str, prefix: str, group_prefix: str) -> Iterator[Inspector]:
    """Yield an inspector on ``url`` and turn its errors into exit code 2."""
    try:
        with Inspector.from_url(url, prefix, group_prefix) as inspector:
            yield inspector
    except InspectError as exc:
        raise CommandError(str(exc)) from None


def print_json(listing: Any) -> None:
    """Print a result dataclass as indented JSON."""
    click.echo(json.dumps(dataclasses.asdict(listing), indent=2))


def seconds(milliseconds: int | None) -> str:
    """Format a duration in ms as seconds with one decimal, or '-' for None."""
    return "-" if milliseconds is None else f"{milliseconds / 1000:.1f}"


@click.command()
@server_options
def queues(url: str, prefix: str, group_prefix: str, as_json: bool) -> None:
    """List every queue with its ready, pending and dead-lettered counts."""
    with open_inspector(url, prefix, group_prefix) as inspector:
        listing = inspector.list_queues()
        address = inspector.address
    if as_json:
        print_json(listing)
        return
    console = make_console()
    for skipped in listing.skipped:
        click.echo(
            f"Skipped key {skipped.key!r}: it matches the queue key layout but "
            f"holds a {skipped.type}, not a stream.",
            err=True,
        )
    if not listing.queues:
        console.print(
            Text(f"No queues found on {address} under key prefix {prefix!r}.")
        )
        return
    table = Table(title=Text(f"Queues on {address}, key prefix {prefix!r}"))
    table.add_column("queue", overflow="fold")
    for name in ("ready", "pending", "consumers", "oldest pending idle (s)", "dead"):
        table.add_column(name, justify="right")
    for summary in listing.queues:
        table.add_row(
            Text(summary.name),
            str(summary.ready),
            str(summary.pending),
            str(summary.consumers),
            seconds(summary.max_pending_idle_ms),
            str(summary.dead_lettered),
        )
    console.print(table)


@click.command()
@click.argument("queue")
@server_options
def consumers(
    queue: str, url: str, prefix: str, group_prefix: str, as_json: bool
) -> None:
    """List the consumers of QUEUE with their pending counts and idle times."""
    with open_inspector(url, prefix, group_prefix) as inspector:
        listing = inspector.list_consumers(queue)
    if as_json:
        print_json(listing)
        return
    console = make_console()
    if not listing.consumers:
        console.print(Text(f"Queue {queue!r} has no consumers."))
        return
    table = Table(title=Text(f"Consumers of queue {queue!r}"))
    table.add_column("consumer", overflow="fold")
    table.add_column("pending", justify="right")
    table.add_column("idle (s)", justify="right")
    if listing.inactive_reported:
        table.add_column("inactive (s)", justify="right")
    table.add_column("streams", overflow="fold")
    for consumer in listing.consumers:
        row: list[str | Text] = [
            Text(consumer.name),
            str(consumer.pending),
            seconds(consumer.idle_ms),
        ]
        if listing.inactive_reported:
            inactive = consumer.inactive_ms
            row.append("never" if inactive is None else seconds(inactive))
        row.append(Text(", ".join(consumer.streams)))
        table.add_row(*row)
    console.print(table)
    if not listing.inactive_reported:
        console.print(
            "The server does not report inactive time; Redis 7.2 or newer and "
            "Valkey do."
        )


@click.command()
@click.argument("queue")
@server_options
@limit_option
def pending(
    queue: str, url: str, prefix: str, group_prefix: str, as_json: bool, limit: int
) -> None:
    """List the delivered and unacknowledged entries of QUEUE, in read order."""
    with open_inspector(url, prefix, group_prefix) as inspector:
        listing = inspector.list_pending(queue, limit)
    if as_json:
        print_json(listing)
        return
    console = make_console()
    if not listing.entries:
        console.print(Text(f"Queue {queue!r} has no pending entries."))
        return
    table = Table(title=Text(f"Pending entries of queue {queue!r}"))
    table.add_column("entry ID")
    table.add_column("stream", overflow="fold")
    table.add_column("consumer", overflow="fold")
    table.add_column("idle (s)", justify="right")
    table.add_column("deliveries", justify="right")
    for entry in listing.entries:
        table.add_row(
            entry.entry_id,
            Text(entry.stream.label),
            Text(entry.consumer),
            seconds(entry.idle_ms),
            str(entry.delivery_count),
        )
    console.print(table)
    console.print(f"Showing {len(listing.entries)} of {listing.total} pending entries.")


@click.command()
@click.argument("queue")
@server_options
@limit_option
def dead(
    queue: str, url: str, prefix: str, group_prefix: str, as_json: bool, limit: int
) -> None:
    """List the dead-lettered entries of QUEUE, oldest first, without bodies."""
    with open_inspector(url, prefix, group_prefix) as inspector:
        listing = inspector.list_dead_letters(queue, limit)
    if as_json:
        print_json(listing)
        return
    console = make_console()
    if not listing.entries:
        console.print(Text(f"Queue {queue!r} has no dead-lettered entries."))
        return
    table = Table(title=Text(f"Dead-lettered entries of queue {queue!r}"))
    table.add_column("entry ID")
    table.add_column("reason", overflow="fold")
    table.add_column("source", overflow="fold")
    table.add_column("headers", overflow="fold")
    for entry in listing.entries:
        table.add_row(
            entry.entry_id, Text(entry.reason), Text(entry.source), Text(entry.summary)
        )
    console.print(table)
    console.print(
        f"Showing {len(listing.entries)} of {listing.total} dead-lettered entries."
    )
