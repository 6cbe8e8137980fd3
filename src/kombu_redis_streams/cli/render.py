"""Tables of the read-only commands, printed with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..inspect import ConsumerListing, DeadLetterListing, PendingListing, QueueListing


def seconds(milliseconds: int | None) -> str:
    """Format a duration in ms as seconds with one decimal, or '-' for None."""
    return "-" if milliseconds is None else f"{milliseconds / 1000:.1f}"


def print_queues(
    console: Console, listing: QueueListing, address: str, prefix: str
) -> None:
    """Print one row per queue: ready, pending, consumers, idle time, dead."""
    if not listing.queues:
        console.print(
            Text(f"No queues found on {address} under key prefix {prefix!r}.")
        )
        return

    table = Table(title=Text(f"Queues on {address}, key prefix {prefix!r}"))
    table.add_column("queue", overflow="fold")
    for name in ("ready", "pending", "consumers", "max pending idle (s)", "dead"):
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


def print_consumers(console: Console, listing: ConsumerListing) -> None:
    """Print one row per consumer: pending count, idle and inactive time."""
    if not listing.consumers:
        console.print(Text(f"Queue {listing.queue!r} has no consumers."))
        return

    table = Table(title=Text(f"Consumers of queue {listing.queue!r}"))
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
            "The server does not report inactive time, which Redis 7.2 or newer "
            "and Valkey report."
        )


def print_pending(console: Console, listing: PendingListing) -> None:
    """Print one row per pending entry: ID, stream, consumer, idle, deliveries."""
    if not listing.entries:
        console.print(Text(f"Queue {listing.queue!r} has no pending entries."))
        return

    table = Table(title=Text(f"Pending entries of queue {listing.queue!r}"))
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


def print_dead_letters(console: Console, listing: DeadLetterListing) -> None:
    """Print one row per dead-lettered entry: ID, reason, source and headers."""
    if not listing.entries:
        console.print(Text(f"Queue {listing.queue!r} has no dead-lettered entries."))
        return

    table = Table(title=Text(f"Dead-lettered entries of queue {listing.queue!r}"))
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
