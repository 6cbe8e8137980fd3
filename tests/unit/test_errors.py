from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from kombu_redis_streams.errors import server_error_text

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
SHA = "91d099e8a508ecd6449db4e782b737fc4113001a"


@pytest.mark.parametrize(
    "message",
    [
        f"{WRONGTYPE} script: {SHA}, on @user_script:27.",
        f"{WRONGTYPE} script: on @user_script:27.",
        WRONGTYPE,
    ],
)
def test_script_location_is_removed(message: str) -> None:
    assert server_error_text(ResponseError(message)) == WRONGTYPE
