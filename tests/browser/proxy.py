"""A TCP proxy in the test process whose network can fail the ways real networks fail.

`CuttableProxy(target_port)` forwards 127.0.0.1:<its port> to 127.0.0.1:<target_port>. A page
opened on `proxy.url` talks to the server only through it (a PostgreSQL client can too). Then:

- `cut()`: every proxied connection ends at once without a close frame (the browser sees code
  1006, as on a dropped network or a dead server), and new ones are refused until `restore()`.
- `stall_websockets()`: every open WebSocket connection stops forwarding in both directions;
  nothing is closed and nothing is dropped, the bytes are held (a network path that died
  silently). New connections work. `release()` lets the held bytes through.
- `block_websockets()`: open WebSocket connections are cut and new WebSocket handshakes are
  refused, while plain HTTP still passes (the page reloads, its socket cannot connect);
  `allow_websockets()` ends that.

A connection is a WebSocket when its first bytes are an HTTP request asking for
`Upgrade: websocket` (the browser opens a fresh connection for each WebSocket).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

SNIFF_SECONDS = 2  # a client that says nothing this long (a preconnect) is plain traffic


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket, websocket: bool) -> None:
        self.client = client
        self.upstream = upstream
        self.websocket = websocket
        self.flowing = threading.Event()
        self.flowing.set()


class CuttableProxy:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target_port whose network can be cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.links: set[_Link] = set()
        self.up = True
        self.websockets_blocked = False
        self.closed = False
        self.thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        with self.lock:
            up = self.up
        if not up:
            _reset(client)  # refused, as an unreachable server would be
            return
        client.settimeout(SNIFF_SECONDS)
        try:
            first = client.recv(65536)
        except TimeoutError:
            first = b""
        except OSError:
            _reset(client)
            return
        client.settimeout(None)
        websocket = b"upgrade: websocket" in first.lower()
        with self.lock:
            refused = not self.up or (websocket and self.websockets_blocked)
        if refused:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            upstream.settimeout(None)
            if first:
                upstream.sendall(first)
        except OSError:
            _reset(client)
            return
        link = _Link(client, upstream, websocket)
        with self.lock:
            self.links.add(link)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(link, source, sink), daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                link.flowing.wait()  # stalled: the bytes are held here, nothing is closed
                if self.closed:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self.lock:
                self.links.discard(link)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def _end(self, links: list[_Link]) -> None:
        for link in links:
            _reset(link.client)
            _reset(link.upstream)
            link.flowing.set()  # wake a stalled pump so it sees the end

    def cut(self) -> None:
        """The network dies: every connection through the proxy ends, new ones are refused."""
        with self.lock:
            self.up = False
            doomed = list(self.links)
            self.links.clear()
        self._end(doomed)

    def restore(self) -> None:
        with self.lock:
            self.up = True

    def stall_websockets(self) -> None:
        """Every open WebSocket connection goes silent both ways; nothing is closed."""
        with self.lock:
            for link in self.links:
                if link.websocket:
                    link.flowing.clear()

    def release(self) -> None:
        """Held bytes flow again."""
        with self.lock:
            links = list(self.links)
        for link in links:
            link.flowing.set()

    def block_websockets(self) -> None:
        """Open WebSockets are cut and new ones refused; plain HTTP still passes."""
        with self.lock:
            self.websockets_blocked = True
            doomed = [link for link in self.links if link.websocket]
            self.links.difference_update(doomed)
        self._end(doomed)

    def allow_websockets(self) -> None:
        with self.lock:
            self.websockets_blocked = False

    def close(self) -> None:
        self.closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()
        self.thread.join(5)


def _reset(sock: socket.socket) -> None:
    """End a connection at once: the peer sees it drop without any WebSocket close frame.
    (shutdown first: a bare close() would not wake a pump thread blocked in recv, and the
    kernel would keep the connection open for it.)"""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
