"""Pieces shared by the ``kombu-streams`` commands."""

from __future__ import annotations

import os

import click
from rich.console import Console

#: Width of tables written to a file or a pipe, where no terminal sets one.
PIPE_WIDTH = 120


class CommandError(click.ClickException):
    """A failure the user can fix, printed as one line without a traceback."""

    exit_code = 2


def make_console() -> Console:
    """Return a console on standard output that does not guess highlights.

    Output to a file or a pipe gets :data:`PIPE_WIDTH` columns unless
    ``COLUMNS`` is set, so tables are not squeezed to rich's default of 80.
    """
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console
