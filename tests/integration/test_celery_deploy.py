"""Deployment forms of Celery on this transport, run by real worker processes.

TLS with verified certificates, ``;`` failover lists, the ``broker_transport``
setting, ``worker_disable_prefetch``, ``celery inspect`` and ``celery
control``, and the cleanup of the queues that killed clients leave behind.
Every test counts task executions exactly (see ``celery_harness.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import redis
from kombu import Connection
from kombu.exceptions import OperationalError

from kombu_redis_streams.embedded import EmbeddedServer, free_port

from .celery_harness import (
    REPLY_TIMEOUT,
    RESULT_TIMEOUT_S,
    Harness,
    Worker,
    open_harness,
    wait_for,
)

pytestmark = pytest.mark.celery

#: Seconds a TLS redis-server may take to reply to PING after it starts.
SERVER_START_TIMEOUT_S = 10.0
#: Seconds one openssl command may run.
OPENSSL_TIMEOUT_S = 30.0
#: Seconds a test waits for a worker to reach a state (a task started, held).
STATE_TIMEOUT_S = 15.0
#: Seconds each ``pause_late`` task of the prefetch test runs.
SLOW_TASK_S = 0.5
#: x-expires of reply and event queues in the cleanup test, set through
#: Celery's control_queue_expires (default 10 s) and event_queue_expires (60 s).
CLIENT_QUEUE_EXPIRES_S = 2.0
#: The ``sweep_interval`` transport option (default 60 s) in the cleanup test.
SWEEP_INTERVAL_S = 1.0
#: Seconds the cleanup test allows between the kill and the last key removed:
#: the queue expiry, then at most one sweep period and one reclaim interval.
CLEANUP_TIMEOUT_S = CLIENT_QUEUE_EXPIRES_S + SWEEP_INTERVAL_S + 10.0


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it in CI (``CI=true``), which must run it."""
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must be able to run this test.")
    pytest.skip(reason)


def connected_to(worker: Worker) -> list[str]:
    """Return the broker URLs of the worker's "Connected to" log lines, in order.

    Celery writes the URL without its password, as ``scheme://:**@host``.
    """
    marker = "Connected to "
    return [
        line.split(marker, 1)[1].strip()
        for line in worker.log().splitlines()
        if marker in line
    ]


# -- TLS -------------------------------------------------------------------------------


@dataclass
class TlsServer:
    """A redis-server that accepts TLS connections only, on a free loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    ca_cert: Path
    log_path: Path

    def url(self, scheme: str, db: int, *, verify: bool = True) -> str:
        """Return a URL of database ``db``, with the CA to trust if ``verify``."""
        url = f"{scheme}://127.0.0.1:{self.port}/{db}"
        if verify:
            url += f"?ssl_cert_reqs=required&ssl_ca_certs={self.ca_cert}"
        return url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=SERVER_START_TIMEOUT_S)


def openssl(*args: str | Path) -> None:
    """Run one openssl command and raise with its output if it fails."""
    binary = shutil.which("openssl")
    if binary is None:
        skip_or_fail("the openssl command is not installed; it makes the certificates")
    result = subprocess.run(
        [str(binary), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
    )
    assert result.returncode == 0, f"openssl {args[0]} failed:\n{result.stderr}"


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a server certificate for 127.0.0.1 and localhost.

    Returns:
        The paths of the CA certificate, the server certificate and its key.
    """
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    server_cert, server_key = directory / "server.crt", directory / "server.key"
    request = directory / "server.csr"
    extensions = directory / "server.ext"
    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec_key, "-keyout", ca_key, "-out", ca_cert, "-days", "1",
        "-subj", "/CN=kombu-redis-streams test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-new", *ec_key, "-keyout", server_key, "-out", request,
        "-subj", "/CN=localhost",
    )  # fmt: skip
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key,
        "-CAcreateserial", "-out", server_cert, "-days", "1", "-extfile", extensions,
    )  # fmt: skip
    return ca_cert, server_cert, server_key


def tls_missing(output: str) -> bool:
    """Return True when a server's start output shows it was built without TLS.

    Redis 6.0 to 7.0 built without TLS reject the ``tls-port`` directive.
    Redis 7.2 and Valkey log that they found no TLS connection type.
    """
    rejected_directive = "Bad directive" in output and "tls-port" in output
    return rejected_directive or "Failed finding TLS support" in output


def pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    """Debian's redis-server with ``--port 0`` and ``--tls-port``: TLS only."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
    directory = tmp_path / "tls"
    directory.mkdir()
    ca_cert, server_cert, server_key = make_certificates(directory)

    port = free_port()
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "--bind", "127.0.0.1",
                "--port", "0",
                "--tls-port", str(port),
                "--tls-cert-file", str(server_cert),
                "--tls-key-file", str(server_key),
                "--tls-ca-cert-file", str(ca_cert),
                "--tls-auth-clients", "no",
                "--dir", str(directory),
                "--save", "",
                "--appendonly", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = TlsServer(process, port, ca_cert, log_path)

    client = redis.Redis.from_url(server.url("rediss", 0))
    try:
        wait_for(
            lambda: process.poll() is not None or pings(client), SERVER_START_TIMEOUT_S
        )
        if process.poll() is not None:
            output = log_path.read_text(errors="replace")
            if tls_missing(output):
                skip_or_fail(f"{binary} was built without TLS support:\n{output}")
            pytest.fail(f"{binary} exited at start:\n{output}")
        assert pings(client), log_path.read_text(errors="replace")
        yield server
    finally:
        client.close()
        server.stop()


def test_tls_connection_verifies_certificate(tls_server: TlsServer) -> None:
    """``rediss-streams://`` verifies the server certificate by default.

    Without ``ssl_ca_certs`` the test CA is unknown, so the connection fails.
    kombu's ``rediss://`` would connect without any check in that case.
    """
    trusted = Connection(tls_server.url("rediss-streams", 0))
    untrusted = Connection(tls_server.url("rediss-streams", 0, verify=False))
    try:
        # max_retries=0: the first failure is raised, without kombu's 2 s wait.
        with pytest.raises(OperationalError, match="certificate verify failed"):
            untrusted.ensure_connection(max_retries=0)
        trusted.ensure_connection(max_retries=0)
        declared = trusted.default_channel.queue_declare("probe")
    finally:
        untrusted.release()
        trusted.release()

    assert declared.message_count == 0


def test_broker_transport_rediss_needs_ssl_keys(tls_server: TlsServer) -> None:
    """With an explicit transport, the ``rediss`` scheme alone does not select TLS.

    Celery's ``broker_transport`` passes the transport to kombu, so a
    ``rediss://`` URL reaches the plain ``Transport`` class, which uses TLS
    only when ``ssl_*`` options are given. docs/celery.md states this caveat.
    """
    bare = Connection(
        tls_server.url("rediss", 0, verify=False), transport="redis-streams"
    )
    with_keys = Connection(tls_server.url("rediss", 0), transport="redis-streams")
    try:
        bare_class = bare.transport.pool.connection_class
        with pytest.raises(OperationalError):
            bare.ensure_connection(max_retries=0)
        with_keys_class = with_keys.transport.pool.connection_class
        with_keys.ensure_connection(max_retries=0)
        declared = with_keys.default_channel.queue_declare("probe")
    finally:
        bare.release()
        with_keys.release()

    assert bare_class is redis.Connection
    assert with_keys_class is redis.SSLConnection
    assert declared.message_count == 0


@pytest.mark.parametrize("form", ["url_query", "broker_use_ssl"])
def test_tls_worker_runs_each_once(
    tls_server: TlsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    """A worker consumes over TLS, configured either way docs/celery.md gives.

    The server listens on its TLS port only, so every connection that works
    (broker, result backend in the pool children, counts) is a verified TLS
    connection.
    """
    if form == "url_query":
        broker_url = tls_server.url("rediss-streams", 0)
        extra = ""
    else:
        broker_url = tls_server.url("rediss-streams", 0, verify=False)
        extra = f"""
        import ssl

        app.conf.broker_use_ssl = {{
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ca_certs": {str(tls_server.ca_cert)!r},
        }}
        """
    with open_harness(
        tmp_path,
        monkeypatch,
        broker_url=broker_url,
        backend_url=tls_server.url("rediss", 1),
        counts_url=tls_server.url("rediss", 2),
    ) as harness:
        tasks = harness.load_app(extra)
        worker = harness.start_worker("--pool=prefork", "--concurrency=2")

        results = [tasks.echo.delay(number) for number in range(20)]
        values = [result.get(timeout=RESULT_TIMEOUT_S) for result in results]
        exit_code = worker.stop()

        assert values == list(range(20))
        assert harness.runs() == {result.id: 1 for result in results}
        assert connected_to(worker) == [
            f"rediss-streams://:**@127.0.0.1:{tls_server.port}/0"
        ]
        assert exit_code == 0, worker.log()
        assert harness.ready_count("celery") == 0


# -- failover lists --------------------------------------------------------------------


def test_failover_list_skips_dead_server(
    harness: Harness, server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``;`` list whose first server is down connects to the next one.

    Nothing listens on the first port, so the worker and the producer of this
    test both fail there and switch to the live server, keeping this
    transport: a kombu redis transport there would write lists, which the
    streams worker would never read.
    """
    dead_port = free_port()
    monkeypatch.setenv(
        "BROKER_URL", f"redis-streams://127.0.0.1:{dead_port}/0;{server.url}"
    )
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=solo")

    results = [tasks.echo.delay(number) for number in range(10)]
    values = [result.get(timeout=RESULT_TIMEOUT_S) for result in results]
    exit_code = worker.stop()

    assert values == list(range(10))
    assert harness.runs() == {result.id: 1 for result in results}
    assert f"Cannot connect to redis-streams://:**@127.0.0.1:{dead_port}/0" in (
        worker.log()
    )
    assert set(connected_to(worker)) == {
        f"redis-streams://:**@127.0.0.1:{server.port}/0"
    }
    assert exit_code == 0, worker.log()
    assert harness.ready_count("celery") == 0


