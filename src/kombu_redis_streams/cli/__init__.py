"""The ``kombu-streams`` command: a self-checking demo, inspection, and a way
to put dead-lettered entries back on their queue.

A subcommand that cannot do its work (server unreachable, invalid URL, a key of
the wrong type) prints one error line and exits with code 2. The demo exits
with code 1 when it finds a lost or duplicated message. Otherwise the exit code
is 0.
"""

from __future__ import annotations

import logging

import click

from .. import __version__

# Modules, not names: importing the command ``demo`` here would hide the
# module ``cli.demo`` behind it.
from . import demo_command, inspect_commands, requeue_command

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="Minimum level of the log messages printed to standard error.",
)
@click.version_option(__version__, prog_name="kombu-streams")
def main(log_level: str) -> None:
    """Run a demo of the Redis Streams transport, inspect its queues, or requeue
    dead-lettered entries."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )


main.add_command(demo_command.demo)
main.add_command(inspect_commands.queues)
main.add_command(inspect_commands.consumers)
main.add_command(inspect_commands.pending)
main.add_command(inspect_commands.dead)
main.add_command(requeue_command.requeue_dead)

__all__ = ["main"]
