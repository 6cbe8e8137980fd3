from __future__ import annotations

import ssl

import pytest
import redis
from kombu import Connection

import kombu_redis_streams  # noqa: F401
from kombu_redis_streams.connection import connection_params, parse_db
from kombu_redis_streams.options import TransportOptions

OPTIONS = TransportOptions.from_mapping({})


def params_for(url: str, tls: bool = False, **kwargs: object) -> dict[str, object]:
    return connection_params(Connection(url, **kwargs), OPTIONS, tls=tls)


def test_tcp_url_parts() -> None:
    params = params_for("redis-streams://user:p%40ss@example.test:6380/4")
    assert params["host"] == "example.test"
    assert params["port"] == 6380
    assert params["db"] == 4
    assert params["username"] == "user"
    assert params["password"] == "p@ss"
    assert params["connection_class"] is redis.Connection


def test_tls_verifies_by_default() -> None:
    params = params_for("rediss-streams://example.test:6380/0", tls=True)
    assert params["connection_class"] is redis.SSLConnection
    assert params["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_tls_options_from_query() -> None:
    params = params_for(
        "rediss-streams://example.test:6380/0?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem",
        tls=True,
    )
    assert params["ssl_cert_reqs"] == ssl.CERT_NONE
    assert params["ssl_ca_certs"] == "/ca.pem"


def test_tls_scheme_resolves_transport() -> None:
    from kombu_redis_streams import TLSTransport

    assert (
        Connection("rediss-streams://example.test/0").transport_cls == "rediss-streams"
    )
    assert isinstance(
        Connection("rediss-streams://example.test/0").transport, TLSTransport
    )


def test_unix_socket_url() -> None:
    params = params_for("redis-streams+socket:///run/redis.sock?virtual_host=3")
    assert params["connection_class"] is redis.UnixDomainSocketConnection
    assert params["path"] == "/run/redis.sock"
    assert params["db"] == 3
    assert "host" not in params
    assert "socket_connect_timeout" not in params


def test_credential_provider_replaces_password() -> None:
    provider = redis.UsernamePasswordCredentialProvider("u", "p")
    params = params_for(
        "redis-streams://x:y@example.test/0", credential_provider=provider
    )
    assert params["credential_provider"] is provider
    assert "password" not in params


@pytest.mark.parametrize("value", ["x", "/db", "1.5"])
def test_invalid_db_names_value(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_db(value)
    assert repr(value) in str(info.value)
