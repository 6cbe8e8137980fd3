"""A TCP proxy on loopback that can drop traffic silently, for failure tests."""

from __future__ import annotations

import select
import socket
import threading


class DroppingProxy:
    """Forward 127.0.0.1:port to a server; ``drop()`` discards all traffic.

    While dropping, bytes from either side are read and thrown away, as a
    network that loses packets would, and no side learns of it. ``restore()``
    resets the connections that lived through the drop (their streams lost
    bytes) and forwards new connections again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._dropping = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def drop(self) -> None:
        """Start discarding traffic in both directions."""
        self._dropping = True

    def restore(self) -> None:
        """Reset the connections that saw the drop and forward again."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            for sock in (client, server):
                sock.close()
        self._dropping = False

    def close(self) -> None:
        """Stop the proxy and close every socket."""
        self._stopped.set()
        self.restore()
        self._listener.close()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                sockets = [self._listener] + [s for pair in self._pairs for s in pair]
            try:
                readable, _, _ = select.select(sockets, [], [], 0.05)
            except (OSError, ValueError):
                continue  # a socket was closed by restore(); list it again
            for sock in readable:
                if sock is self._listener:
                    self._accept()
                else:
                    self._forward(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target_port))
        with self._lock:
            self._pairs.append((client, server))

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            peer = next(
                (b if a is sock else a for a, b in self._pairs if sock in (a, b)), None
            )
        if peer is None:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._discard(sock, peer)
            return
        if not self._dropping:
            try:
                peer.sendall(data)
            except OSError:
                self._discard(sock, peer)

    def _discard(self, sock: socket.socket, peer: socket.socket) -> None:
        with self._lock:
            self._pairs = [p for p in self._pairs if sock not in p]
        sock.close()
        peer.close()
