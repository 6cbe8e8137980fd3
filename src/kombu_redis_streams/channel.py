"""The channel: declare, bind, publish, read, acknowledge and requeue."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import deque
from itertools import count
from time import monotonic
from typing import TYPE_CHECKING, Any

from kombu.transport import virtual
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.transport.virtual.exchange import FanoutExchange
from kombu.utils.scheduling import cycle_by_name
from redis import exceptions as redis_errors

from . import envelope
from .acks import AckBuffer
from .fastpath import ScriptRunner
from .message import Message as StreamsMessage
from .plan import Delivery, Entry, ReadTarget, build_plan
from .publishing import PublishMixin
from .qos import QoS as StreamsQoS
from .reader import BlockingReader
from .recovery import RecoveryMixin
from .routing import as_text
from .settlement import SettlementMixin

if TYPE_CHECKING:
    from .transport import Transport

logger = logging.getLogger(__name__)

#: Entries taken per read when no prefetch limit is set.
UNLIMITED_READ_COUNT = 100

#: Seconds between two log lines about the same broken key.
BROKEN_KEY_LOG_INTERVAL_S = 60.0


class Channel(PublishMixin, SettlementMixin, RecoveryMixin, virtual.Channel):
    """A kombu channel whose queues are Redis streams read by consumer groups."""

    QoS = StreamsQoS
    Message = StreamsMessage
    supports_fanout = True
    # Options are validated once by the transport; the virtual channel would
    # copy raw values over them.
    from_transport_options = ()

    connection: Transport
    _qos: StreamsQoS | None

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.options = connection.options
        self.keys = connection.keys
        self.body_encoding = self.options.body_encoding
        self.deadletter_queue = self.options.deadletter_queue
        self.client = connection.redis_client
        self.scripts = connection.scripts
        if self.options.consumer_name:
            self.consumer_name = f"{self.options.consumer_name}.{self.channel_id}"
        else:
            self.consumer_name = (
                f"{socket.gethostname()}.{os.getpid()}.{self.channel_id}."
                f"{uuid.uuid4().hex[:8]}"
            )
        # Streams whose pending entries under a stable name were taken back.
        self._own_recovered: set[str] = set()
        self._next_fanout_sweep: dict[str, float] = {}
        self._next_expiry_refresh: dict[str, float] = {}
        self._next_expired_sweep = 0.0
        self.reader = BlockingReader(connection.pool, self.options.block_timeout_s)
        self.runner = ScriptRunner(connection.pool, self.client)
        self.auto_delete_queues: set[str] = set()
        self._no_ack_queues: set[str] = set()
        self._queue_cycle = cycle_by_name(self.options.queue_order_strategy)()
        self._plan: list[ReadTarget] | None = None
        self._last_ids: dict[str, str] | None = None
        self._buffer: deque[Entry] = deque()
        self._deliveries: dict[Any, Delivery] = {}
        self._acks = AckBuffer()
        self._streams_read: set[tuple[str, str]] = set()
        self._reclaim_cursors: dict[str, str] = {}
        self._next_reclaim = monotonic() + self.options.unacked_restore_interval
        #: Streams whose reclaim scan stopped before the end, to go on with.
        self.reclaim_resume: set[str] = set()
        self._tags = count(1)
        self._broken_keys: dict[str, float] = {}
        self.needs_fetch = True
        connection.check_server()

    # -- exchanges and bindings ------------------------------------------------

    def exchange_declare(
        self,
        exchange: str | None = None,
        type: str = "direct",
        passive: bool = False,
        **kwargs: Any,
    ) -> None:
        """Declare an exchange and store its type in Redis for every process."""
        super().exchange_declare(exchange, type, passive=passive, **kwargs)
        if passive or not exchange:
            return
        type = type or "direct"
        _, _, stored_type = self.connection.routing.lookup(exchange)
        if stored_type != type:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.exchange_types, exchange, type)
                pipe.set(self.keys.routing_version, _new_version())
                pipe.execute()
            self.connection.routing.invalidate()

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        """Return the exchange type, declared here or stored by another process."""
        try:
            kind = self.state.exchanges[exchange]["type"]
        except KeyError:
            _, _, kind = self.connection.routing.lookup(exchange)
        return self.exchange_types.get(kind) or self.exchange_types[default]

    def get_table(self, exchange: str) -> list[tuple[str, str, str]]:
        """Return the bindings of ``exchange`` from the routing cache."""
        _, table, _ = self.connection.routing.lookup(exchange)
        return table

    def _queue_bind(
        self, exchange: str, routing_key: str, pattern: str, queue: str
    ) -> None:
        # The group comes first, so that once the binding is visible no
        # message published to a fanout exchange can miss this queue.
        if isinstance(self.typeof(exchange), FanoutExchange):
            self._create_group(self.keys.fanout_stream(exchange), queue, "$")
        member = self.connection.routing.member(routing_key, pattern, queue)
        if self.client.sadd(self.keys.bindings(exchange), member):
            self.client.set(self.keys.routing_version, _new_version())
            self.connection.routing.invalidate()

    def queue_bind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        """Bind a queue; a binding known to this process is written again.

        Writing again is idempotent and repairs a server that lost its data,
        because kombu declares bindings again when it reconnects.
        """
        exchange = exchange or "amq.direct"
        if self.state.has_binding(queue, exchange, routing_key):
            meta = self.typeof(exchange).prepare_bind(
                queue, exchange, routing_key, arguments
            )
            self._queue_bind(exchange, *meta)
            return
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        """Remove a binding from Redis, and the queue's group on a fanout stream."""
        exchange = exchange or "amq.direct"
        exchange_type = self.typeof(exchange)
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        meta = exchange_type.prepare_bind(queue, exchange, routing_key, arguments)
        member = self.connection.routing.member(*meta)
        fanout_queue = queue if isinstance(exchange_type, FanoutExchange) else None
        self._remove_bindings(exchange, [member], fanout_queue)

    def _remove_bindings(
        self, exchange: str, members: list[Any], fanout_queue: str | None
    ) -> None:
        if members and self.client.srem(self.keys.bindings(exchange), *members):
            self.client.set(self.keys.routing_version, _new_version())
            self.connection.routing.invalidate()
        if fanout_queue is not None:
            stream = self.keys.fanout_stream(exchange)
            try:
                self.client.xgroup_destroy(stream, self.keys.group(fanout_queue))
            except redis_errors.ResponseError:
                pass  # no stream or no group, so no group keeps entries back
            # The destroyed group may have been the last one holding entries.
            self.scripts.trim(keys=[stream], client=self.client)

    # -- queues ----------------------------------------------------------------

    def _new_queue(self, queue: str, auto_delete: bool = False, **kwargs: Any) -> None:
        if auto_delete:
            self.auto_delete_queues.add(queue)
        expire_ms = _queue_expire_ms(kwargs)
        group = self.keys.group(queue)
        with self.client.pipeline(transaction=False) as pipe:
            for stream in self.keys.queue_streams(queue, self.options.priority_steps):
                pipe.xgroup_create(stream, group, "0", mkstream=True)
                if expire_ms:
                    pipe.pexpire(stream, expire_ms)
            for result in pipe.execute(raise_on_error=False):
                _raise_unless_busygroup(result)
        if expire_ms != self.connection.routing.expire_ms(queue):
            self._store_expiry(queue, expire_ms)
        self._plan = None

    def _store_expiry(self, queue: str, expire_ms: int) -> None:
        # Stored in Redis so that every publisher refreshes the expiry.
        # A queue that expires leaves its field and bindings behind until a
        # consumer's reclaim scan sweeps them (sweep_expired_queues).
        with self.client.pipeline(transaction=True) as pipe:
            if expire_ms:
                pipe.hset(self.keys.queue_expires, queue, expire_ms)
            else:
                pipe.hdel(self.keys.queue_expires, queue)
            pipe.set(self.keys.routing_version, _new_version())
            pipe.execute()
        self.connection.routing.invalidate()

    def prepare_queue_arguments(self, arguments: Any, **kwargs: Any) -> Any:
        """Turn ``Queue(expires=...)`` and friends into ``x-`` arguments."""
        return to_rabbitmq_queue_arguments(arguments, **kwargs)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        streams = self.keys.queue_streams(queue, self.options.priority_steps)
        return bool(self.client.exists(*streams))

    def _size(self, queue: str) -> int:
        """Return the number of ready messages: stored and not yet delivered."""
        group = self.keys.group(queue)
        streams = self.keys.queue_streams(queue, self.options.priority_steps)
        with self.client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
                pipe.xpending(stream, group)
            results = pipe.execute(raise_on_error=False)
        ready = 0
        for length, pending in zip(results[::2], results[1::2]):
            if isinstance(length, redis_errors.ResponseError) and "WRONGTYPE" in str(
                length
            ):
                continue  # not a stream, so it contains no message of this queue
            if isinstance(length, Exception):
                raise length
            held = pending["pending"] if isinstance(pending, dict) else 0
            ready += max(length - held, 0)
        return ready

    def _purge(self, queue: str) -> int:
        streams = self.keys.queue_streams(queue, self.options.priority_steps)
        removed = self.scripts.purge(
            keys=streams, args=[self.keys.group(queue)], client=self.client
        )
        return int(removed)

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> None:
        """Delete the queue's streams and its bindings, wherever they were made."""
        if if_empty and self._size(queue):
            return
        for exchange in self._known_exchanges():
            table = self.get_table(exchange)
            members = [
                self.connection.routing.member(rk, pattern, bound)
                for rk, pattern, bound in table
                if bound == queue
            ]
            if members:
                fanout = isinstance(self.typeof(exchange), FanoutExchange)
                self._remove_bindings(exchange, members, queue if fanout else None)
        self.state.queue_bindings_delete(queue)
        streams = self.keys.queue_streams(queue, self.options.priority_steps)
        self.client.delete(*streams, self.keys.dead_letter_stream(queue))
        if self.connection.routing.expire_ms(queue):
            self._store_expiry(queue, 0)
        self.auto_delete_queues.discard(queue)
        self._plan = None

    def _known_exchanges(self) -> set[str]:
        names = {_text(name) for name in self.client.hkeys(self.keys.exchange_types)}
        return names | set(self.state.exchanges)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self.queue_delete(queue)

    # -- consume ---------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Start consuming ``queue``; ``no_ack`` reads its entries with NOACK."""
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        result = super().basic_consume(queue, no_ack, *args, **kwargs)
        self._plan = None
        self.needs_fetch = True
        return result

    def basic_cancel(self, consumer_tag: str) -> Any:
        """Stop consuming; entries read for the queue but not delivered go back."""
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._return_buffered(lambda entry: entry.target.queue == queue)
        self._plan = None
        return result

    def _reset_cycle(self) -> None:
        super()._reset_cycle()
        self._queue_cycle.update(list(dict.fromkeys(self._active_queues)))
        self._plan = None

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Take one message from ``queue`` without a consumer, or return None."""
        targets = self._targets_for([queue], no_ack={queue} if no_ack else set())
        entries, _ = self._fetch(targets, 1)
        for entry in entries:
            raw = self._to_message(entry)
            if raw is None:
                continue
            message = self.Message(raw, channel=self)
            if no_ack:
                self._deliveries.pop(message.delivery_tag, None)
            else:
                self.qos.append(message, message.delivery_tag)
            return message
        return None

    def plan(self) -> list[ReadTarget]:
        """Return the streams this channel reads, in read order."""
        if self._plan is None:
            queues = list(
                dict.fromkeys(self._queue_cycle.consume(len(self._active_queues)))
            )
            self._plan = self._targets_for(queues, self._no_ack_queues)
            if any(
                target.expire_ms and target.stream not in self._next_expiry_refresh
                for target in self._plan
            ):
                # A new queue with a TTL: the lease thread refreshes it from now
                # on. Known ones are scheduled already, and the plan is rebuilt
                # per message when a channel consumes several queues.
                self.connection.leases.wake()
            streams = {target.stream for target in self._plan}
            if self._last_ids is not None and set(self._last_ids) != streams:
                self._last_ids = None
        return self._plan

    def _targets_for(self, queues: list[str], no_ack: set[str]) -> list[ReadTarget]:
        fanout: dict[str, list[str]] = {}
        for queue in queues:
            for exchange, _, _ in self.state.queue_bindings(queue):
                if isinstance(self.typeof(exchange), FanoutExchange):
                    fanout.setdefault(queue, []).append(exchange)
        expires = {queue: self.connection.routing.expire_ms(queue) for queue in queues}
        return build_plan(
            self.keys, queues, self.options.priority_steps, fanout, no_ack, expires
        )

    def is_consuming(self) -> bool:
        """Return True when the channel has consumers."""
        return bool(self._consumers) and not self.closed

    def buffered(self) -> int:
        """Return how many read entries wait to be delivered."""
        return len(self._buffer)

    def credit(self) -> int:
        """Return how many entries the channel may read now."""
        qos = self.qos
        if not qos.can_consume():
            return 0
        estimate = qos.can_consume_max_estimate()
        return UNLIMITED_READ_COUNT if estimate is None else estimate

    def last_ids(self) -> dict[str, str] | None:
        """Return the IDs a blocking read starts from; None before any fetch."""
        return self._last_ids

    def fetch(self) -> int:
        """Read new entries within the prefetch credit into the local buffer."""
        credit = self.credit()
        plan = self.plan()
        if credit <= 0 or not plan:
            return 0
        if self.options.consumer_name:
            taken = self._recover_own(plan, credit)
            if taken:
                self.needs_fetch = True
                return taken
        entries, last_ids = self._fetch(plan, credit)
        self._buffer.extend(entries)
        self._last_ids = last_ids
        self.needs_fetch = bool(entries)
        return len(entries)

    def _fetch(
        self, plan: list[ReadTarget], credit: int
    ) -> tuple[list[Entry], dict[str, str] | None]:
        keys = [target.stream for target in plan]
        args: list[Any] = [self.consumer_name, credit]
        for target in plan:
            args.extend((target.group, target.mode, target.expire_ms))
        # The collected acks ride in the same round trip as the read.
        pending = self._acks.take()
        calls = self._acks.calls(self.scripts.ack, pending)
        calls.append((self.scripts.fetch, keys, args))
        try:
            replies = self.runner.run_many(calls)
        except BaseException:
            self._acks.give_back(pending)
            raise
        raw_entries, raw_last_ids, notes = replies[-1]
        self._streams_read.update((target.stream, target.group) for target in plan)
        broken = self._handle_notes(plan, notes)

        entries = [
            Entry(plan[int(index) - 1], _text(entry_id), fields)
            for index, entry_id, fields in zip(
                raw_entries[::3], raw_entries[1::3], raw_entries[2::3]
            )
        ]
        # A stream the credit did not reach waits from its start: any entry
        # in it wakes the blocking read, and the next fetch sorts it out.
        last_ids = {
            target.stream: _text(last_id) if last_id else "0-0"
            for target, last_id in zip(plan, raw_last_ids)
            if target.stream not in broken
        }
        return entries, last_ids

    def _handle_notes(self, plan: list[ReadTarget], notes: list[Any]) -> set[str]:
        """Log what the fetch script noted; return the streams it could not read."""
        repaired = False
        broken: set[str] = set()
        for index, note in zip(notes[::2], notes[1::2]):
            target = plan[int(index) - 1]
            text = _text(note)
            if text == "created" and target.expire_ms:
                # A queue with x-expires that expired before it was read.
                logger.info(
                    "Consumer group %r of expiring stream %r was created again.",
                    target.group,
                    target.stream,
                )
            elif text == "created":
                repaired = True
                logger.warning(
                    "Consumer group %r of stream %r was missing (a restart without "
                    "persistence, FLUSHALL, DEL or eviction); it was created again "
                    "and consumption goes on.",
                    target.group,
                    target.stream,
                )
            else:
                broken.add(target.stream)
                self._log_broken_key(target.stream, text)
        if repaired:
            self._redeclare_bindings()
        return broken

    def _log_broken_key(self, stream: str, error: str) -> None:
        now = monotonic()
        if now < self._broken_keys.get(stream, 0.0):
            return
        self._broken_keys[stream] = now + BROKEN_KEY_LOG_INTERVAL_S
        logger.error(
            "Cannot read key %r as a stream (%s); it is skipped while the other "
            "streams are consumed. Delete or rename the key to repair the queue.",
            stream,
            error,
        )

    def _redeclare_bindings(self) -> None:
        """Write this process's exchanges and bindings again after a loss."""
        routing = self.connection.routing
        for name, exchange in list(self.state.exchanges.items()):
            if name:
                self.client.hset(self.keys.exchange_types, name, exchange["type"])
        self.client.set(self.keys.routing_version, _new_version())
        routing.invalidate()
        for (queue, exchange, routing_key), arguments in list(
            self.state.bindings.items()
        ):
            meta = self.typeof(exchange).prepare_bind(
                queue, exchange, routing_key, arguments
            )
            self._queue_bind(exchange, *meta)
        logger.warning(
            "Wrote %d exchange types and %d bindings of this process to the server "
            "again, because it had lost them.",
            len(self.state.exchanges),
            len(self.state.bindings),
        )

    def deliver_buffered(self, limit: int | None = None) -> int:
        """Hand buffered entries to their consumers; return how many were handed."""
        delivered = 0
        while self._buffer and (limit is None or delivered < limit):
            entry = self._buffer.popleft()
            raw = self._to_message(entry)
            if raw is None:
                continue
            if len(self._active_queues) > 1:
                self._queue_cycle.rotate(entry.target.queue)
                self._plan = None
            self.connection._deliver(raw, entry.target.queue)
            if entry.target.no_ack:
                self._deliveries.pop(raw["properties"]["delivery_tag"], None)
            delivered += 1
        return delivered

    def _to_message(self, entry: Entry) -> dict[str, Any] | None:
        try:
            message = envelope.decode(entry.fields)
        except envelope.MalformedEntry as exc:
            self._set_aside(entry, str(exc))
            return None
        if envelope.is_expired(message):
            # Per-message TTL: an expired message is dropped when read, the way
            # AMQP brokers drop it at the head of the queue.
            logger.debug(
                "Entry %s of stream %r expired; it is dropped.",
                entry.entry_id,
                entry.target.stream,
            )
            if not entry.target.no_ack:
                self.ack_later(entry.target, entry.entry_id)
            return None
        carried = message["headers"].get(envelope.DELIVERY_COUNT_HEADER, 0)
        carried = carried if isinstance(carried, int) else 0
        total = carried + entry.delivery_count
        limit = self.options.max_deliveries
        if limit is not None and total > limit and not entry.target.no_ack:
            self._set_aside(
                entry,
                f"delivered {total - 1} times without an ack (max_deliveries={limit})",
                total - 1,
            )
            return None
        tag = next(self._tags)
        message["properties"]["delivery_tag"] = tag
        if total > 1:
            envelope.mark_redelivered(message, total)
        self._deliveries[tag] = Delivery(entry.target, entry.entry_id, total)
        return message

    # -- close -------------------------------------------------------------------

    def close(self) -> None:
        """Give back unacked and undelivered messages, then leave the groups.

        Each message goes back in one script call that appends it to its queue
        and removes it from the pending entries list. If the server is gone,
        the messages stay pending and another consumer takes them over after
        ``visibility_timeout``.
        """
        if self.closed:
            return
        connection_errors = self.connection.connection_errors
        try:
            self.flush_acks()
            for consumer_tag in list(self._consumers):
                self.basic_cancel(consumer_tag)
            self._return_buffered()
            if self._qos is not None:
                self._qos.restore_unacked_once()
            self._leave_groups()
            for queue in list(self.auto_delete_queues):
                self.queue_delete(queue)
        except connection_errors as exc:
            logger.warning(
                "Could not give back messages while closing channel %s (%s); they "
                "stay pending and are taken over after visibility_timeout.",
                self.channel_id,
                exc,
            )
        finally:
            self.reader.close()
            self.runner.close()
            super().close()

    def _leave_groups(self) -> None:
        for stream, group in self._streams_read:
            self.scripts.leave(
                keys=[stream], args=[group, self.consumer_name], client=self.client
            )

    def _create_group(self, stream: str, queue: str, start: str) -> None:
        try:
            self.client.xgroup_create(
                stream, self.keys.group(queue), start, mkstream=True
            )
        except redis_errors.ResponseError as exc:
            _raise_unless_busygroup(exc)


def _raise_unless_busygroup(result: Any) -> None:
    if isinstance(result, redis_errors.ResponseError):
        if "BUSYGROUP" in str(result):
            return
        if "WRONGTYPE" in str(result):
            # The fetch skips this key and logs it; other keys keep working.
            logger.error(
                "A key of this queue is not a stream (%s); the queue cannot use it. "
                "Delete or rename the key, or set global_keyprefix to keep this "
                "transport's keys apart.",
                result,
            )
            return
        raise result
    if isinstance(result, Exception):
        raise result


def _new_version() -> str:
    # A random token rather than a counter: after the server loses its data a
    # counter would start again and could match a stale cached value.
    return uuid.uuid4().hex


def _queue_expire_ms(kwargs: dict[str, Any]) -> int:
    try:
        return int(kwargs["arguments"]["x-expires"])
    except (KeyError, TypeError, ValueError):
        return 0


_text = as_text
