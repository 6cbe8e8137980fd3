"""The demo behind ``kombu-streams demo``: publish, consume with acks, count.

It declares one direct, one topic and one fanout exchange with five queues,
publishes messages with unique IDs through all three, consumes every queue
with acknowledgements and checks that each expected (queue, ID) pair arrived
exactly once. All keys live under a key prefix of their own, which the demo
deletes when it ends, so it can run on a server that holds other data.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from ..embedded import EmbeddedServer, valkey_binary
from ..inspect import InspectError, Inspector, glob_escape, normalize_url

logger = logging.getLogger(__name__)

#: Start of the key prefix of every demo run. A random run ID follows it.
DEMO_PREFIX = "kombu-streams-demo:"

#: Prefetch limit of the consuming channel.
PREFETCH_COUNT = 100

#: Seconds the demo keeps consuming after the last expected message, so that
#: a duplicate delivered late is still counted.
GRACE_S = 0.5

#: Keys deleted per UNLINK call at cleanup.
DELETE_BATCH = 500

DIRECT = Exchange("demo.direct", type="direct", durable=True)
TOPIC = Exchange("demo.topic", type="topic", durable=True)
FANOUT = Exchange("demo.fanout", type="fanout", durable=True)

PRIORITY_QUEUE = Queue("demo.priority", DIRECT, routing_key="priority")
QUEUES = (
    PRIORITY_QUEUE,
    Queue("demo.orders", TOPIC, routing_key="orders.*"),
    Queue("demo.eu", TOPIC, routing_key="*.eu"),
    Queue("demo.fanout.a", FANOUT),
    Queue("demo.fanout.b", FANOUT),
)

#: Topic routing keys used by the demo and the queues each one must reach,
#: written out by hand so the check does not depend on the transport's matcher.
TOPIC_ROUTES: dict[str, tuple[str, ...]] = {
    "orders.eu": ("demo.orders", "demo.eu"),
    "orders.us": ("demo.orders",),
    "invoices.eu": ("demo.eu",),
}
FANOUT_QUEUES = ("demo.fanout.a", "demo.fanout.b")


class DemoError(Exception):
    """A failure that stops the demo, with a message fit for the user."""


@dataclass(frozen=True)
class Publication:
    """One message of the demo: where it goes and which queues must receive it."""

    message_id: str
    exchange: Exchange
    routing_key: str
    priority: int
    queues: tuple[str, ...]


@dataclass(frozen=True)
class QueueResult:
    """Expected and received counts of one queue."""

    queue: str
    group: str
    expected: int
    received: int
    duplicates: int
    lost: int
    unexpected: int
    #: Entries still delivered and unacknowledged on the server at the end.
    pending: int


@dataclass
class DemoReport:
    """Counts and timings of one demo run."""

    server: str
    prefix: str
    messages: int
    publish_s: float
    consume_s: float
    deliveries: int
    queues: list[QueueResult] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """The number of expected deliveries that never arrived."""
        return sum(result.lost for result in self.queues)

    @property
    def duplicates(self) -> int:
        """The number of deliveries of an ID that had already arrived."""
        return sum(result.duplicates for result in self.queues)

    @property
    def unexpected(self) -> int:
        """The number of deliveries of an ID the queue should not receive."""
        return sum(result.unexpected for result in self.queues)

    @property
    def pending(self) -> int:
        """The number of entries left unacknowledged on the server."""
        return sum(result.pending for result in self.queues)

    @property
    def expected(self) -> int:
        """The number of (queue, ID) pairs the demo expected to arrive."""
        return sum(result.expected for result in self.queues)

    @property
    def ok(self) -> bool:
        """True when every expected delivery arrived once and was acknowledged."""
        return not (self.lost or self.duplicates or self.unexpected or self.pending)

    @property
    def publish_rate(self) -> float:
        """Messages published per second."""
        return self.messages / self.publish_s if self.publish_s > 0 else 0.0

    @property
    def consume_rate(self) -> float:
        """Deliveries consumed per second, up to the last expected one."""
        return self.deliveries / self.consume_s if self.consume_s > 0 else 0.0


def plan_messages(count: int, run_id: str) -> list[Publication]:
    """Spread ``count`` messages over the three exchanges in turn.

    Direct messages cycle through priorities 0 to 9, topic messages through
    the keys of :data:`TOPIC_ROUTES`, and fanout messages reach both fanout
    queues.
    """
    topic_keys = list(TOPIC_ROUTES)
    publications = []
    for index in range(count):
        message_id = f"{run_id}-{index}"
        turn = index // 3
        if index % 3 == 0:
            publication = Publication(
                message_id, DIRECT, "priority", turn % 10, (PRIORITY_QUEUE.name,)
            )
        elif index % 3 == 1:
            key = topic_keys[turn % len(topic_keys)]
            publication = Publication(message_id, TOPIC, key, 0, TOPIC_ROUTES[key])
        else:
            publication = Publication(message_id, FANOUT, "", 0, FANOUT_QUEUES)
        publications.append(publication)
    return publications


class Tally:
    """Counts of the IDs each queue received, and when the last expected came."""

    def __init__(self, expected: dict[str, set[str]]) -> None:
        self.expected = expected
        self.received: dict[str, Counter[str]] = {name: Counter() for name in expected}
        self.missing = sum(len(ids) for ids in expected.values())
        self.deliveries = 0
        #: Value of monotonic() when an expected ID last arrived for the first
        #: time, or None before any did.
        self.last_expected_at: float | None = None

    def record(self, queue: str, body: Any) -> None:
        """Count one delivery of ``body`` from ``queue``."""
        message_id = body.get("id") if isinstance(body, dict) else None
        key = str(message_id)
        counter = self.received[queue]
        counter[key] += 1
        self.deliveries += 1
        if counter[key] == 1 and key in self.expected[queue]:
            self.missing -= 1
            self.last_expected_at = monotonic()

    def callback(self, queue: str) -> Callable[[Any, Any], None]:
        """Return a consumer callback that acknowledges and counts for ``queue``."""

        def on_message(body: Any, message: Any) -> None:
            message.ack()
            self.record(queue, body)

        return on_message

    def result(self, queue: str, group: str, pending: int) -> QueueResult:
        """Compare what ``queue`` received with what it was expected to receive."""
        expected = self.expected[queue]
        counter = self.received[queue]
        return QueueResult(
            queue=queue,
            group=group,
            expected=len(expected),
            received=sum(counter.values()),
            duplicates=sum(counter[key] - 1 for key in expected if counter[key] > 1),
            lost=sum(1 for key in expected if counter[key] == 0),
            unexpected=sum(n for key, n in counter.items() if key not in expected),
            pending=pending,
        )


@contextmanager
def demo_server(url: str | None) -> Iterator[tuple[str, EmbeddedServer | None]]:
    """Yield the broker URL and the embedded server started when ``url`` is None.

    The embedded server is stopped and its directory removed on exit.

    Raises:
        DemoError: the URL is invalid, or no URL is given and the embedded
            server cannot start.
    """
    if url is not None:
        try:
            broker_url = normalize_url(url)
        except InspectError as exc:
            raise DemoError(str(exc)) from None
        yield broker_url, None
        return
    try:
        binary = valkey_binary()
    except RuntimeError as exc:
        raise DemoError(str(exc)) from None
    try:
        server = EmbeddedServer(binary).start()
    except (RuntimeError, OSError) as exc:
        raise DemoError(
            f"The embedded server failed to start ({exc}). Pass --url to run the "
            "demo on a server of your own."
        ) from None
    try:
        yield server.url, server
    finally:
        server.stop()


def run_demo(url: str, messages: int, idle_timeout_s: float) -> DemoReport:
    """Publish ``messages`` messages, consume them all and count the arrivals.

    Arguments:
        url: a ``redis-streams://`` URL.
        messages: how many messages to publish.
        idle_timeout_s: seconds to wait for the next message before the ones
            still missing count as lost.

    Raises:
        DemoError: the server cannot be reached or returned an error.
    """
    run_id = uuid.uuid4().hex[:8]
    prefix = f"{DEMO_PREFIX}{run_id}:"
    options = {"global_keyprefix": prefix, "socket_connect_timeout": 5.0}
    try:
        inspector = Inspector.from_url(url, prefix=prefix)
    except InspectError as exc:
        raise DemoError(str(exc)) from None
    try:
        with inspector.server_errors():
            inspector.client.ping()
    except InspectError as exc:
        inspector.close()
        raise DemoError(str(exc)) from None

    try:
        with inspector.server_errors():
            return _run(url, options, inspector, messages, idle_timeout_s, run_id)
    except InspectError as exc:
        raise DemoError(str(exc)) from None
    except OSError as exc:
        raise DemoError(
            f"The demo failed on the server at {inspector.address} ({exc}). Check "
            "that the server is running and that --url names its host and port."
        ) from None
    finally:
        try:
            _delete_keys(inspector.client, prefix)
        except (redis.RedisError, OSError) as exc:
            logger.warning(
                "Could not delete the demo's keys under prefix %r (%s). Delete "
                "them with SCAN and UNLINK.",
                prefix,
                exc,
            )
        inspector.close()


def _run(
    url: str,
    options: dict[str, Any],
    inspector: Inspector,
    messages: int,
    idle_timeout_s: float,
    run_id: str,
) -> DemoReport:
    publications = plan_messages(messages, run_id)
    expected: dict[str, set[str]] = {queue.name: set() for queue in QUEUES}
    for publication in publications:
        for queue_name in publication.queues:
            expected[queue_name].add(publication.message_id)
    tally = Tally(expected)

    producer_connection = Connection(url, transport_options=options)
    consumer_connection = Connection(url, transport_options=options)
    with producer_connection, consumer_connection:
        channel = producer_connection.channel()
        for queue in QUEUES:
            queue(channel).declare()
        publish_s = _publish(Producer(channel), publications)

        consumer_channel = consumer_connection.channel()
        consumer_channel.basic_qos(0, PREFETCH_COUNT, False)
        consumers = [
            Consumer(
                consumer_channel,
                queues=[queue],
                callbacks=[tally.callback(queue.name)],
                accept=["json"],
            )
            for queue in QUEUES
        ]
        for consumer in consumers:
            consumer.consume()
        consume_s = _consume(consumer_connection, tally, idle_timeout_s)

        report = DemoReport(
            server=inspector.address,
            prefix=str(options["global_keyprefix"]),
            messages=messages,
            publish_s=publish_s,
            consume_s=consume_s,
            deliveries=tally.deliveries,
        )
        for queue in QUEUES:
            # Counted before the consumers close, because closing gives
            # unacknowledged entries back to their queue.
            summary = inspector.queue_summary(queue.name)
            group = inspector.keys.group(queue.name)
            report.queues.append(tally.result(queue.name, group, summary.pending))
        for consumer in consumers:
            consumer.cancel()
    return report


def _publish(producer: Producer, publications: list[Publication]) -> float:
    started = monotonic()
    for publication in publications:
        producer.publish(
            {"id": publication.message_id, "routing_key": publication.routing_key},
            exchange=publication.exchange,
            routing_key=publication.routing_key,
            priority=publication.priority,
            serializer="json",
            retry=False,
        )
    return monotonic() - started


def _consume(connection: Connection, tally: Tally, idle_timeout_s: float) -> float:
    started = monotonic()
    while tally.missing > 0:
        try:
            connection.drain_events(timeout=idle_timeout_s)
        except socket.timeout:
            logger.warning(
                "No message arrived for %.1f s while %d expected deliveries were "
                "missing; they count as lost.",
                idle_timeout_s,
                tally.missing,
            )
            break
    last = tally.last_expected_at
    consume_s = last - started if last is not None else 0.0

    # Keep reading a little longer, so that late duplicates are counted too.
    grace_ends = monotonic() + GRACE_S
    while True:
        remaining = grace_ends - monotonic()
        if remaining <= 0:
            break
        try:
            connection.drain_events(timeout=remaining)
        except socket.timeout:
            break
    return consume_s


def _delete_keys(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` and return how many were deleted."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=glob_escape(prefix) + "*", count=DELETE_BATCH):
        batch.append(key)
        if len(batch) >= DELETE_BATCH:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted
