"""Exceptions of the transport and the sorting of redis-py's errors for kombu.

Kombu retries and Celery reconnects on ``connection_errors``; a
``channel_errors`` member ends the operation instead. The sorting follows
kombu's redis transport, so Celery reacts to a failing server the same way.
"""

from __future__ import annotations

import re
import socket

from kombu.exceptions import ChannelError, KombuError
from kombu.transport import virtual
from redis import exceptions as redis_errors


class UnsupportedServerError(KombuError):
    """The server is older than the oldest version this transport supports."""


class QueueFullError(ChannelError):
    """A publish rejected because a stream has ``stream_maxlen`` entries."""


class MessageTooLargeError(ChannelError):
    """A publish rejected because a field exceeds the server's bulk size limit."""


class StaleRoutingError(ChannelError):
    """The routing tables kept changing while a message was being published."""


CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    *virtual.Transport.connection_errors,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.AuthenticationError,
    socket.error,
    OSError,
)

CHANNEL_ERRORS: tuple[type[BaseException], ...] = (
    *virtual.Transport.channel_errors,
    redis_errors.DataError,
    redis_errors.InvalidResponse,
    redis_errors.ResponseError,
)

#: The oldest servers that have every command the transport sends: XPENDING IDLE
#: and XTRIM MINID came in Redis 6.2; Valkey began at 7.2.
MIN_REDIS_VERSION = (6, 2, 0)
MIN_VALKEY_VERSION = (7, 2, 0)


def parse_version(text: str) -> tuple[int, ...]:
    """Turn ``'7.0.15'`` into ``(7, 0, 15)``; non-numeric parts count as 0."""
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_server_version(info: dict[str, object]) -> str:
    """Raise unless INFO ``server`` describes a supported server.

    Returns:
        A description such as ``'Redis 7.0.15'`` for log messages.

    Raises:
        UnsupportedServerError: the server is older than Redis 6.2 or
            Valkey 7.2; the message names the version found and needed.
    """
    if "valkey_version" in info:
        name, found, needed = "Valkey", str(info["valkey_version"]), MIN_VALKEY_VERSION
    else:
        name, found, needed = (
            "Redis",
            str(info.get("redis_version", "0")),
            MIN_REDIS_VERSION,
        )
    if parse_version(found) < needed:
        needed_text = ".".join(str(part) for part in needed)
        raise UnsupportedServerError(
            f"{name} {found} is not supported: kombu-redis-streams needs "
            f"{name} {needed_text} or newer (Redis 6.2+ or Valkey 7.2+). "
            "Upgrade the server, or use kombu's redis transport with it."
        )
    return f"{name} {found}"


#: Pattern of the script location that Redis 7 and Valkey append to an error
#: from a command inside a script: " script: SHA, on @user_script:LINE."
_SCRIPT_LOCATION = re.compile(
    r"\s*script:\s*(?:[0-9a-f]{40},\s*)?on @user_script:\d+\.?$"
)


def server_error_text(exc: BaseException) -> str:
    """Return a server error's message without the location in a Lua script.

    The script's SHA and line number mean nothing to the reader of the
    message, and the command's own error states what is wrong.
    """
    return _SCRIPT_LOCATION.sub("", str(exc))
