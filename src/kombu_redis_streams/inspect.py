"""Read the state of the transport's queues from the server, without consuming.

Every number comes from the server's own bookkeeping (XINFO, XPENDING, XLEN and
XRANGE on the keys described in :mod:`kombu_redis_streams.keys`), so it is right
whether or not a consumer runs. Nothing here writes to the server.

A queue is made of up to ten priority streams (``{q}`` for step 0 and ``{q}:1``
to ``{q}:9``), its dead-letter stream ``{q}:dead``, and one consumer group per
fanout exchange it is bound to, on that exchange's stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu import Connection

from .dead_letters import RequeueResult, requeue_dead_letters
from .keys import NAMESPACE, KeySpace

logger = logging.getLogger(__name__)

#: Suffixes of queue stream keys: priority steps 1 to 9 (step 0 has none).
STEP_SUFFIXES = {str(step): step for step in range(1, 10)}
DEAD_SUFFIX = "dead"

#: Entries read per XPENDING or XRANGE call while scanning.
SCAN_PAGE_SIZE = 1000

#: Pending entries per stream scanned for the longest idle time.
MAX_PENDING_SCAN = 100_000

#: Seconds the inspection client waits to connect and for each reply.
CONNECT_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 30.0

#: Scheme of each URL accepted, mapped to the scheme of this transport.
URL_SCHEMES = {
    "redis": "redis-streams",
    "rediss": "rediss-streams",
    "redis+socket": "redis-streams+socket",
    "redis-streams": "redis-streams",
    "rediss-streams": "rediss-streams",
    "redis-streams+socket": "redis-streams+socket",
}


class InspectError(Exception):
    """A failure to read the server's state, with a message fit for the user."""


@dataclass(frozen=True)
class QueueStream:
    """One stream that a queue reads through its consumer group."""

    key: str
    #: ``"step 3"`` for a priority stream, ``"fanout X"`` for exchange X.
    label: str
    #: Priority step of a queue stream, or None for a fanout stream.
    step: int | None
    #: Fanout exchange whose stream this is, or None for a queue stream.
    exchange: str | None = None


@dataclass(frozen=True)
class QueueSummary:
    """Counts of one queue, added up over its priority and fanout streams."""

    name: str
    streams: tuple[QueueStream, ...]
    #: Entries stored and not yet delivered to any consumer of the queue.
    ready: int
    #: Entries delivered and not yet acknowledged.
    pending: int
    #: Distinct consumer names in the queue's group, over all its streams.
    consumers: int
    #: Maximum idle time of a pending entry in ms, or None when nothing is pending.
    max_pending_idle_ms: int | None
    #: Entries in the queue's dead-letter stream.
    dead_lettered: int


@dataclass(frozen=True)
class SkippedKey:
    """A key that matches the queue key layout but is not a stream."""

    key: str
    type: str


@dataclass(frozen=True)
class QueueListing:
    """Every queue found on the server, and the keys skipped while looking."""

    queues: list[QueueSummary]
    skipped: list[SkippedKey] = field(default_factory=list)


@dataclass(frozen=True)
class ConsumerSummary:
    """One consumer of a queue's group, added up over the queue's streams."""

    name: str
    pending: int
    #: Milliseconds since the consumer last tried to read or claim.
    idle_ms: int
    #: Milliseconds since the consumer last read or claimed an entry. None
    #: when the server does not report it (Redis before 7.2) or the consumer
    #: never got an entry.
    inactive_ms: int | None
    #: Labels of the streams where the consumer is registered.
    streams: tuple[str, ...]


@dataclass(frozen=True)
class ConsumerListing:
    """The consumers of one queue."""

    queue: str
    consumers: list[ConsumerSummary]
    #: True when the server reported inactive time for any consumer (Redis 7.2
    #: or newer and Valkey report it).
    inactive_reported: bool


@dataclass(frozen=True)
class PendingEntry:
    """An entry delivered to a consumer and not yet acknowledged."""

    entry_id: str
    stream: QueueStream
    consumer: str
    idle_ms: int
    delivery_count: int


