"""Reconnect catch-up in real Chromium: a page whose network dies and comes back shows everything
it missed, in seq order, once each, without reloading, and sends what was typed meanwhile.

How the network dies: bob's page talks to the server through `CuttableProxy`, a small TCP proxy
in this process (127.0.0.1:<proxy port> -> the server). `cut()` closes every proxied connection
(the browser sees its WebSocket's TCP connection end without a close frame: code 1006, exactly
what a dropped network or a dead server gives) and refuses new ones until `restore()`, so the
page's own reconnect attempts fail as they would offline. Together with Playwright's
`context.set_offline(True/False)` the browser also believes it is offline and gets its `online`
event back on restore. (`set_offline` alone is not enough: Chromium keeps an open WebSocket alive
through it.) Alice's page talks to the server directly and never notices.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from typing import Any

import pytest
from django.test import override_settings

from accounts.models import User
from rooms import services
from rooms.models import Entry, Room
from tests.browser.conftest import (
    Pages,
    entry_rows,
    expect,
    in_thread,
    marker,
    set_marker,
    submit,
    wait_for_seq,
)
from tests.live import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"
MISSED = 30
# While cut off, htmx logs each failed WebSocket attempt with console.error(event).
OFFLINE_NOISE = [re.compile(r"^\[error\] \[object Event\]$")]


class CuttableProxy:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target_port whose network can be cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.up = True
        self.closed = False
        self.thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                up = self.up
            if not up:
                _reset(client)  # refused, as an unreachable server would be
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self.lock:
                for sock in (source, sink):
                    if sock in self.sockets:
                        self.sockets.discard(sock)
                        sock.close()

    def cut(self) -> None:
        """The network dies: every connection through the proxy ends, new ones are refused."""
        with self.lock:
            self.up = False
            doomed = list(self.sockets)
            self.sockets.clear()
        for sock in doomed:
            _reset(sock)

    def restore(self) -> None:
        with self.lock:
            self.up = True

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


@pytest.fixture
def proxy(server: ServerProcess) -> Any:
    instance = CuttableProxy(server.port)
    yield instance
    instance.close()


def _go_offline(page: Any, proxy: CuttableProxy) -> None:
    page.context.set_offline(True)
    proxy.cut()


def _come_back(page: Any, proxy: CuttableProxy) -> None:
    proxy.restore()
    page.context.set_offline(False)


def _submit_many(room_id: int, author: User, expressions: list[str]) -> None:
    """Store entries the way any client's submission is stored (commit, then broadcast through
    the shared Redis channel layer to the server's sockets), past the per-person rate limit
    (10 then 1/s), which would make 30 take half a minute."""
    with override_settings(
        EXPRESSION_BUCKET_CAPACITY=10_000, EXPRESSION_BUCKET_REFILL_PER_SECOND=10_000
    ):
        for expression in expressions:
            services.entry_submit_sync(
                room_id=room_id, author=author, expression=expression, client_id=None
            )


def _bob_page(pages: Pages, bob: User, proxy: CuttableProxy) -> Any:
    context = pages.context_for(bob, base_url=proxy.url)
    return pages.open_page(context, "bob", ROOM)


def test_reconnect_catches_up_on_everything_missed_in_order_once(
    lobby: Room, alice: User, bob: User, pages: Pages, proxy: CuttableProxy
) -> None:
    pages.allow(*OFFLINE_NOISE)
    alice_page = pages.page_for(alice, ROOM)
    bob_page = _bob_page(pages, bob, proxy)
    submit(alice_page, "1+1")
    submit(bob_page, "2+2")
    wait_for_seq(alice_page, 2)
    wait_for_seq(bob_page, 2)
    token = set_marker(bob_page)

    _go_offline(bob_page, proxy)
    expect(bob_page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    # Bob types while offline: the page keeps it and sends it once it is back.
    submit(bob_page, "6*7")
    expect(bob_page.locator("input[name=expression]")).to_have_value("")

    missed = [f"{n}*3" for n in range(1, MISSED + 1)]
    in_thread(_submit_many, lobby.id, alice, missed)
    wait_for_seq(alice_page, 2 + MISSED)
    assert len(entry_rows(bob_page)) == 2  # still away: nothing arrived

    _come_back(bob_page, proxy)
    expect(bob_page.locator("#connection")).to_have_attribute(
        "data-state", "connected", timeout=15_000
    )
    expect(bob_page.locator("#away")).to_be_visible()
    expect(bob_page.locator("#away")).to_have_text(f"You were away: {MISSED} new entries.")
    last = 2 + MISSED + 1  # the two before, the 30 missed, bob's offline expression
    wait_for_seq(bob_page, last)
    wait_for_seq(alice_page, last)

    assert marker(bob_page) == token, "the page was reloaded"
    bob_rows = entry_rows(bob_page)
    assert [row[0] for row in bob_rows] == list(range(1, last + 1))  # in order, no gap or twin
    assert bob_rows == entry_rows(alice_page)
    assert [row[2] for row in bob_rows[2 : 2 + MISSED]] == missed
    assert [row[3] for row in bob_rows[2 : 2 + MISSED]] == [str(3 * n) for n in range(1, 31)]
    assert bob_rows[-1] == (last, "bob", "6*7", "42")

    # Stored once, shown once on each page, even though the page may have sent it twice.
    assert Entry.objects.filter(room=lobby, expression="6*7").count() == 1
    for page in (alice_page, bob_page):
        shown = page.locator("#entries code.expression", has_text=re.compile(r"^6\*7$"))
        expect(shown).to_have_count(1)
    assert Entry.objects.filter(room=lobby).count() == last


def test_connection_shows_reconnecting_while_offline_and_stays_connected_after(
    lobby: Room, bob: User, pages: Pages, proxy: CuttableProxy
) -> None:
    """While cut off, `#connection` says it is reconnecting (the input stays usable). When the
    browser is back online the page reconnects at once, and stays connected: the ws extension's
    own retry timer, still pending from the last failed attempt, must not tear the new socket
    down afterwards (that used to disable the input with "Disconnected. Reload the page")."""
    pages.allow(*OFFLINE_NOISE)
    bob_page = _bob_page(pages, bob, proxy)
    connection = bob_page.locator("#connection")
    expect(connection).to_have_text("Connected")
    sockets: list[Any] = []
    bob_page.on("websocket", lambda ws: sockets.append(ws))

    _go_offline(bob_page, proxy)
    expect(connection).to_have_attribute("data-state", "reconnecting")
    expect(connection).to_have_text(re.compile(r"^Reconnecting( in \d+ s)?…$"))
    expect(bob_page.locator("input[name=expression]")).to_be_enabled()
    # One attempt has failed, so the next is 1-2 s away: coming back now beats that timer.
    _wait_until(bob_page, lambda: len(sockets) >= 1 and sockets[0].is_closed())
    expect(connection).to_have_text(re.compile(r"^Reconnecting( in [12] s)?…$"))
    attempts_offline = len(sockets)

    _come_back(bob_page, proxy)
    expect(connection).to_have_text("Connected", timeout=3_000)
    expect(bob_page.locator("#away")).to_have_text("Back online: nothing new while you were away.")
    bob_page.wait_for_timeout(2_500)  # the stale retry timer has fired by now
    expect(connection).to_have_text("Connected")
    expect(bob_page.locator("input[name=expression]")).to_be_enabled()
    live = [ws for ws in sockets[attempts_offline:] if not ws.is_closed()]
    assert len(live) == 1, f"{len(live)} sockets open after coming back"
    submit(bob_page, "6*7")
    wait_for_seq(bob_page, 1)


def _wait_until(page: Any, condition: Any, timeout: float = 10.0) -> None:
    """Poll `condition` while letting Playwright deliver its events (a plain sleep would not)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        page.wait_for_timeout(50)
