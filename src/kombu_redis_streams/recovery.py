"""Recovery: reclaiming dead consumers' entries, leases, and group hygiene."""

from __future__ import annotations

import logging
import math
from time import monotonic
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors

from .acks import FLUSH_DELAY_S
from .errors import server_error_text
from .plan import FANOUT_MODE, Entry, ReadTarget
from .routing import as_text as _text

if TYPE_CHECKING:
    from .plan import Entry

from .channel_state import ChannelState

logger = logging.getLogger(__name__)


class RecoveryMixin(ChannelState):
    """Reclaim scans, lease renewal and cleanup for the channel."""

    # Methods of the other parts of the channel, for type checkers.
    _acks: Any
    _next_expired_sweep: float
    _next_reclaim: float
    reclaim_resume: set[str]
    queue_delete: Any
    _has_queue: Any
    _log_broken_key: Any
    _next_expiry_refresh: Any
    _next_fanout_sweep: Any
    _own_recovered: Any
    _plan: Any
    _reclaim_cursors: Any
    _remove_bindings: Any
    credit: Any
    flush_acks: Any
    get_table: Any
    plan: Any

    def reclaim_due(self) -> bool:
        """Return True when a reclaim scan should run now.

        That is once per ``unacked_restore_interval``, and as soon as the
        channel has credit again after a scan that left entries behind.
        """
        if self.reclaim_resume and self.credit() > 0:
            return True
        return monotonic() >= self._next_reclaim

    def reclaim(self) -> int:
        """Take over entries idle for ``visibility_timeout`` in other consumers.

        The lease keeper touches the entries this channel has read, so a live
        channel's entries are not idle long enough to be taken. Entries it
        still has are skipped here as a second guard.

        One scan takes at most the channel's prefetch credit. When it stops
        with more idle entries left, the stream goes into
        :attr:`reclaim_resume`, and the scan goes on from where it stopped
        once acks free credit. A dead
        consumer's entries thus come back at the pace they are processed,
        not one prefetch window per interval.

        Returns:
            The number of entries taken over and buffered for delivery.
        """
        # A continued scan visits only the streams the last one left unfinished.
        resume = self.reclaim_resume or None
        continuing = resume is not None
        self.reclaim_resume = set()
        if not continuing:
            self._next_reclaim = monotonic() + self.options.unacked_restore_interval
        min_idle_ms = int(self.options.visibility_timeout * 1000)
        held = {delivery.entry_id for delivery in self._deliveries.values()}
        taken = 0
        for target in self.plan():
            if target.no_ack or (resume is not None and target.stream not in resume):
                continue
            credit = self.credit()
            if credit <= 0:
                # Nothing could be scanned: scan again when credit frees up.
                self.reclaim_resume.add(target.stream)
                continue
            start = self._reclaim_cursors.get(target.stream, "0-0")
            try:
                reply = self.scripts.reclaim(
                    keys=[target.stream],
                    args=[target.group, self.consumer_name, min_idle_ms, start, credit],
                    client=self.client,
                )
            except redis_errors.ResponseError as exc:
                self._log_broken_key(target.stream, server_error_text(exc))
                continue
            next_start, claimed = reply
            next_start = _text(next_start)
            self._reclaim_cursors[target.stream] = next_start
            if next_start != "0-0":
                # The scan stopped at the credit before the end of the pending
                # entries list: the rest is taken as acks free credit.
                self.reclaim_resume.add(target.stream)
            for entry_id, fields, deliveries in zip(
                claimed[::3], claimed[1::3], claimed[2::3]
            ):
                entry_id = _text(entry_id)
                if entry_id in held:
                    continue
                logger.warning(
                    "Entry %s of stream %r was idle for over %.0f s in another "
                    "consumer; it is taken over and delivered again (delivery %d).",
                    entry_id,
                    target.stream,
                    self.options.visibility_timeout,
                    deliveries,
                )
                self._buffer.append(Entry(target, entry_id, fields, int(deliveries)))
                taken += 1
        if not continuing:
            self._prune_consumers()
        # A blocking read cannot tell that its streams vanished (FLUSHALL, a
        # restart without persistence): the next fetch checks and repairs.
        self.needs_fetch = True
        return taken

    def _prune_consumers(self) -> None:
        """Remove consumers that left their groups without closing.

        Only consumers with no pending entry and idle for longer than
        ``visibility_timeout`` go, so no entry becomes unclaimable. Groups on
        fanout streams whose queue no longer exists (it expired, or a client
        died before deleting its auto-delete queue) are removed too.
        """
        idle_ms = int(self.options.visibility_timeout * 1000)
        for target in self.plan():
            self.scripts.prune(
                keys=[target.stream],
                args=[target.group, idle_ms, self.consumer_name],
                client=self.client,
            )
            if target.kind == FANOUT_MODE:
                self.sweep_fanout(target.stream)
        self.sweep_expired_queues()

    def sweep_expired_queues(self) -> None:
        """Remove the bindings of queues that expired, once per ``sweep_interval``.

        A queue with ``x-expires`` whose streams expired leaves its bindings
        and its entry in the expiry hash behind; publishers would keep
        writing to it. Deleting the queue removes both.
        """
        now = monotonic()
        if now < self._next_expired_sweep:
            return
        self._next_expired_sweep = now + self.options.sweep_interval
        queues = [_text(name) for name in self.client.hkeys(self.keys.queue_expires)]
        if not queues:
            return
        first_step = self.options.priority_steps[0]
        with self.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.exists(self.keys.queue_stream(queue, first_step))
            exists = pipe.execute()
        for queue, found in zip(queues, exists):
            if not found:
                logger.info(
                    "Queue %r expired; its bindings and expiry are removed.", queue
                )
                self.queue_delete(queue)

    def sweep_fanout(self, stream: str) -> None:
        """Destroy groups of queues that are gone, once per ``sweep_interval``."""
        now = monotonic()
        if now < self._next_fanout_sweep.get(stream, 0.0):
            return
        self._next_fanout_sweep[stream] = now + self.options.sweep_interval
        try:
            groups = self.client.xinfo_groups(stream)
        except redis_errors.ResponseError:
            return  # no stream: nothing to sweep
        idle_ms = self.options.visibility_timeout * 1000
        for group in groups:
            name = _text(group["name"])
            queue = self.keys.queue_of_group(name)
            if queue is None or self._has_queue(queue):
                continue
            consumers = self.client.xinfo_consumers(stream, name)
            if any(consumer["idle"] < idle_ms for consumer in consumers):
                continue
            exchange = self.keys.exchange_of_fanout_stream(stream)
            logger.warning(
                "Queue %r no longer exists, so its group %r on fanout stream %r is "
                "destroyed and its binding removed.",
                queue,
                name,
                stream,
            )
            members = [
                self.connection.routing.member(rk, pattern, bound)
                for rk, pattern, bound in self.get_table(exchange)
                if bound == queue
            ]
            self._remove_bindings(exchange, members, queue)

    def renew_held(self) -> None:
        """Send collected acks and reset the idle time of every entry held.

        Runs in the lease keeper's thread while the consuming thread changes
        the same collections, so it copies them first and retries the copy if
        a change raced with it.
        """
        self.flush_acks()
        for _ in range(3):
            try:
                held = [(d.target, d.entry_id) for d in list(self._deliveries.values())]
                held += [(e.target, e.entry_id) for e in list(self._buffer)]
                break
            except RuntimeError:
                continue
        else:
            return
        by_stream: dict[tuple[str, str], list[Any]] = {}
        for target, entry_id in held:
            if not target.no_ack:
                by_stream.setdefault((target.stream, target.group), []).append(entry_id)
        if not by_stream:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for (stream, group), ids in by_stream.items():
                pipe.xclaim(stream, group, self.consumer_name, 0, ids, justid=True)
            pipe.execute(raise_on_error=False)

    def maintain(self, now: float) -> float:
        """Do this channel's periodic work that is due at ``now``.

        Runs in the lease keeper's thread: refreshes the TTL of consumed
        queues that have one, and sends acks that waited ``FLUSH_DELAY_S`` in
        the buffer because the consuming thread stopped reading.

        Returns:
            The monotonic() time at which more work is due, or infinity.
        """
        self.refresh_expiry(now)
        oldest = self._acks.oldest
        if oldest is not None and now >= oldest + FLUSH_DELAY_S:
            self.flush_acks()
            oldest = self._acks.oldest
        due = math.inf if oldest is None else oldest + FLUSH_DELAY_S
        for target in list(self._plan or ()):
            if target.expire_ms:
                due = min(due, self._next_expiry_refresh.get(target.stream, now))
        return due

    def refresh_expiry(self, now: float) -> None:
        """Refresh the time to live of consumed queues that have one, when due."""
        due = []
        for target in list(self._plan or ()):
            if target.expire_ms and now >= self._next_expiry_refresh.get(
                target.stream, 0
            ):
                self._next_expiry_refresh[target.stream] = now + target.expire_ms / 3000
                due.append(target)
        if not due:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for target in due:
                pipe.pexpire(target.stream, target.expire_ms)
            pipe.execute()

    def _recover_own(self, plan: list[ReadTarget], credit: int) -> int:
        """Take back what this consumer name left pending before a restart."""
        taken = 0
        for target in plan:
            if target.no_ack or target.stream in self._own_recovered:
                continue
            reply = self.scripts.recover_own(
                keys=[target.stream],
                args=[target.group, self.consumer_name, credit - taken],
                client=self.client,
            )
            for entry_id, fields, deliveries in zip(
                reply[::3], reply[1::3], reply[2::3]
            ):
                entry = Entry(target, _text(entry_id), fields, int(deliveries))
                self._buffer.append(entry)
            taken += len(reply) // 3
            if taken >= credit:
                break
            self._own_recovered.add(target.stream)
        if taken:
            logger.warning(
                "Consumer %r took back %d entries it had pending before a restart; "
                "they are delivered again.",
                self.consumer_name,
                taken,
            )
        return taken