@dataclass(frozen=True)
class PendingListing:
    """The first pending entries of a queue, in read order, and their total."""

    queue: str
    entries: list[PendingEntry]
    total: int


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered entry, described without its body."""

    entry_id: str
    reason: str
    queue: str
    #: The stream and entry ID the entry was moved from.
    source: str
    #: Celery's task name (header ``task``), when present.
    task_name: str | None
    #: Celery's task ID (header ``id``) or the correlation ID, when present.
    task_id: str | None
    #: Short description of the headers, or why the entry has none.
    summary: str


@dataclass(frozen=True)
class DeadLetterListing:
    """The oldest dead-lettered entries of a queue, and their total."""

    queue: str
    entries: list[DeadLetter]
    total: int


def normalize_url(url: str) -> str:
    """Turn a ``redis://`` URL into the matching ``redis-streams://`` URL.

    ``redis-streams://``, ``rediss-streams://`` and their ``+socket`` forms
    are returned unchanged.

    Raises:
        InspectError: the URL has another scheme. The message names the scheme
            only, because the rest of the URL may contain a password.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in URL_SCHEMES:
        scheme_text = scheme if separator else "(none)"
        raise InspectError(
            f"Invalid URL scheme {scheme_text!r}: expected a URL such as "
            "redis-streams://127.0.0.1:6379/0 or redis://127.0.0.1:6379/0."
        )
    return f"{URL_SCHEMES[scheme.lower()]}://{rest}"


