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

from kombu.exceptions import ChannelError
from kombu.transport import virtual
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.transport.virtual.exchange import FanoutExchange
from kombu.utils.scheduling import cycle_by_name
from redis import exceptions as redis_errors

from . import envelope
from .acks import AckBuffer
from .errors import QueueFullError, StaleRoutingError
from .fastpath import ScriptRunner
from .keys import clamp_priority, priority_step
from .message import Message as StreamsMessage
from .plan import FANOUT_MODE, Delivery, Entry, ReadTarget, build_plan
from .qos import QoS as StreamsQoS
from .reader import BlockingReader

if TYPE_CHECKING:
    from .transport import Transport

logger = logging.getLogger(__name__)

#: Entries taken per read when no prefetch limit is set.
UNLIMITED_READ_COUNT = 100

#: How many times a publish reloads the routing tables when they keep changing.
PUBLISH_ATTEMPTS = 5

#: Seconds between two sweeps of one fanout stream for groups of gone queues.
FANOUT_SWEEP_INTERVAL_S = 60.0

#: Seconds between two log lines about the same broken key.
BROKEN_KEY_LOG_INTERVAL_S = 60.0


class Channel(virtual.Channel):
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
        """Declare an exchange and store its type where every process sees it."""
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
                pass  # no stream or no group: nothing holds entries back
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
        # NOTE: a queue that expires keeps its field here and its bindings
        # until queue_delete runs; nothing sweeps them yet.
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
                continue  # not a stream: it holds no message of this queue
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

    # -- publish ---------------------------------------------------------------

    def basic_publish(
        self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any
    ) -> None:
        """Append the message to the stream of every queue it routes to.

        Raises:
            QueueFullError: ``stream_maxlen`` is set and a target is full.
            StaleRoutingError: the bindings changed on every attempt.
        """
        self._inplace_augment_message(message, exchange, routing_key)
        expiration = message["properties"].get("expiration")
        if expiration is not None:
            envelope.set_deadline(message, expiration)
        body, meta = envelope.encode(message)
        priority = clamp_priority(message["properties"].get("priority"))
        step = priority_step(priority, self.options.priority_steps)

        for _ in range(PUBLISH_ATTEMPTS):
            version, streams = self._route(exchange, routing_key, step)
            if not streams and not version:
                return  # the default exchange with no queue name
            # With no target the script still checks the version, so a cached
            # empty route is never trusted: a queue bound since is found.
            keys = [self.keys.routing_version, *(stream for stream, _ in streams)]
            args = [version, body, meta, self.options.stream_maxlen or 0]
            args.extend(expire_ms for _, expire_ms in streams)
            try:
                reply = self.runner.run(self.scripts.publish, keys, args)
            except redis_errors.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                names = ", ".join(repr(stream) for stream, _ in streams)
                raise ChannelError(
                    f"Cannot publish to {names}: a key is not a stream ({exc}). "
                    "Delete or rename the key, or set global_keyprefix to keep "
                    "this transport's keys apart."
                ) from exc
            status = _text(reply[0])
            if status == "ok":
                return
            if status == "full":
                stream = streams[int(reply[1]) - 1][0]
                raise QueueFullError(
                    f"Stream {stream!r} already holds stream_maxlen="
                    f"{self.options.stream_maxlen} entries, so the message was not "
                    "published. Consume the backlog or raise stream_maxlen."
                )
            self.connection.routing.invalidate()
        raise StaleRoutingError(
            f"The bindings of exchange {exchange!r} changed {PUBLISH_ATTEMPTS} times "
            "while a message was being published; it was not published. Retry it."
        )

    def _route(
        self, exchange: str, routing_key: str, step: int
    ) -> tuple[str, list[tuple[str, int]]]:
        if not exchange:
            queue = routing_key or self.deadletter_queue
            if not queue:
                return "", []
            return "", [
                (
                    self.keys.queue_stream(queue, step),
                    self.connection.routing.expire_ms(queue),
                )
            ]

        version, table, _ = self.connection.routing.lookup(exchange)
        if isinstance(self.typeof(exchange), FanoutExchange) and table:
            # Publishers sweep too, so groups of dead receivers cannot hold
            # entries back while no receiver is alive to sweep them.
            self.sweep_fanout(self.keys.fanout_stream(exchange))
            return version, [(self.keys.fanout_stream(exchange), 0)]
        queues = self._lookup(exchange, routing_key)
        streams = [
            (
                self.keys.queue_stream(queue, step),
                self.connection.routing.expire_ms(queue),
            )
            for queue in dict.fromkeys(queues)
        ]
        return version, streams

    def _next_delivery_tag(self) -> None:
        # kombu makes a uuid per publish; each read makes its own tag here.
        return None

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        # kombu's virtual layer declares this hook; basic_publish routes and
        # appends itself, with the routing version check.
        body, meta = envelope.encode(message)
        priority = clamp_priority(message["properties"].get("priority"))
        stream = self.keys.queue_stream(
            queue, priority_step(priority, self.options.priority_steps)
        )
        self.client.xadd(stream, {envelope.BODY_FIELD: body, envelope.META_FIELD: meta})

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
                self._acks.add(entry.target, entry.entry_id)
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

    # -- acknowledge and requeue -----------------------------------------------

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
            self._acks.add(target, delivery.entry_id)
        else:
            self.runner.run(
                self.scripts.ack,
                [target.stream],
                [target.group, target.kind, delivery.entry_id],
            )
        # Forgotten only once sent: after a failure, close gives it back.
        self._deliveries.pop(delivery_tag, None)

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

    # -- recovery ----------------------------------------------------------------

    def reclaim_due(self) -> bool:
        """Return True when the reclaim scan interval has passed."""
        return monotonic() >= self._next_reclaim

    def reclaim(self) -> int:
        """Take over entries idle for ``visibility_timeout`` in other consumers.

        The lease keeper touches the entries this channel holds, so a live
        channel's entries are never idle long enough to be taken; entries it
        still holds are skipped here as a second guard.

        Returns:
            The number of entries taken over and buffered for delivery.
        """
        self._next_reclaim = monotonic() + self.options.unacked_restore_interval
        min_idle_ms = int(self.options.visibility_timeout * 1000)
        held = {delivery.entry_id for delivery in self._deliveries.values()}
        taken = 0
        for target in self.plan():
            if target.no_ack:
                continue
            credit = self.credit()
            if credit <= 0:
                break
            start = self._reclaim_cursors.get(target.stream, "0-0")
            try:
                reply = self.scripts.reclaim(
                    keys=[target.stream],
                    args=[target.group, self.consumer_name, min_idle_ms, start, credit],
                    client=self.client,
                )
            except redis_errors.ResponseError as exc:
                self._log_broken_key(target.stream, str(exc))
                continue
            next_start, claimed = reply
            self._reclaim_cursors[target.stream] = _text(next_start)
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

    def sweep_fanout(self, stream: str) -> None:
        """Destroy groups of queues that are gone, at most once a minute."""
        now = monotonic()
        if now < self._next_fanout_sweep.get(stream, 0.0):
            return
        self._next_fanout_sweep[stream] = now + FANOUT_SWEEP_INTERVAL_S
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


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
