from __future__ import annotations

import pytest

from kombu_redis_streams.errors import UnsupportedServerError, check_server_version


@pytest.mark.parametrize(
    ("info", "description"),
    [
        ({"redis_version": "6.2.0"}, "Redis 6.2.0"),
        ({"redis_version": "7.0.15"}, "Redis 7.0.15"),
        ({"redis_version": "7.2.4", "valkey_version": "7.2.5"}, "Valkey 7.2.5"),
        ({"redis_version": "7.2.4", "valkey_version": "9.1.2"}, "Valkey 9.1.2"),
    ],
)
def test_supported_servers_pass(info: dict[str, object], description: str) -> None:
    assert check_server_version(info) == description


@pytest.mark.parametrize(
    ("info", "found", "needed"),
    [
        ({"redis_version": "6.0.16"}, "Redis 6.0.16", "6.2.0"),
        ({"redis_version": "5.0.7"}, "Redis 5.0.7", "6.2.0"),
        (
            {"redis_version": "7.2.4", "valkey_version": "7.0.1"},
            "Valkey 7.0.1",
            "7.2.0",
        ),
    ],
)
def test_old_server_is_refused(
    info: dict[str, object], found: str, needed: str
) -> None:
    with pytest.raises(UnsupportedServerError) as error:
        check_server_version(info)
    assert found in str(error.value)
    assert needed in str(error.value)