def server_address(client: redis.Redis) -> str:
    """Return ``host:port/db`` or the socket path of a client, without credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix socket {kwargs['path']} (db {kwargs.get('db', 0)})"
    host = kwargs.get("host", "127.0.0.1")
    return f"{host}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def glob_escape(text: str) -> str:
    """Escape the characters that SCAN MATCH treats as glob syntax."""
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)


class Inspector:
    """Read queues, consumers, pending and dead-lettered entries from a server."""

    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys
        self.address = server_address(client)
        self._connection: Connection | None = None

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "", group_prefix: str = "kombu:"
    ) -> Inspector:
        """Open a client on ``url`` with the transport's URL grammar.

        ``url`` may use the ``redis://`` or ``redis-streams://`` scheme. The
        client connects on its first command.

        Raises:
            InspectError: the URL or an option is invalid.
        """
        # Importing this module imported the package, which registered the
        # redis-streams:// schemes with kombu.
        options = {
            "global_keyprefix": prefix,
            "consumer_group_prefix": group_prefix,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": REPLY_TIMEOUT_S,
        }
        try:
            connection = Connection(normalize_url(url), transport_options=options)
            client = connection.transport.redis_client
        except ValueError as exc:
            raise InspectError(str(exc)) from None
        inspector = cls(client, KeySpace(prefix, group_prefix))
        inspector._connection = connection
        return inspector

    def close(self) -> None:
        """Close the connections of the client."""
        self.client.connection_pool.disconnect()
        if self._connection is not None:
            self._connection.release()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def server_errors(self) -> Iterator[None]:
        """Turn redis-py's errors into an :class:`InspectError` for the user."""
        try:
            yield
        except redis.AuthenticationError as exc:
            raise InspectError(
                f"The server at {self.address} rejected the credentials ({exc}). "
                "Check the user name and password in the URL."
            ) from None
        except redis.TimeoutError as exc:
            raise InspectError(
                f"The server at {self.address} did not reply in time ({exc}). "
                "Check that the server is running and not overloaded, then retry."
            ) from None
        except redis.ConnectionError as exc:
            raise InspectError(
                f"Cannot connect to the server at {self.address} ({exc}). Check "
                "that the server is running and that the URL names its host and port."
            ) from None
        except redis.ResponseError as exc:
            raise InspectError(
                f"The server at {self.address} returned an error ({exc}). Check "
                "that the URL names a server and database this transport uses."
            ) from None
        except redis.RedisError as exc:
            raise InspectError(
                f"Reading from the server at {self.address} failed ({exc}). Check "
                "that the URL names a Redis or Valkey server, then retry."
            ) from None

    # -- listing -------------------------------------------------------------------

    def list_queues(self) -> QueueListing:
        """Find every queue under the key prefix and summarize each one.

        Keys that match the queue key layout but are not streams are skipped
        and listed in the result.
        """
        with self.server_errors():
            found: dict[str, list[QueueStream]] = {}
            dead: set[str] = set()
            skipped: list[SkippedKey] = []
            pattern = glob_escape(self.keys.prefix) + "{*"
            for key, key_type in self._scan_with_types(pattern):
                parsed = self._parse_queue_key(key)
                if parsed is None:
                    continue
                if key_type != "stream":
                    skipped.append(SkippedKey(key, key_type))
                    continue
                queue, step = parsed
                if step is None:
                    dead.add(queue)
                    found.setdefault(queue, [])
                else:
                    found.setdefault(queue, []).append(_step_stream(key, step))
            for queue, stream in self._fanout_streams():
                found.setdefault(queue, []).append(stream)
            summaries = [
                self._summarize(queue, _ordered(streams), queue in dead)
                for queue, streams in sorted(found.items())
            ]
        return QueueListing(summaries, sorted(skipped, key=lambda item: item.key))

    def queue_summary(self, queue: str) -> QueueSummary:
        """Summarize one queue.

        Raises:
            InspectError: the queue has no stream, or one of its keys is not a
                stream, or the server cannot be read.
        """
        with self.server_errors():
            streams, has_dead = self._queue_streams(queue)
            return self._summarize(queue, streams, has_dead)

    def list_consumers(self, queue: str) -> ConsumerListing:
        """List the consumers registered in the queue's group on any of its streams.

        Raises:
            InspectError: as :meth:`queue_summary`.
        """
        group = self.keys.group(queue)
        merged: dict[str, dict[str, Any]] = {}
        reported = False
        with self.server_errors():
            streams, _ = self._queue_streams(queue)
            for stream in streams:
                try:
                    replies = self.client.xinfo_consumers(stream.key, group)
                except redis.ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        continue  # a stream written before the queue was declared
                    raise
                for reply in replies:
                    reported = reported or "inactive" in reply
                    _merge_consumer(merged, reply, stream.label)
        consumers = [
            ConsumerSummary(
                name=name,
                pending=values["pending"],
                idle_ms=values["idle"],
                inactive_ms=values["inactive"],
                streams=tuple(values["streams"]),
            )
            for name, values in sorted(merged.items())
        ]
        return ConsumerListing(queue, consumers, reported)

    def list_pending(self, queue: str, limit: int) -> PendingListing:
        """List the first ``limit`` pending entries of a queue, in read order.

        Read order is fanout streams first, then priority steps from the lowest,
        and entry ID inside each stream.

        Raises:
            InspectError: as :meth:`queue_summary`.
        """
        group = self.keys.group(queue)
        entries: list[PendingEntry] = []
        total = 0
        with self.server_errors():
            streams, _ = self._queue_streams(queue)
            for stream in streams:
                info = self._group_info(stream.key, group)
                if info is None:
                    continue
                total += int(info["pending"])
                remaining = limit - len(entries)
                if remaining <= 0 or not info["pending"]:
                    continue
                replies = self.client.xpending_range(
                    stream.key, group, "-", "+", remaining
                )
                entries.extend(
                    PendingEntry(
                        entry_id=_text(reply["message_id"]),
                        stream=stream,
                        consumer=_text(reply["consumer"]),
                        idle_ms=int(reply["time_since_delivered"]),
                        delivery_count=int(reply["times_delivered"]),
                    )
                    for reply in replies
                )
        return PendingListing(queue, entries, total)

    def list_dead_letters(self, queue: str, limit: int) -> DeadLetterListing:
        """List the oldest ``limit`` dead-lettered entries of a queue.

        Bodies are never read into the result: only the dead-letter fields and
        a summary of the ``meta`` field's headers.

        Raises:
            InspectError: as :meth:`queue_summary`.
        """
        key = self.keys.dead_letter_stream(queue)
        with self.server_errors():
            _, has_dead = self._queue_streams(queue)
            if not has_dead:
                return DeadLetterListing(queue, [], 0)
            total = int(self.client.xlen(key))
            replies = self.client.xrange(key, "-", "+", count=limit) or []
        entries = [
            _dead_letter(_text(entry_id), fields) for entry_id, fields in replies
        ]
        return DeadLetterListing(queue, entries, total)

    def requeue_dead_letters(
        self, queue: str, entry_ids: Sequence[str] = (), limit: int | None = None
    ) -> RequeueResult:
        """Move dead-lettered entries of a queue back to its streams.

        The only method here that writes; see :mod:`~kombu_redis_streams.dead_letters`.

        Raises:
            InspectError: as :meth:`queue_summary`.
        """
        group = self.keys.group(queue)
        with self.server_errors():
            streams, _ = self._queue_streams(queue)
            targets = [
                stream.key
                for stream in streams
                if stream.step is not None
                and self._group_info(stream.key, group) is not None
            ]
            return requeue_dead_letters(
                self.client, self.keys, queue, targets, entry_ids, limit
            )

    # -- keys ----------------------------------------------------------------------

    def _scan_with_types(self, pattern: str) -> Iterator[tuple[str, str]]:
        batch: list[str] = []
        for raw_key in self.client.scan_iter(match=pattern, count=SCAN_PAGE_SIZE):
            batch.append(_text(raw_key))
            if len(batch) >= SCAN_PAGE_SIZE:
                yield from self._with_types(batch)
                batch = []
        yield from self._with_types(batch)

    def _with_types(self, keys: list[str]) -> Iterator[tuple[str, str]]:
        if not keys:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            types = pipe.execute()
        for key, key_type in zip(keys, types):
            if _text(key_type) != "none":  # deleted since the scan saw it
                yield key, _text(key_type)

    def _parse_queue_key(self, key: str) -> tuple[str, int | None] | None:
        """Return the queue and step of a queue key (None step: dead-letter)."""
        opening = self.keys.prefix + "{"
        if not key.startswith(opening):
            return None
        inner = key[len(opening) :]
        if inner.endswith("}") and len(inner) > 1:
            return inner[:-1], 0
        name, separator, suffix = inner.rpartition("}:")
        if not separator or not name:
            return None
        if suffix == DEAD_SUFFIX:
            return name, None
        if suffix in STEP_SUFFIXES:
            return name, STEP_SUFFIXES[suffix]
        return None

    def _fanout_streams(self) -> Iterator[tuple[str, QueueStream]]:
        """Yield each queue that has a group on a fanout stream, with that stream.

        Fanout streams are found with SCAN, so each call walks the key space.
        """
        opening = f"{self.keys.prefix}{NAMESPACE}.fanout.{{"
        for key, key_type in self._scan_with_types(glob_escape(opening) + "*"):
            if key_type != "stream" or not key.endswith("}"):
                continue
            exchange = key[len(opening) : -1]
            for group in self.client.xinfo_groups(key):
                queue = self.keys.queue_of_group(_text(group["name"]))
                if queue is not None:
                    yield queue, QueueStream(key, f"fanout {exchange}", None, exchange)

    def _queue_streams(self, queue: str) -> tuple[tuple[QueueStream, ...], bool]:
        """Return the existing streams of a queue and whether it has dead letters.

        Raises:
            InspectError: no key of the queue exists, or one is not a stream.
        """
        candidates = {self.keys.queue_stream(queue, step): step for step in range(10)}
        dead_key = self.keys.dead_letter_stream(queue)
        keys = [*candidates, dead_key]
        streams: list[QueueStream] = []
        has_dead = False
        for key, key_type in self._with_types(keys):
            if key_type != "stream":
                raise InspectError(
                    f"Key {key!r} of queue {queue!r} on {self.address} is a "
                    f"{key_type}, not a stream, so the queue cannot be read. Delete "
                    "or rename the key, or pass the --prefix the transport uses."
                )
            if key == dead_key:
                has_dead = True
            else:
                streams.append(_step_stream(key, candidates[key]))
        streams.extend(
            stream for owner, stream in self._fanout_streams() if owner == queue
        )
        if not streams and not has_dead:
            prefix = self.keys.prefix
            raise InspectError(
                f"Queue {queue!r} was not found on {self.address} under key prefix "
                f"{prefix!r}. Run `kombu-streams queues` to list the queues, or "
                "pass the --prefix the transport uses (its global_keyprefix)."
            )
        return _ordered(streams), has_dead

    # -- counts --------------------------------------------------------------------

    def _group_info(self, key: str, group: str) -> dict[str, Any] | None:
        try:
            groups = self.client.xinfo_groups(key)
        except redis.ResponseError as exc:
            if "no such key" in str(exc):
                return None  # deleted since the scan listed it
            raise
        for info in groups:
            if _text(info["name"]) == group:
                return dict(info)
        return None

    def _summarize(
        self, queue: str, streams: tuple[QueueStream, ...], has_dead: bool
    ) -> QueueSummary:
        group = self.keys.group(queue)
        ready = 0
        pending = 0
        consumers: set[str] = set()
        max_idle: int | None = None
        for stream in streams:
            info = self._group_info(stream.key, group)
            stream_pending = int(info["pending"]) if info else 0
            pending += stream_pending
            ready += self._ready(stream, info, stream_pending)
            if info is None:
                continue
            if int(info["consumers"]):
                for reply in self.client.xinfo_consumers(stream.key, group):
                    consumers.add(_text(reply["name"]))
            if stream_pending:
                idle = self._max_pending_idle(stream.key, group)
                max_idle = idle if max_idle is None else max(max_idle, idle)
        dead_lettered = 0
        if has_dead:
            dead_lettered = int(self.client.xlen(self.keys.dead_letter_stream(queue)))
        return QueueSummary(
            name=queue,
            streams=streams,
            ready=ready,
            pending=pending,
            consumers=len(consumers),
            max_pending_idle_ms=max_idle,
            dead_lettered=dead_lettered,
        )

    def _ready(
        self, stream: QueueStream, info: dict[str, Any] | None, pending: int
    ) -> int:
        """Count the entries of a stream that the queue's group has not delivered."""
        if stream.exchange is None:
            # The group is the only reader of a queue stream, and acknowledged
            # entries are deleted, so every other entry is ready.
            return max(int(self.client.xlen(stream.key)) - pending, 0)
        if info is None:
            return 0
        if info.get("lag") is not None:
            return int(info["lag"])
        # The server reports no lag (before Redis 7.0, or after XDEL): count
        # the entries after the group's last delivered ID.
        start = "(" + _text(info["last-delivered-id"])
        count = 0
        while True:
            batch = self.client.xrange(stream.key, start, "+", count=SCAN_PAGE_SIZE)
            batch = batch or []
            count += len(batch)
            if len(batch) < SCAN_PAGE_SIZE:
                return count
            start = "(" + _text(batch[-1][0])

    def _max_pending_idle(self, key: str, group: str) -> int:
        """Return the maximum idle time of the group's pending entries, in ms."""
        longest = 0
        start = "-"
        scanned = 0
        # NOTE: past MAX_PENDING_SCAN entries the result covers the oldest IDs
        # only, so a longer idle time further on goes unreported.
        while scanned < MAX_PENDING_SCAN:
            batch = self.client.xpending_range(key, group, start, "+", SCAN_PAGE_SIZE)
            for reply in batch:
                longest = max(longest, int(reply["time_since_delivered"]))
            scanned += len(batch)
            if len(batch) < SCAN_PAGE_SIZE:
                break
            start = "(" + _text(batch[-1]["message_id"])
        return longest


