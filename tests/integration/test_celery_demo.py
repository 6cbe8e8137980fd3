"""``kombu-streams demo --celery`` runs the example with a real worker."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kombu_redis_streams.cli import main

pytestmark = pytest.mark.celery


def test_celery_demo_passes(broker_url: str) -> None:
    result = CliRunner().invoke(main, ["demo", "--celery", "--url", broker_url])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output
    assert "lost" in result.output
