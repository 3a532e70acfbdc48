"""A loopback TCP proxy in front of a real MongoDB that can lose one reply on purpose.

It forces the interleaving a failover or a restart causes: the server applies a write,
and the client never hears back (its connection drops), so the write's outcome is unknown
to the client. Nothing is mocked: the requests reach the real server unchanged.
"""

from __future__ import annotations

import socket
import threading


class ReplyCutter:
    """Forward ``127.0.0.1:port`` to ``target``; :meth:`cut_next` loses the next reply to a
    request that contains ``marker`` (an update command by default)."""

    def __init__(self, target: tuple[str, int], marker: bytes = b"\x02update\x00") -> None:
        self.target, self.marker = target, marker
        self.armed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_next(self) -> None:
        self.armed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            cut = threading.Event()  # this connection's replies stop
            threading.Thread(target=self._up, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, cut), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        """Client to server; a marked request while armed: its reply is read and dropped."""
        while data := _recv(client):
            server.sendall(data)
            if self.armed.is_set() and self.marker in data:
                self.armed.clear()
                cut.set()  # the other pipe stops forwarding; close both ends
                _recv(server)  # the server applied the write: wait for its reply, lose it
                for s in (client, server):
                    s.close()
                return
        server.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, cut: threading.Event) -> None:
        while (data := _recv(src)) and not cut.is_set():
            try:
                dst.sendall(data)
            except OSError:
                return
        dst.close()

    def close(self) -> None:
        self.listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""
