"""Publishing: route with the cached tables, then one script call per message."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kombu.exceptions import ChannelError
from kombu.transport.virtual.exchange import FanoutExchange
from redis import exceptions as redis_errors

from . import envelope
from .errors import (
    MessageTooLargeError,
    QueueFullError,
    StaleRoutingError,
    server_error_text,
)
from .keys import clamp_priority, priority_step
from .routing import as_text as _text

if TYPE_CHECKING:
    pass

from .channel_state import ChannelState

logger = logging.getLogger(__name__)

#: How many times a publish reloads the routing tables when they keep changing.
PUBLISH_ATTEMPTS = 5

Call = tuple[Any, list[Any], list[Any]]


@dataclass
class Publication:
    """A message encoded for publishing, with what routing needs."""

    exchange: str
    routing_key: str
    step: int
    body: Any
    meta: str

    def stale_error(self) -> StaleRoutingError:
        """Return the error for bindings that kept changing."""
        return StaleRoutingError(
            f"The bindings of exchange {self.exchange!r} changed "
            f"{PUBLISH_ATTEMPTS} times while a message was being published; it "
            "was not published. Retry it."
        )


class PublishBatch:
    """Publishes collected by ``Producer.batch()`` and sent in one packet.

    Each message is routed when it is added, and the batch sends all publish
    script calls in one round trip when it holds ``max_size`` of them or is
    flushed. A call that finds the routing changed wrote nothing, so it is
    routed again and sent again. A batch that fails partway raises, and
    whether the messages after the failure were written is uncertain, as
    with kombu's own batches.
    """

    def __init__(self, channel: Any, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self._pending: list[tuple[Publication, Call]] = []
        self._aborted = False

    def publish(self, message: dict[str, Any], **kwargs: Any) -> None:
        """Route a message and add its publish call to the batch."""
        if self._aborted:
            raise RuntimeError("Cannot publish through a discarded batch.")
        exchange = kwargs.get("exchange", "")
        routing_key = kwargs.get("routing_key", "")
        publication = self.channel.prepare_publication(message, exchange, routing_key)
        call = self.channel.publish_call(publication)
        if call is not None:
            self._pending.append((publication, call))
        if len(self._pending) >= self.max_size:
            self.flush()

    def flush(self) -> None:
        """Send the collected publishes now, in one round trip.

        Raises:
            QueueFullError: a target was full; the other messages were sent.
            StaleRoutingError: the bindings kept changing for some message.
        """
        pending, self._pending = self._pending, []
        full: list[Exception] = []
        for _ in range(PUBLISH_ATTEMPTS):
            if not pending:
                break
            replies = self.channel.runner.run_many(
                [call for _, call in pending], raise_errors=False
            )
            stale = []
            for (publication, call), reply in zip(pending, replies):
                if isinstance(reply, Exception):
                    raise self.channel.publish_error(call, reply) from reply
                try:
                    written = self.channel.check_publish_reply(call, reply)
                except QueueFullError as exc:
                    full.append(exc)
                    continue
                if not written:
                    stale.append(publication)
            pending = []
            for publication in stale:
                call = self.channel.publish_call(publication)
                if call is not None:
                    pending.append((publication, call))
        if pending:
            raise pending[0][0].stale_error()
        if full:
            raise full[0]

    def discard(self) -> None:
        """Drop the publishes not sent yet."""
        self._aborted = True
        self._pending = []

    def close(self) -> None:
        """Release the batch; unsent publishes are dropped."""
        self._pending = []


class PublishMixin(ChannelState):
    """The publishing side of the channel."""

    # Methods of the other parts of the channel, for type checkers.
    _inplace_augment_message: Any
    _lookup: Any
    deadletter_queue: Any
    sweep_fanout: Any
    typeof: Any

    def basic_publish(
        self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any
    ) -> None:
        """Append the message to the stream of every queue it routes to.

        Raises:
            QueueFullError: ``stream_maxlen`` is set and a target is full.
            StaleRoutingError: the bindings changed on every attempt.
        """
        publication = self.prepare_publication(message, exchange, routing_key)
        for _ in range(PUBLISH_ATTEMPTS):
            call = self.publish_call(publication)
            if call is None:
                return  # the default exchange with no queue name
            try:
                reply = self.runner.run(*call)
            except redis_errors.ResponseError as exc:
                raise self.publish_error(call, exc) from exc
            if self.check_publish_reply(call, reply):
                return
        raise publication.stale_error()

    def prepare_publication(
        self, message: dict[str, Any], exchange: str, routing_key: str
    ) -> Publication:
        """Encode a message once, for one or more publish attempts."""
        self._inplace_augment_message(message, exchange, routing_key)
        expiration = message["properties"].get("expiration")
        if expiration is not None:
            envelope.set_deadline(message, expiration)
        body, meta = envelope.encode(message)
        self._check_size(body, meta)
        priority = clamp_priority(message["properties"].get("priority"))
        step = priority_step(priority, self.options.priority_steps)
        return Publication(exchange, routing_key, step, body, meta)

    def _check_size(self, body: bytes | str, meta: str) -> None:
        """Raise MessageTooLargeError for a field the server would refuse.

        A larger string makes the server close the connection, which reads
        as a lost connection and makes kombu retry the same publish.
        """
        limit = self.connection.max_bulk_bytes
        # A character takes at most 4 bytes in UTF-8, so most text skips
        # the encoding here.
        parts = (("body", body), ("JSON of the headers and properties", meta))
        for name, value in parts:
            size = len(value)
            if isinstance(value, str) and size * 4 > limit:
                size = len(value.encode("utf-8"))
            if size > limit:
                raise MessageTooLargeError(
                    f"The {name} of the message is {size} bytes, more than the "
                    f"server's proto-max-bulk-len of {limit} bytes, so it was not "
                    "published. Store large payloads elsewhere and send a "
                    "reference, or raise proto-max-bulk-len on the server."
                )

    def publish_call(self, publication: Publication) -> Call | None:
        """Route with the cached tables and return the publish script call.

        With no target the script still checks the routing version, so a
        cached empty route is never trusted: a queue bound since is found.
        """
        version, streams = self._route(
            publication.exchange, publication.routing_key, publication.step
        )
        if not streams and not version:
            return None
        keys = [self.keys.routing_version, *(stream for stream, _ in streams)]
        args: list[Any] = [
            version,
            publication.body,
            publication.meta,
            self.options.stream_maxlen or 0,
        ]
        args.extend(expire_ms for _, expire_ms in streams)
        return (self.scripts.publish, keys, args)

    def check_publish_reply(self, call: Call, reply: Any) -> bool:
        """Return True when written, False when the routing was stale.

        Raises:
            QueueFullError: a target stream holds ``stream_maxlen`` entries.
        """
        status = _text(reply[0])
        if status == "ok":
            return True
        if status == "full":
            stream = call[1][int(reply[1])]
            raise QueueFullError(
                f"Stream {stream!r} already contains stream_maxlen="
                f"{self.options.stream_maxlen} entries, so the message was not "
                "published. Consume the backlog or raise stream_maxlen."
            )
        self.connection.routing.invalidate()
        return False

    def publish_error(self, call: Call, exc: Exception) -> Exception:
        """Return the error to raise for a failed publish script call."""
        if "WRONGTYPE" not in str(exc):
            return exc
        names = ", ".join(repr(stream) for stream in call[1][1:])
        error: Exception = ChannelError(
            f"Cannot publish to {names}: a key is not a stream "
            f"({server_error_text(exc)}). "
            "Delete or rename the key, or set global_keyprefix to keep "
            "this transport's keys apart."
        )
        return error

    def create_publish_batch(self, max_size: int) -> PublishBatch:
        """Create a batch for kombu's ``Producer.batch()``."""
        return PublishBatch(self, max_size)

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
        self._check_size(body, meta)
        priority = clamp_priority(message["properties"].get("priority"))
        stream = self.keys.queue_stream(
            queue, priority_step(priority, self.options.priority_steps)
        )
        self.client.xadd(stream, {envelope.BODY_FIELD: body, envelope.META_FIELD: meta})
