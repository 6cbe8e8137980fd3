"""Fixtures of the Celery tests, which run real ``celery worker`` processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kombu_redis_streams.embedded import EmbeddedServer

from .celery_harness import Harness, open_harness


@pytest.fixture
def harness(
    tmp_path: Path,
    server: EmbeddedServer,
    broker_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Harness]:
    """An app module in ``tmp_path`` on the test server, and its workers.

    Results go to database 1 of the server and execution counts to database 2.
    """
    with open_harness(
        tmp_path,
        monkeypatch,
        broker_url=broker_url,
        backend_url=f"redis://127.0.0.1:{server.port}/1",
        counts_url=f"redis://127.0.0.1:{server.port}/2",
    ) as harness:
        yield harness
