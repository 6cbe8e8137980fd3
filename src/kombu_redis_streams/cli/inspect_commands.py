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

from ..inspect import InspectError, Inspector
from . import render
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


@click.command()
@server_options
def queues(url: str, prefix: str, group_prefix: str, as_json: bool) -> None:
    """List every queue with its ready, pending and dead-lettered counts.

    The consumers column counts the consumers the server lists in the queue's
    group: a consumer appears once it has read an entry, and one that holds
    nothing is removed after visibility_timeout of idleness, so an idle
    worker may not be counted.
    """
    with open_inspector(url, prefix, group_prefix) as inspector:
        listing = inspector.list_queues()
        address = inspector.address
    if as_json:
        print_json(listing)
        return

    for skipped in listing.skipped:
        click.echo(
            f"Skipped key {skipped.key!r}: it matches the queue key layout but "
            f"is a {skipped.type}, not a stream.",
            err=True,
        )
    render.print_queues(make_console(), listing, address, prefix)


@click.command()
@click.argument("queue")
@server_options
def consumers(
    queue: str, url: str, prefix: str, group_prefix: str, as_json: bool
) -> None:
    """List the consumers of QUEUE with their pending counts and idle times.

    These are the consumers the server lists in the queue's group: a consumer
    appears once it has read an entry, and one that holds nothing is removed
    after visibility_timeout of idleness.
    """
    with open_inspector(url, prefix, group_prefix) as inspector:
        listing = inspector.list_consumers(queue)
    if as_json:
        print_json(listing)
    else:
        render.print_consumers(make_console(), listing)


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
    else:
        render.print_pending(make_console(), listing)


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
    else:
        render.print_dead_letters(make_console(), listing)
