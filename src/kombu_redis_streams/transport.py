"""The kombu transport: connection setup, ``drain_events`` and the event loop.

Consuming works the same way on both paths. A channel with prefetch credit
runs the fetch script, which claims new entries in priority order. When the
fetch finds nothing, the channel sends ``XREAD BLOCK`` on its own connection
and waits for that socket; a reply means new entries, so the channel fetches
again. An idle channel therefore costs one blocking read per block period.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from time import monotonic
from typing import Any

import redis
from kombu.transport import virtual
from kombu.utils.eventio import ERR, READ
from kombu.utils.eventio import poll as kombu_poll

from .channel import Channel as StreamsChannel
from .connection import connection_params
from .errors import CHANNEL_ERRORS, CONNECTION_ERRORS, check_server_version
from .keys import KeySpace
from .lease import LeaseKeeper
from .options import TransportOptions
from .routing import RoutingCache
from .scripts import Scripts

logger = logging.getLogger(__name__)

#: Seconds a blocking read may be late before its connection counts as dead,
#: when ``health_check_interval`` is 0 (kombu's default interval).
DEFAULT_HEALTH_SLACK_S = 25.0

#: Seconds a wait outlasts the blocking read, for its empty reply to arrive.
REPLY_SLACK_S = 0.25

#: Redis's default proto-max-bulk-len (512 MiB): the largest string it accepts.
DEFAULT_MAX_BULK_BYTES = 512 * 1024 * 1024


class Transport(virtual.Transport):
    """Kombu transport on Redis Streams, a drop-in for kombu's ``redis``."""

    Channel = StreamsChannel

    #: Celery enables fanout events, mingle, gossip and
    #: ``worker_disable_prefetch`` only for these driver types.
    driver_type = "redis"
    driver_name = "redis"
    default_port = 6379
    polling_interval = None
    #: ``rediss-streams://`` URLs set this: TLS with verified certificates.
    tls = False

    implements = virtual.Transport.implements.extend(
        asynchronous=True,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
        # kombu 5.7's Producer.batch(); older kombu ignores the flag.
        batch_publish=True,
    )

    connection_errors = CONNECTION_ERRORS
    channel_errors = CHANNEL_ERRORS

    def __init__(self, client: Any, **kwargs: Any) -> None:
        self.options = TransportOptions.from_mapping(client.transport_options)
        super().__init__(client, **kwargs)
        self.keys = KeySpace(
            self.options.global_keyprefix, self.options.consumer_group_prefix
        )
        self.routing = RoutingCache(
            lambda: self.redis_client, self.keys, self.options.sep
        )
        self._pool: redis.ConnectionPool | None = None
        self._client: redis.Redis | None = None
        self._scripts: Scripts | None = None
        self._server: str | None = None
        #: The server's proto-max-bulk-len, read by check_server.
        self.max_bulk_bytes = DEFAULT_MAX_BULK_BYTES
        self._lock = threading.Lock()
        self._loop: Any = None
        self._timers: list[Any] = []
        self._reader_fds: dict[StreamsChannel, int] = {}
        self._wake_pipe: tuple[int, int] | None = None
        self._waiting_for_credit = False
        self.leases = LeaseKeeper(
            lambda: list(self.channels),
            self.options.visibility_timeout,
            self.connection_errors,
        )

    def create_channel(self, connection: Any) -> StreamsChannel:
        """Create a channel and make sure the lease keeper runs."""
        channel: StreamsChannel = super().create_channel(connection)
        self.leases.start()
        return channel

    # -- clients -----------------------------------------------------------------

    @property
    def pool(self) -> redis.ConnectionPool:
        """The pool of command connections shared by this transport's channels."""
        with self._lock:
            if self._pool is None:
                params = connection_params(self.client, self.options, tls=self.tls)
                self._pool = redis.ConnectionPool(**params)
            return self._pool

    @property
    def redis_client(self) -> redis.Redis:
        """A redis-py client on :attr:`pool`, for short commands.

        ``client`` is taken: kombu's transports name the kombu Connection so.
        """
        if self._client is None:
            self._client = redis.Redis(connection_pool=self.pool)
        return self._client

    @property
    def scripts(self) -> Scripts:
        """The Lua scripts, registered with :attr:`redis_client`."""
        if self._scripts is None:
            self._scripts = Scripts(self.redis_client)
        return self._scripts

    def check_server(self) -> None:
        """Refuse servers older than Redis 6.2 or Valkey 7.2, once per transport."""
        if self._server is not None:
            return
        info = self.redis_client.info("server")
        self._server = check_server_version(info)
        self._warn_about_eviction()
        self.max_bulk_bytes = self._read_max_bulk_bytes()
        logger.debug("Connected to %s.", self._server)

    def _read_max_bulk_bytes(self) -> int:
        try:
            value = self.redis_client.config_get("proto-max-bulk-len").get(
                "proto-max-bulk-len"
            )
            return int(value) if value else DEFAULT_MAX_BULK_BYTES
        except (redis.ResponseError, ValueError):
            return DEFAULT_MAX_BULK_BYTES  # CONFIG disabled: assume the default

    def _warn_about_eviction(self) -> None:
        try:
            policy = self.redis_client.config_get("maxmemory-policy").get(
                "maxmemory-policy"
            )
        except redis.ResponseError:
            return  # CONFIG is often disabled on managed servers
        if policy and policy != "noeviction":
            logger.warning(
                "The server's maxmemory-policy is %r: under memory pressure it may "
                "evict whole queues. Set it to 'noeviction' to keep every message.",
                policy,
            )

    def driver_version(self) -> str:
        """Return the version of redis-py."""
        return str(redis.__version__)

    # -- synchronous consuming ---------------------------------------------------

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver one message, waiting at most ``timeout`` seconds.

        Raises:
            socket.timeout: no message arrived within ``timeout``.
        """
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            if self._deliver_one():
                return
            remaining = None if deadline is None else deadline - monotonic()
            if remaining is not None and remaining <= 0:
                raise socket.timeout()
            self._wait(remaining)

    def _consuming(self) -> list[StreamsChannel]:
        return [channel for channel in self.channels if channel.is_consuming()]

    def _deliver_one(self) -> bool:
        channels = self._consuming()
        for channel in channels:
            if channel.reclaim_due():
                channel.reclaim()
        for channel in channels:
            while channel.buffered():
                if channel.deliver_buffered(limit=1):
                    self._rotate(channel)
                    return True
        for channel in channels:
            if channel.needs_fetch or channel.last_ids() is None:
                while channel.fetch():
                    if channel.deliver_buffered(limit=1):
                        self._rotate(channel)
                        return True
        return False

    def _rotate(self, channel: StreamsChannel) -> None:
        # Serve channels in turn, as kombu's FairCycle does.
        if len(self.channels) > 1 and channel in self.channels:
            self.channels.remove(channel)
            self.channels.append(channel)

    def _wait(self, remaining: float | None) -> None:
        waiting: dict[int, StreamsChannel] = {}
        for channel in self._consuming():
            try:
                fd = self._ensure_read_sent(channel)
            except redis.ConnectionError as exc:
                self._reader_failed(channel, exc)
                continue
            if fd is not None:
                waiting[fd] = channel

        # The blocking read's empty reply ends an idle period. The wait lasts a
        # little longer than the block, so that reply ends it, not the poll,
        # and an idle consumer wakes once per period instead of twice.
        period = self.options.block_timeout_s + REPLY_SLACK_S
        timeout = period if remaining is None else min(remaining, period)
        wake_fd = self._ensure_wake_pipe()[0]
        # kombu's poller: epoll here, select under eventlet or gevent, which
        # remove or replace select.poll.
        poller = kombu_poll()
        for fd in (*waiting, wake_fd):
            poller.register(fd, READ | ERR)

        # An ack from another thread frees credit while this thread waits:
        # it writes to the wake pipe, so the wait ends at once.
        self._waiting_for_credit = True
        try:
            events = poller.poll(timeout) or []
        finally:
            self._waiting_for_credit = False
            poller.close()
        for fd, _ in events:
            if fd == wake_fd:
                self._on_wake()
                continue
            channel = waiting[fd]
            try:
                if channel.reader.read():
                    channel.needs_fetch = True
            except redis.ConnectionError as exc:
                self._reader_failed(channel, exc)

    def notify_credit(self) -> None:
        """Wake a ``drain_events`` that waits, after an ack freed credit."""
        if self._waiting_for_credit:
            self._wake()

    def _ensure_wake_pipe(self) -> tuple[int, int]:
        if self._wake_pipe is None:
            self._wake_pipe = os.pipe()
            for fd in self._wake_pipe:
                os.set_blocking(fd, False)
        return self._wake_pipe

    def _ensure_read_sent(self, channel: StreamsChannel) -> int | None:
        """Send the channel's blocking read if it may read; return its fd."""
        reader = channel.reader
        if reader.in_flight:
            reader.check_alive(self._health_slack_s())
            return reader.fileno()
        last_ids = channel.last_ids()
        if channel.credit() <= 0 or last_ids is None:
            channel.flush_acks()
            return None
        # Acks must not wait for a read that may block for a whole period.
        channel.flush_acks()
        return reader.send(last_ids)

    def _reader_failed(self, channel: StreamsChannel, exc: BaseException) -> None:
        # The blocking read claims nothing, so losing its connection loses no
        # message. The next fetch runs on a command connection: it succeeds
        # after a reconnect, or raises the outage to the caller.
        self.forget_reader(channel)
        channel.reader.close()
        channel.needs_fetch = True
        logger.warning(
            "The blocking read of channel %s failed (%s); it is sent again on a "
            "new connection after the next fetch.",
            channel.channel_id,
            exc,
        )

    def _health_slack_s(self) -> float:
        return self.options.health_check_interval or DEFAULT_HEALTH_SLACK_S

    # -- event loop --------------------------------------------------------------

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Consume through kombu's hub: sockets polled, no thread, no busy loop."""
        for timer in self._timers:
            timer.cancel()
        self._close_wake_pipe()
        self._loop = loop
        self._reader_fds.clear()
        loop.add_reader(self._ensure_wake_pipe()[0], self._on_wake)
        loop.on_tick.add(self._on_tick)
        self._timers = [
            loop.call_repeatedly(
                self.options.unacked_restore_interval, self._on_reclaim_timer
            )
        ]

    def _on_tick(self) -> None:
        delivered = False
        for channel in self._consuming():
            reader = channel.reader
            if reader.in_flight:
                try:
                    reader.check_alive(self._health_slack_s())
                except redis.ConnectionError as exc:
                    self._reader_failed(channel, exc)
                else:
                    # A read sent outside the hub (by drain_events, as Celery's
                    # mingle does) must be polled here too.
                    self._watch_reader(channel)

            # One message per channel and tick, as kombu's redis transport
            # delivers one per readable event: timers and other sockets get
            # their turn between two tasks of a solo worker.
            if channel.buffered():
                delivered |= bool(channel.deliver_buffered(limit=1))
                continue
            if channel.credit() <= 0:
                continue  # an ack frees credit; the tick after it reads again
            if channel.reclaim_resume:
                # A dead consumer's entries are left: take the next share.
                self._reclaim(channel)
                if channel.buffered():
                    delivered |= bool(channel.deliver_buffered(limit=1))
                    continue
            if channel.needs_fetch or channel.last_ids() is None:
                if channel.fetch():
                    delivered |= bool(channel.deliver_buffered(limit=1))
                    continue
            if reader.in_flight:
                continue
            try:
                self._ensure_read_sent(channel)
            except redis.ConnectionError as exc:
                self._reader_failed(channel, exc)
                continue
            self._watch_reader(channel)

        if delivered:
            # The poll of this loop iteration must not sleep: more messages
            # may be buffered, and acks queued with call_soon free credit only
            # when the next iteration runs them.
            self._wake()

    def _watch_reader(self, channel: StreamsChannel) -> None:
        fd = channel.reader.fileno()
        if fd is not None and self._reader_fds.get(channel) != fd:
            self.forget_reader(channel)
            self._loop.add_reader(fd, self._on_readable, channel)
            self._reader_fds[channel] = fd

    def _wake(self) -> None:
        if self._wake_pipe is None:
            return
        try:
            os.write(self._wake_pipe[1], b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending anyway

    def _on_wake(self) -> None:
        if self._wake_pipe is None:
            return
        try:
            os.read(self._wake_pipe[0], 4096)
        except BlockingIOError:
            pass

    def _close_wake_pipe(self) -> None:
        pipe, self._wake_pipe = self._wake_pipe, None
        if pipe is None:
            return
        if self._loop is not None:
            self._loop.remove(pipe[0])
        for fd in pipe:
            os.close(fd)

    def _on_readable(self, channel: StreamsChannel) -> None:
        reader = channel.reader
        if not reader.in_flight:
            # Readable with nothing requested: the server closed the connection.
            self._reader_failed(channel, redis.ConnectionError("closed by the server"))
            return
        try:
            if reader.read():
                channel.needs_fetch = True
        except redis.ConnectionError as exc:
            self._reader_failed(channel, exc)

    def _on_reclaim_timer(self) -> None:
        for channel in self._consuming():
            if self._reclaim(channel):
                self._wake()  # the next ticks deliver what was taken over

    def _reclaim(self, channel: StreamsChannel) -> int:
        """Run a reclaim scan of ``channel``; log a connection failure."""
        try:
            return channel.reclaim()
        except self.connection_errors as exc:
            channel.reclaim_resume.clear()
            logger.warning(
                "The reclaim scan failed (%s); it runs again in %.0f s.",
                exc,
                self.options.unacked_restore_interval,
            )
            return 0

    def forget_reader(self, channel: StreamsChannel) -> None:
        """Remove a channel's blocking-read socket from the event loop."""
        fd = self._reader_fds.pop(channel, None)
        if fd is not None and self._loop is not None:
            self._loop.remove(fd)

    def close_connection(self, connection: Any) -> None:
        """Close every channel, then the connections of the pool."""
        self.leases.stop()
        self._close_wake_pipe()
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        super().close_connection(connection)
        if self._pool is not None:
            self._pool.disconnect()


class TLSTransport(Transport):
    """The transport of ``rediss-streams://`` URLs: TLS, certificates verified."""

    tls = True
