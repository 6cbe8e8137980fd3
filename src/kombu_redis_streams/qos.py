"""Acknowledgement and prefetch accounting on top of the pending entries list.

A delivered entry stays in its group's pending entries list (PEL) until the
consumer acks it (XACK, then the entry is deleted) or rejects it. Nothing else
has to be recorded: a consumer that dies leaves its entries in the PEL, where
the reclaim scan of another consumer finds them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kombu.transport import virtual

if TYPE_CHECKING:
    from .channel import Channel

logger = logging.getLogger(__name__)


class QoS(virtual.QoS):
    """Prefetch limit and acks for one channel."""

    channel: Channel

    def effective_prefetch(self) -> int:
        """Return the prefetch limit in force: the consumer's, else the option's."""
        return self.prefetch_count or self.channel.options.prefetch_count

    def held(self) -> int:
        """Return how many entries this channel has read and not settled."""
        return len(self._delivered) - len(self._dirty) + self.channel.buffered()

    def can_consume(self) -> bool:
        """Return True while the channel may take another message."""
        limit = self.effective_prefetch()
        return not limit or self.held() < limit

    def can_consume_max_estimate(self) -> int | None:
        """Return how many more messages the channel may take, or None for any."""
        if "can_consume" in vars(self):
            # can_consume was replaced on this instance, as Celery's
            # worker_disable_prefetch does to admit a task only while a pool
            # process is free. That limit is not visible here, so the channel
            # reads one message and calls can_consume again before the next.
            return 1
        limit = self.effective_prefetch()
        if not limit:
            return None
        return max(limit - self.held(), 0)

    def ack(self, delivery_tag: Any) -> None:
        """Acknowledge the entry with XACK and delete it from its stream."""
        self.channel.settle(delivery_tag)
        super().ack(delivery_tag)
        self._credit_freed()

    def _credit_freed(self) -> None:
        transport = self.channel.connection
        if transport is not None:
            transport.notify_credit()

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """Requeue the message at the tail of its queue, or drop it.

        With ``dead_letter_rejected`` a message rejected without requeue goes
        to its queue's dead-letter stream instead of being dropped.
        """
        if requeue:
            message = self._delivered[delivery_tag]
            self.channel.requeue_delivered(delivery_tag, message)
        elif self.channel.options.dead_letter_rejected:
            self.channel.dead_letter_delivered(delivery_tag, "rejected by the consumer")
        else:
            self.channel.settle(delivery_tag)
        self._quick_ack(delivery_tag)
        self._credit_freed()

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        """Give every unacknowledged message back to its queue.

        Each message is appended to its queue and removed from the PEL in one
        script call, so a crash halfway leaves every message either requeued or
        still pending, and never lost.
        """
        self._flush()
        errors: list[tuple[BaseException, Any]] = []
        left_pending = 0
        connection_errors = self.channel.connection.connection_errors
        while self._delivered:
            tag, message = self._delivered.popitem(last=False)
            try:
                self.channel.requeue_delivered(tag, message)
            except connection_errors:
                # Not a failure to report: without a server the message
                # stays in the pending entries list, where another consumer
                # takes it over after visibility_timeout. Reporting it would
                # make kombu dump it to a file for a manual replay.
                left_pending += 1
            except Exception as exc:
                if tag not in self._dirty:
                    errors.append((exc, message))
        if left_pending:
            logger.warning(
                "The server is unreachable, so %d unacked messages stay pending; "
                "another consumer takes them over after visibility_timeout.",
                left_pending,
            )
        return errors
