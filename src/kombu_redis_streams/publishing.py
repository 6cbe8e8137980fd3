"""Publishing: route with the cached tables, then one script call per message."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kombu.exceptions import ChannelError
from kombu.transport.virtual.exchange import FanoutExchange
from redis import exceptions as redis_errors

from . import envelope
from .errors import QueueFullError, StaleRoutingError
from .keys import clamp_priority, priority_step
from .routing import as_text as _text

if TYPE_CHECKING:
    from collections import deque

    import redis

    from .acks import AckBuffer
    from .fastpath import ScriptRunner
    from .keys import KeySpace
    from .options import TransportOptions
    from .plan import Delivery, Entry
    from .scripts import Scripts
    from .transport import Transport

logger = logging.getLogger(__name__)

#: How many times a publish reloads the routing tables when they keep changing.
PUBLISH_ATTEMPTS = 5


class PublishMixin:
    """The publishing side of the channel."""

    # Set by Channel.__init__; declared here for type checkers.
    connection: Transport
    options: TransportOptions
    keys: KeySpace
    client: redis.Redis
    scripts: Scripts
    runner: ScriptRunner
    consumer_name: str
    _acks: AckBuffer
    _buffer: deque[Entry]
    _deliveries: dict[Any, Delivery]
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
