"""redis-py connection parameters built from a kombu ``Connection``.

The URL grammar is kombu's redis grammar: ``user:password@host:port/db``, a
``socket:///path`` host for Unix sockets (``redis-streams+socket:///path``),
``ssl_*`` query keys or ``Connection(ssl={...})`` for TLS, and a
``credential_provider`` object, dotted path or URL query key.
"""

from __future__ import annotations

import logging
import ssl as ssl_module
from typing import Any

import redis
from kombu.utils.imports import symbol_by_name
from kombu.utils.url import _parse_url

from .options import TransportOptions

logger = logging.getLogger(__name__)

_TCP_ONLY_PARAMS = (
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
)


def parse_db(virtual_host: Any) -> int:
    """Return the database number of a kombu virtual host.

    Raises:
        ValueError: the virtual host is not a database number.
    """
    if virtual_host in (None, "", "/"):
        return 0
    text = str(virtual_host).lstrip("/")
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"Invalid database {virtual_host!r} in the broker URL: expected a "
            "whole number such as redis-streams://localhost:6379/0."
        ) from None


def _credential_provider(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    provider_class = symbol_by_name(value)
    return provider_class()


def connection_params(
    conninfo: Any, options: TransportOptions, *, tls: bool = False
) -> dict[str, Any]:
    """Build keyword arguments for ``redis.ConnectionPool`` from ``conninfo``.

    Arguments:
        conninfo: the ``kombu.Connection`` of the transport.
        options: the validated transport options.
        tls: the URL scheme requests TLS (``rediss-streams://``); certificates
            are verified unless ``ssl_cert_reqs`` turns it off.
    """
    params: dict[str, Any] = {
        "host": conninfo.hostname or "127.0.0.1",
        "port": conninfo.port or 6379,
        "db": parse_db(conninfo.virtual_host),
        "username": conninfo.userid or None,
        "password": conninfo.password or None,
        "max_connections": options.max_connections,
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_connect_timeout,
        "socket_keepalive": options.socket_keepalive,
        "socket_keepalive_options": options.socket_keepalive_options,
        "retry_on_timeout": bool(options.retry_on_timeout),
        "health_check_interval": options.health_check_interval,
        "client_name": options.client_name,
        "connection_class": redis.Connection,
    }
    provider = _credential_provider(getattr(conninfo, "credential_provider", None))

    host = params["host"]
    if "://" in host:
        scheme, _, _, username, password, path, query = _parse_url(host)
        if scheme == "socket":
            for name in _TCP_ONLY_PARAMS:
                params.pop(name, None)
            params["connection_class"] = redis.UnixDomainSocketConnection
            params["path"] = "/" + path
            query = dict(query)
            provider = _credential_provider(query.pop("credential_provider", provider))
            if "virtual_host" in query:
                params["db"] = parse_db(query.pop("virtual_host"))
            params.update(query)
        params["username"] = username or params["username"]
        params["password"] = password or params["password"]
        params.pop("host", None)
        params.pop("port", None)

    if provider is not None:
        params.pop("username", None)
        params.pop("password", None)
        params["credential_provider"] = provider

    ssl_options = conninfo.ssl
    if tls or ssl_options:
        params.update(tls_params(ssl_options))
        params["connection_class"] = redis.SSLConnection
    return params


def tls_params(ssl_options: Any) -> dict[str, Any]:
    """Return redis-py TLS arguments, verifying certificates by default.

    kombu's ``rediss://`` turns verification off when no option is given. This
    transport keeps it on, so an unverified connection is always written in
    the configuration (``ssl_cert_reqs=none``).
    """
    params: dict[str, Any] = {"ssl_cert_reqs": ssl_module.CERT_REQUIRED}
    if isinstance(ssl_options, dict):
        params.update(ssl_options)
    return params