def _step_stream(key: str, step: int) -> QueueStream:
    return QueueStream(key, f"step {step}", step)


def _ordered(streams: list[QueueStream]) -> tuple[QueueStream, ...]:
    """Sort streams in the transport's read order: fanout first, then by step."""
    fanout = sorted((s for s in streams if s.step is None), key=lambda s: s.key)
    steps = sorted(
        (s for s in streams if s.step is not None), key=lambda s: s.step or 0
    )
    return (*fanout, *steps)


def _merge_consumer(
    merged: dict[str, dict[str, Any]], reply: dict[str, Any], label: str
) -> None:
    """Add one XINFO CONSUMERS reply to the per-name totals in ``merged``."""
    name = _text(reply["name"])
    inactive = reply.get("inactive")
    # The server reports -1 for a consumer that never got an entry.
    inactive = int(inactive) if inactive is not None and int(inactive) >= 0 else None
    values = merged.get(name)
    if values is None:
        merged[name] = {
            "pending": int(reply["pending"]),
            "idle": int(reply["idle"]),
            "inactive": inactive,
            "streams": [label],
        }
        return
    values["pending"] += int(reply["pending"])
    values["idle"] = min(values["idle"], int(reply["idle"]))
    if inactive is not None:
        known = values["inactive"]
        values["inactive"] = inactive if known is None else min(known, inactive)
    values["streams"].append(label)


