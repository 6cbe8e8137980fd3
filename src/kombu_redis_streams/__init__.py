"""Kombu transport on Redis Streams, a drop-in for kombu's ``redis`` transport.

Importing this package registers the URL schemes ``redis-streams://``,
``rediss-streams://`` (TLS) and ``redis-streams+socket://`` with kombu, so
``Connection('redis-streams://localhost:6379/0')`` and Celery's
``broker_url = 'redis-streams://...'`` work once the app module imports it.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES

from .channel import Channel
from .errors import (
    MessageTooLargeError,
    QueueFullError,
    StaleRoutingError,
    UnsupportedServerError,
)
from .transport import TLSTransport, Transport

__version__ = "0.1.0"

#: URL schemes this package registers with kombu.
SCHEMES = {
    "redis-streams": "kombu_redis_streams.transport:Transport",
    "rediss-streams": "kombu_redis_streams.transport:TLSTransport",
}

for _scheme, _path in SCHEMES.items():
    # setdefault: an application that mapped the name itself keeps its choice.
    TRANSPORT_ALIASES.setdefault(_scheme, _path)

__all__ = [
    "Channel",
    "MessageTooLargeError",
    "QueueFullError",
    "StaleRoutingError",
    "TLSTransport",
    "Transport",
    "UnsupportedServerError",
    "__version__",
]