# -- broker_transport ------------------------------------------------------------------


@pytest.mark.parametrize(
    "transport", ["redis-streams", "kombu_redis_streams.transport:Transport"]
)
def test_broker_transport_overrides_scheme(
    harness: Harness,
    server: EmbeddedServer,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    """``broker_transport`` picks this transport for a plain ``redis://`` URL.

    kombu's Connection takes the scheme from the URL only when no transport is
    given, so the tasks go to the ``{celery}`` stream and a worker with the same
    settings runs them. The alias needs the ``kombu_redis_streams`` import,
    which the app module has; the dotted path works without it.
    """
    monkeypatch.setenv("BROKER_URL", server.redis_url)
    tasks = harness.load_app(
        f"""
        app.conf.broker_transport = {transport!r}
        """
    )
    results = [tasks.echo.delay(number) for number in range(10)]
    queued_type = redis_client.type("{celery}")
    list_exists = redis_client.exists("celery")
    worker = harness.start_worker("--pool=solo")

    values = [result.get(timeout=RESULT_TIMEOUT_S) for result in results]
    exit_code = worker.stop()

    assert queued_type == b"stream"
    assert list_exists == 0
    assert values == list(range(10))
    assert harness.runs() == {result.id: 1 for result in results}
    assert exit_code == 0, worker.log()
    assert harness.ready_count("celery") == 0


def test_broker_transport_failover_uses_lists(
    harness: Harness,
    server: EmbeddedServer,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``broker_transport`` and plain ``redis://`` alternates, failover leaves it.

    kombu's ``Connection.switch`` parses the next URL and takes its scheme as
    the transport, so the alternate gets kombu's redis transport: the task is
    pushed to the ``celery`` list, where no streams worker reads it. This is
    the caveat docs/celery.md states; the test fails once kombu changes it.
    """
    dead = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("BROKER_URL", f"{dead};{server.redis_url}")
    tasks = harness.load_app(
        """
        app.conf.broker_transport = "redis-streams"
        """
    )

    with tasks.app.connection_for_write() as connection:
        first = connection.transport_cls
        connection.ensure_connection(max_retries=len(connection.alt))
        after_failover = connection.transport_cls
        tasks.echo.apply_async(("lost",), connection=connection)

    assert first == "redis-streams"
    assert after_failover == "redis"
    assert redis_client.type("celery") == b"list"
    assert redis_client.llen("celery") == 1
    assert redis_client.exists("{celery}") == 0
    assert harness.runs() == {}


# -- worker_disable_prefetch -----------------------------------------------------------


def pending_by_consumer(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    """Return the number of pending entries of each consumer of ``group``."""
    try:
        consumers = client.xinfo_consumers(stream, group)
    except redis.ResponseError:
        return {}  # no stream or no group yet
    return {
        consumer["name"].decode(): int(consumer["pending"]) for consumer in consumers
    }


def test_disable_prefetch_limits_pending(
    harness: Harness, redis_client: redis.Redis
) -> None:
    """With ``worker_disable_prefetch`` a worker takes only the tasks it can run.

    Two workers with one pool process each share slow ``acks_late`` tasks, so
    the pending entries list of the ``celery`` group shows every task a worker
    has taken: the running one and any prefetched. Without the setting a
    worker takes up to ``worker_prefetch_multiplier`` (4) tasks at once.
    """
    tasks = harness.load_app(
        """
        app.conf.worker_disable_prefetch = True
        """
    )
    first = harness.start_worker("--pool=prefork", "--concurrency=1", name="w1")
    second = harness.start_worker("--pool=prefork", "--concurrency=1", name="w2")

    results = [tasks.pause_late.delay(SLOW_TASK_S) for _ in range(6)]
    max_pending: dict[str, int] = {}

    def all_done() -> bool:
        for name, pending in pending_by_consumer(
            redis_client, "{celery}", "kombu:celery"
        ).items():
            max_pending[name] = max(max_pending.get(name, 0), pending)
        return len(harness.counts.keys("done:*")) == len(results)

    finished = wait_for(all_done, RESULT_TIMEOUT_S)
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    first_code = first.stop()
    second_code = second.stop()

    assert finished, first.log() + second.log()
    assert max_pending, "no consumer ever had a pending task"
    assert max(max_pending.values()) == 1, max_pending
    assert harness.runs() == {result.id: 1 for result in results}
    assert "succeeded in" in first.log()
    assert "succeeded in" in second.log()
    assert first_code == 0, first.log()
    assert second_code == 0, second.log()
    assert harness.ready_count("celery") == 0


# -- celery inspect active and reserved ------------------------------------------------


def inspect_ids(harness: Harness, command: str, worker: Worker) -> list[str]:
    """Run ``celery inspect COMMAND --json`` on one worker and return the task ids."""
    code, output = harness.celery(
        "inspect", command, "-d", worker.nodename, "-t", REPLY_TIMEOUT, "--json"
    )
    assert code == 0, output
    replies = json.loads(output.strip().splitlines()[-1])
    return sorted(request["id"] for request in replies[worker.nodename])


def test_inspect_lists_active_and_reserved(harness: Harness) -> None:
    """``inspect active`` shows the running task, ``inspect reserved`` the prefetched.

    One pool process runs a ``hold`` task, which waits for the test, while the
    default prefetch (4 per process) keeps two more tasks in the worker.
    """
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=prefork", "--concurrency=1")

    results = [tasks.hold.delay() for _ in range(3)]
    one_started = wait_for(lambda: len(harness.runs()) == 1, STATE_TIMEOUT_S)
    running = sorted(harness.runs())
    waiting = sorted({result.id for result in results} - set(running))
    active = inspect_ids(harness, "active", worker)
    reserved = inspect_ids(harness, "reserved", worker)
    harness.counts.set("release", 1)
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    assert one_started, worker.log()
    assert active == running
    assert reserved == waiting
    assert harness.runs() == {result.id: 1 for result in results}
    assert exit_code == 0, worker.log()
    assert harness.ready_count("celery") == 0


# -- celery control cancel_consumer and add_consumer -----------------------------------


def test_cancel_consumer_stops_queue(harness: Harness) -> None:
    """After ``cancel_consumer c`` tasks sent to ``c`` wait until ``add_consumer``.

    A task sent to ``celery`` after them runs first: the worker was reading
    and the tasks in ``c`` stayed ready (not pending with the worker).
    """
    tasks = harness.load_app()
    worker = harness.start_worker("--pool=solo", "-Q", "celery,c")
    options = ("-d", worker.nodename, "-t", REPLY_TIMEOUT)

    cancel_code, cancel_output = harness.celery(
        "control", "cancel_consumer", "c", *options
    )
    parked = [tasks.echo.apply_async((number,), queue="c") for number in range(3)]
    probe = tasks.echo.apply_async(("probe",), queue="celery")
    probe_value = probe.get(timeout=RESULT_TIMEOUT_S)
    runs_while_cancelled = harness.runs()
    ready_while_cancelled = harness.ready_count("c")

    add_code, add_output = harness.celery("control", "add_consumer", "c", *options)
    values = [result.get(timeout=RESULT_TIMEOUT_S) for result in parked]
    exit_code = worker.stop()

    assert cancel_code == 0, cancel_output
    assert "no longer consuming from c" in cancel_output
    assert probe_value == "probe"
    assert runs_while_cancelled == {probe.id: 1}
    assert ready_while_cancelled == 3
    assert add_code == 0, add_output
    assert "add consumer c" in add_output
    assert values == [0, 1, 2]
    assert harness.runs() == {result.id: 1 for result in [*parked, probe]}
    assert exit_code == 0, worker.log()
    assert harness.ready_count("c") == 0


# -- cleanup after killed clients ------------------------------------------------------

#: Key of the hash that maps queue names to their x-expires (keys.py).
EXPIRES_KEY = "_kombu_streams.expires"
#: Prefix of the binding sets, one per exchange (keys.py).
BINDINGS_PREFIX = "_kombu_streams.binding."
#: Prefix of the fanout streams, one per fanout exchange (keys.py).
FANOUT_PREFIX = "_kombu_streams.fanout."
#: Separator inside binding-set members (the ``sep`` transport option).
BINDING_SEP = "\x06\x16"


def is_client_queue(queue: str) -> bool:
    """Return True for the reply queue of an inspect client or an event queue."""
    return queue.endswith(".reply.celery.pidbox") or queue.startswith("celeryev.")


def client_queue_traces(client: redis.Redis) -> list[str]:
    """List what the reply and event queues of clients left on the server.

    That is their streams, their bindings, their x-expires entries and their
    consumer groups on fanout streams, each as one readable line.
    """
    traces = []
    for raw_key in client.scan_iter(count=1000):
        key = raw_key.decode()
        if key.startswith("{") and is_client_queue(key[1 : key.index("}")]):
            traces.append(f"stream {key}")
        elif key.startswith(BINDINGS_PREFIX):
            exchange = key[len(BINDINGS_PREFIX) :]
            for member in client.smembers(key):
                queue = member.decode().split(BINDING_SEP)[-1]
                if is_client_queue(queue):
                    traces.append(f"binding of {queue} to exchange {exchange}")
        elif key.startswith(FANOUT_PREFIX):
            for group in client.xinfo_groups(key):
                name = group["name"].decode()
                if is_client_queue(name.removeprefix("kombu:")):
                    traces.append(f"group {name} on {key}")
    for raw_queue in client.hkeys(EXPIRES_KEY):
        if is_client_queue(raw_queue.decode()):
            traces.append(f"x-expires entry of {raw_queue.decode()}")
    return sorted(traces)


def test_killed_clients_queues_removed(
    harness: Harness, redis_client: redis.Redis
) -> None:
    """A live worker removes what SIGKILLed ``inspect`` and ``events`` clients left.

    ``celery inspect ping`` declares a reply queue and ``celery events`` binds
    its own queue to the ``celeryev`` fanout exchange, with a consumer group
    on its stream. Both queues are auto-delete, which a killed process never
    does: their streams expire (x-expires) and the worker's sweeps
    (``sweep_expired_queues`` in each reclaim scan) then remove their
    bindings, x-expires entries and fanout groups, once per ``sweep_interval``.
    """
    tasks = harness.load_app(
        f"""
        app.conf.control_queue_expires = {CLIENT_QUEUE_EXPIRES_S}
        app.conf.event_queue_expires = {CLIENT_QUEUE_EXPIRES_S}
        app.conf.broker_transport_options = {{
            "unacked_restore_interval": 0.5,
            "sweep_interval": {SWEEP_INTERVAL_S},
        }}
        """
    )
    worker = harness.start_worker("--pool=solo", "-E")
    # Each client waits far longer than the test: only SIGKILL ends it.
    pinger = harness.spawn_celery("inspect", "ping", "-t", "600", name="pinger")
    monitor = harness.spawn_celery("events", "--dump", name="monitor")

    def both_declared() -> bool:
        traces = client_queue_traces(redis_client)
        reply_bound = any(
            trace.endswith(" to exchange reply.celery.pidbox") for trace in traces
        )
        event_group = any(trace.startswith("group kombu:celeryev.") for trace in traces)
        return reply_bound and event_group

    declared = wait_for(both_declared, STATE_TIMEOUT_S)
    traces_alive = client_queue_traces(redis_client)
    pinger.kill()
    monitor.kill()
    removed = wait_for(lambda: not client_queue_traces(redis_client), CLEANUP_TIMEOUT_S)
    leftovers = client_queue_traces(redis_client)
    # The worker's own queues expire too (control_queue_expires) but are
    # refreshed while it consumes them, so the sweeps must leave them alone.
    ping_code, ping_output = harness.celery(
        "inspect", "ping", "-d", worker.nodename, "-t", REPLY_TIMEOUT
    )
    after = tasks.echo.delay("after the sweep")
    after_value = after.get(timeout=RESULT_TIMEOUT_S)
    exit_code = worker.stop()

    assert declared, pinger.log() + monitor.log() + "\n".join(traces_alive)
    assert removed, f"left after {CLEANUP_TIMEOUT_S} s: {leftovers}\n{worker.log()}"
    assert leftovers == []
    assert ping_code == 0, ping_output
    assert "pong" in ping_output
    assert after_value == "after the sweep"
    assert harness.runs() == {after.id: 1}
    assert exit_code == 0, worker.log()
