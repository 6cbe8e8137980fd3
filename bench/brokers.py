"""Start and clean the brokers under test.

Each Redis transport gets a fresh ``redis-server`` of its own on a free loopback
port. RabbitMQ is the server already running at 127.0.0.1:5672, used only when
it accepts a TCP connection within a second. Every queue and exchange that the
suite declares there has the run's ID in its name and is deleted afterwards.
"""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu import Connection, Exchange, Queue

import kombu_redis_streams  # noqa: F401  # registers redis-streams://
from kombu_redis_streams.embedded import EmbeddedServer

logger = logging.getLogger(__name__)

#: Debian's Redis 7.0 server binary.
REDIS_SERVER_BINARY = "/usr/bin/redis-server"

RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
RABBITMQ_URL = f"pyamqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}//"

#: Broker names, also the keys of the JSON result.
STREAMS = "redis-streams"
LISTS = "redis"
AMQP = "pyamqp"
#: The broker every ratio is computed against.
BASELINE = LISTS


def rabbitmq_reachable(timeout_s: float = 1.0) -> bool:
    """Return True when 127.0.0.1:5672 accepts a TCP connection in time."""
    try:
        with socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout_s):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """One transport under test with the server behind it.

    Attributes:
        name: ``redis-streams``, ``redis`` or ``pyamqp``.
        url: the kombu URL of the transport.
        server: the Redis server of a Redis transport; None for RabbitMQ.
        counter_server: the Redis server that stores the Celery task counter.
        run_id: the token in every queue and exchange name of this run.
    """

    name: str
    url: str
    server: EmbeddedServer | None
    counter_server: EmbeddedServer
    run_id: str
    declared: set[str] = field(default_factory=set)
    server_version: str = ""

    @property
    def is_redis(self) -> bool:
        """True for the two Redis transports."""
        return self.server is not None

    @property
    def counter_url(self) -> str:
        """The redis-py URL of the Celery counter: database 1 of its server."""
        return f"redis://127.0.0.1:{self.counter_server.port}/1"

    def connection(self) -> Connection:
        """Open a kombu connection to this broker."""
        connection = Connection(self.url)
        connection.connect()
        return connection

    def stats_client(self) -> redis.Redis:
        """Open a plain redis-py client on database 0 of this broker's server.

        Raises:
            RuntimeError: the broker is RabbitMQ.
        """
        if self.server is None:
            raise RuntimeError(f"{self.name} has no Redis server.")
        return redis.Redis(host="127.0.0.1", port=self.server.port, db=0)

    def name_for(self, label: str) -> str:
        """Return a queue or exchange name unique to this run, and remember it."""
        return self.remember(f"bench.{self.run_id}.{label}")

    def remember(self, name: str) -> str:
        """Mark a queue or exchange name to be deleted by :meth:`clean`."""
        self.declared.add(name)
        return name

    def declare_queue(self, channel: Any, label: str) -> Queue:
        """Declare a durable queue bound to a direct exchange of the same name."""
        name = self.name_for(label)
        exchange = Exchange(name, type="direct", durable=True)
        queue = Queue(name, exchange, routing_key=name, durable=True)
        queue(channel).declare()
        return queue

    def clean(self) -> None:
        """Remove every message, queue and exchange the last workload left."""
        if self.server is not None:
            with self.stats_client() as client:
                client.flushall()
            self.declared.clear()
            return
        if not self.declared:
            return
        with Connection(self.url) as connection:
            channel = connection.channel()
            for name in sorted(self.declared):
                # RabbitMQ 3.x replies "ok" to deleting a queue or exchange
                # that does not exist, so one loop covers both kinds.
                for delete in (channel.queue_delete, channel.exchange_delete):
                    try:
                        delete(name)
                    except connection.channel_errors as exc:
                        logger.warning("Could not delete %r: %s", name, exc)
                        channel = connection.channel()
        self.declared.clear()

    def fetch_server_version(self) -> str:
        """Read the server's product and version, and store them."""
        if self.server is not None:
            with self.stats_client() as client:
                info = client.info("server")
            self.server_version = f"Redis {info['redis_version']}"
        else:
            with Connection(self.url) as connection:
                connection.connect()
                properties = connection.connection.server_properties
            product = _text(properties.get("product", "AMQP server"))
            self.server_version = f"{product} {_text(properties.get('version', '?'))}"
        return self.server_version


def start_brokers(*, use_amqp: bool) -> list[Broker]:
    """Start one Redis server per Redis transport and describe each broker.

    The caller stops the servers with :func:`stop_brokers`, also on errors.
    RabbitMQ is included only when ``use_amqp`` is set and it is reachable.
    """
    run_id = uuid.uuid4().hex[:8]
    brokers: list[Broker] = []
    try:
        for name in (STREAMS, LISTS):
            server = EmbeddedServer(REDIS_SERVER_BINARY).start()
            url = server.url if name == STREAMS else server.redis_url
            brokers.append(Broker(name, url, server, server, run_id))
        if use_amqp and rabbitmq_reachable():
            # The Celery counter of RabbitMQ runs needs a Redis of its own.
            counter = EmbeddedServer(REDIS_SERVER_BINARY).start()
            brokers.append(Broker(AMQP, RABBITMQ_URL, None, counter, run_id))
        for broker in brokers:
            broker.fetch_server_version()
    except BaseException:
        stop_brokers(brokers)
        raise
    return brokers


def stop_brokers(brokers: list[Broker]) -> None:
    """Delete what the suite declared on RabbitMQ and stop the started servers."""
    for broker in brokers:
        try:
            broker.clean()
        except Exception as exc:  # a broken server must not keep others running
            logger.warning("Could not clean %s: %s", broker.name, exc)
        if broker.counter_server is not broker.server:
            broker.counter_server.stop()
        if broker.server is not None:
            broker.server.stop()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
