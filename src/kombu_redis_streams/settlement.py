"""Settling deliveries: acks, requeues and moves to the dead-letter stream."""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from . import envelope
from .keys import clamp_priority, priority_step
from .plan import Entry, ReadTarget

if TYPE_CHECKING:
    from .plan import Entry

from .channel_state import ChannelState

logger = logging.getLogger(__name__)


class SettlementMixin(ChannelState):
    """Acks, requeues and dead letters for the channel."""

    # Methods of the other parts of the channel, for type checkers.

    def _set_aside(self, entry: Entry, reason: str, deliveries: int = 0) -> None:
        target = entry.target
        dead = self.keys.dead_letter_stream(target.queue)
        logger.error(
            "Entry %s of stream %r was moved to %r (%s); consumption goes on.",
            entry.entry_id,
            target.stream,
            dead,
            reason,
        )
        self._move_to_dead_letters(target, entry.entry_id, reason, deliveries)

    def _move_to_dead_letters(
        self, target: ReadTarget, entry_id: str, reason: str, deliveries: int
    ) -> None:
        self.scripts.dead_letter(
            keys=[target.stream, self.keys.dead_letter_stream(target.queue)],
            args=[
                target.group,
                target.kind,
                entry_id,
                reason,
                target.queue,
                deliveries,
            ],
            client=self.client,
        )

    def dead_letter_delivered(self, delivery_tag: Any, reason: str) -> None:
        """Move a delivered message to its queue's dead-letter stream."""
        delivery = self._deliveries.pop(delivery_tag, None)
        if delivery is None or delivery.target.no_ack:
            return
        logger.error(
            "Entry %s of stream %r was moved to %r (%s).",
            delivery.entry_id,
            delivery.target.stream,
            self.keys.dead_letter_stream(delivery.target.queue),
            reason,
        )
        self._move_to_dead_letters(
            delivery.target, delivery.entry_id, reason, delivery.deliveries
        )

    def settle(self, delivery_tag: Any) -> None:
        """Acknowledge a delivery: XACK it and delete its entry.

        The ack reaches Redis before this returns, unless ``batch_acks`` is
        set: then it goes with the next round trip of the channel.
        """
        delivery = self._deliveries.get(delivery_tag)
        if delivery is None or delivery.target.no_ack:
            self._deliveries.pop(delivery_tag, None)
            return
        target = delivery.target
        if self.options.batch_acks:
            self.ack_later(target, delivery.entry_id)
        else:
            self.runner.run(
                self.scripts.ack,
                [target.stream],
                [target.group, target.kind, delivery.entry_id],
            )
        # Forgotten only once sent: after a failure, close gives it back.
        self._deliveries.pop(delivery_tag, None)

    def ack_later(self, target: Any, entry_id: str) -> None:
        """Put an ack in the buffer that the next round trip sends."""
        if self._acks.add(target, entry_id):
            # The lease thread sends it if no round trip comes soon enough.
            self.connection.leases.wake()

    def flush_acks(self) -> None:
        """Send the collected acks now, in one round trip."""
        pending = self._acks.take()
        if not pending:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for script, keys, args in self._acks.calls(self.scripts.ack, pending):
                    script(keys=keys, args=args, client=pipe)
                pipe.execute()
        except BaseException:
            self._acks.give_back(pending)
            raise

    def requeue_delivered(self, delivery_tag: Any, message: Any) -> None:
        """Append a delivered message to the tail of its queue, flagged redelivered.

        A delivery this channel no longer tracks was settled already, or is
        still pending in Redis, where the reclaim scan finds it: either way
        nothing is published again here.
        """
        delivery = self._deliveries.get(delivery_tag)
        if delivery is None:
            logger.debug(
                "Delivery %r was already settled; nothing to requeue.", delivery_tag
            )
            return
        raw = dict(message._raw)
        raw["headers"] = dict(raw.get("headers") or {})
        raw["properties"] = dict(raw["properties"])
        raw["properties"]["delivery_info"] = dict(raw["properties"]["delivery_info"])
        count_so_far = raw["headers"].get(envelope.DELIVERY_COUNT_HEADER, 1)
        envelope.mark_redelivered(
            raw, count_so_far if isinstance(count_so_far, int) else 1
        )
        self._append_and_settle(delivery.target, delivery.entry_id, raw)
        # Forgotten only once the script ran: after a connection failure the
        # delivery stays known, so close tries again or it stays pending.
        self._deliveries.pop(delivery_tag, None)

    def _append_and_settle(
        self, target: ReadTarget, entry_id: str, raw: dict[str, Any]
    ) -> None:
        body, meta = envelope.encode(raw)
        # NOTE: the redelivery headers add a few dozen bytes. A message that
        # was published that close to proto-max-bulk-len makes the server drop
        # this connection here, and it stays pending until it is reclaimed.
        priority = clamp_priority(raw["properties"].get("priority"))
        step = priority_step(priority, self.options.priority_steps)
        # The channel's own connection does not retry: a retry after a lost
        # reply would append a second copy.
        self.runner.run(
            self.scripts.requeue,
            [target.stream, self.keys.queue_stream(target.queue, step)],
            [
                target.group,
                target.kind,
                entry_id,
                body,
                meta,
                self.connection.routing.expire_ms(target.queue),
            ],
        )

    def _return_buffered(self, predicate: Any = None) -> None:
        """Give entries read but not delivered back to their queues, unchanged."""
        keep: deque[Entry] = deque()
        while self._buffer:
            entry = self._buffer.popleft()
            if predicate is not None and not predicate(entry):
                keep.append(entry)
                continue
            try:
                raw = envelope.decode(entry.fields)
            except envelope.MalformedEntry as exc:
                self._set_aside(entry, str(exc))
                continue
            self._append_and_settle(entry.target, entry.entry_id, raw)
        self._buffer = keep