def _dead_letter(entry_id: str, fields: dict[Any, Any] | None) -> DeadLetter:
    values = {_text(name): value for name, value in (fields or {}).items()}
    task_name, task_id, summary = _describe_meta(values.get("meta"))
    return DeadLetter(
        entry_id=entry_id,
        reason=_text(values.get("x-dead-letter-reason", b"")),
        queue=_text(values.get("x-dead-letter-queue", b"")),
        source=_text(values.get("x-dead-letter-source", b"")),
        task_name=task_name,
        task_id=task_id,
        summary=summary,
    )


def _describe_meta(raw: bytes | None) -> tuple[str | None, str | None, str]:
    """Return the task name, task ID and a one-line summary of an entry's meta."""
    if raw is None:
        return None, None, "no meta field"
    try:
        meta = json.loads(raw)
    except ValueError:
        return None, None, "meta field is not valid JSON"
    if not isinstance(meta, dict):
        return None, None, "meta field is not a JSON object"
    raw_headers = meta.get("headers")
    headers: dict[str, Any] = raw_headers if isinstance(raw_headers, dict) else {}
    raw_properties = meta.get("properties")
    properties = raw_properties if isinstance(raw_properties, dict) else {}
    task_name = _optional_text(headers.get("task"))
    task_id = _optional_text(headers.get("id") or properties.get("correlation_id"))
    parts = []
    if task_name:
        parts.append(f"task {task_name}")
    if task_id:
        parts.append(f"id {task_id}")
    if meta.get("content-type"):
        parts.append(str(meta["content-type"]))
    parts.append(f"{len(headers)} header" + ("" if len(headers) == 1 else "s"))
    return task_name, task_id, ", ".join(parts)


def _optional_text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
