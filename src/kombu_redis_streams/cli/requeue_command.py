"""The ``requeue-dead`` command, the one command that writes to the server.

It moves dead-lettered entries of a queue back to the queue, after the cause
that set them aside (a bug in a task, a missing dependency) was fixed.
"""

from __future__ import annotations

import re

import click

from .common import make_console
from .inspect_commands import open_inspector, print_json, server_options

#: A complete stream entry ID, as ``kombu-streams dead`` prints it.
ENTRY_ID = re.compile(r"^\d+-\d+$")


def _check_entry_ids(
    context: click.Context, parameter: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    for value in values:
        if not ENTRY_ID.match(value):
            raise click.BadParameter(
                f"{value!r} is not a stream entry ID; copy one such as "
                "1700000000000-0 from 'kombu-streams dead QUEUE'."
            )
    return values


@click.command("requeue-dead")
@click.argument("queue")
@click.option(
    "--id",
    "entry_ids",
    multiple=True,
    callback=_check_entry_ids,
    help="Dead-letter entry ID to requeue (from 'kombu-streams dead'); repeat "
    "it for several. Without it, the oldest entries are requeued.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Requeue at most this many of the oldest entries. Default: all.",
)
@server_options
def requeue_dead(
    queue: str,
    entry_ids: tuple[str, ...],
    limit: int | None,
    url: str,
    prefix: str,
    group_prefix: str,
    as_json: bool,
) -> None:
    """Move dead-lettered entries of QUEUE back to the queue.

    Each entry goes back to the stream it was read from, with its delivery
    count reset, and leaves the dead-letter stream in the same step. Entries
    that cannot be decoded stay, and the reason is printed.
    """
    if not queue:
        raise click.BadParameter("the queue name is empty.", param_hint="QUEUE")
    if entry_ids and limit is not None:
        raise click.UsageError("Pass either --id or --limit, not both.")
    with open_inspector(url, prefix, group_prefix) as inspector:
        result = inspector.requeue_dead_letters(queue, entry_ids, limit)
    if as_json:
        print_json(result)
        return
    console = make_console()
    console.print(
        f"Requeued {len(result.requeued)} dead-lettered entries of queue "
        f"{queue!r}; {len(result.left)} left in place."
    )
    for left in result.left:
        console.print(f"Entry {left.dead_entry_id} was left: {left.reason}.")
