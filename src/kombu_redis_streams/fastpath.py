"""Script calls on a connection owned by one channel, without pool overhead.

The publish, fetch and ack scripts run once or more per message. Calling them
through redis-py's client costs a pool checkout and command bookkeeping per
call, about as much as the round trip itself on loopback. A channel is used by
one thread at a time, as kombu requires, so it can keep one connection for
these calls and write several of them in one packet.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError

_hiredis_pack: Any
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency
    _hiredis_pack = None

Call = tuple[Script, Sequence[Any], Sequence[Any]]


class ScriptRunner:
    """Run the transport's scripts with EVALSHA on a dedicated connection."""

    def __init__(self, pool: redis.ConnectionPool, client: redis.Redis) -> None:
        self._pool = pool
        self._client = client
        self._connection: Any = None
        # kombu channels belong to one thread, but a reject from another
        # thread must not interleave its bytes with a fetch on this socket.
        self._lock = threading.Lock()

    def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run one script and return its reply.

        Raises:
            redis.ResponseError: the script failed on the server.
            redis.ConnectionError: the connection failed; it is dropped, and
                the next call opens a new one.
        """
        return self.run_many([(script, keys, args)])[0]

    def run_many(self, calls: Sequence[Call], raise_errors: bool = True) -> list[Any]:
        """Run several scripts in one round trip and return their replies.

        Raises:
            redis.ResponseError: a script failed; the first failure is raised
                after every reply was read, unless ``raise_errors`` is False:
                then failures are returned in place of their replies.
        """
        replies = self._send_and_read(calls)
        missing = [
            i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)
        ]
        if missing:
            # The server lost its script cache (a restart or SCRIPT FLUSH).
            # Only the calls that got NOSCRIPT did nothing; the others ran, so
            # just the missing ones are loaded and sent again.
            for index in missing:
                self._client.script_load(calls[index][0].script)
            retried = self._send_and_read([calls[index] for index in missing])
            for index, reply in zip(missing, retried):
                replies[index] = reply
        if raise_errors:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies

    def _send_and_read(self, calls: Sequence[Call]) -> list[Any]:
        with self._lock:
            return self._send_and_read_locked(calls)

    def _send_and_read_locked(self, calls: Sequence[Call]) -> list[Any]:
        connection = self._connect()
        commands = [
            ("EVALSHA", script.sha, len(keys), *keys, *args)
            for script, keys, args in calls
        ]
        replies: list[Any] = []
        if _hiredis_pack is not None:
            packed: Any = [b"".join([_hiredis_pack(command) for command in commands])]
        else:
            packed = connection.pack_commands(commands)
        try:
            connection.send_packed_command(packed)
            for _ in calls:
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self.close()
            raise
        return replies

    def _connect(self) -> Any:
        if self._connection is None:
            pool = self._pool
            self._connection = pool.connection_class(**pool.connection_kwargs)
        return self._connection

    def close(self) -> None:
        """Close the connection."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
