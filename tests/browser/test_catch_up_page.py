"""Reconnect catch-up in real Chromium: a page whose network dies and comes back shows everything
it missed, in seq order, once each, without reloading, and sends what was typed meanwhile.

How the network dies: bob's page talks to the server through `CuttableProxy`
(tests/browser/proxy.py), a small TCP proxy in this process (127.0.0.1:<proxy port> -> the
server). `cut()` closes every proxied connection (the browser sees its WebSocket's TCP connection
end without a close frame: code 1006, exactly what a dropped network or a dead server gives) and
refuses new ones until `restore()`, so the page's own reconnect attempts fail as they would
offline. Together with Playwright's `context.set_offline(True/False)` the browser also believes
it is offline and gets its `online` event back on restore (the page says `offline` at once and
reconnects as soon as it is back). (`set_offline` alone is not enough: Chromium keeps an open
WebSocket alive through it.) Alice's page talks to the server directly and never notices.
"""

from __future__ import annotations

import re
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
from tests.browser.proxy import CuttableProxy
from tests.live import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"
MISSED = 30
# While cut off, htmx logs each failed WebSocket attempt with console.error(event).
OFFLINE_NOISE = [re.compile(r"^\[error\] \[object Event\]$")]


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
    expect(bob_page.locator("#connection")).to_have_attribute("data-state", "offline")
    # Bob types while offline: the page keeps it and sends it once it is back.
    submit(bob_page, "6*7")
    expect(bob_page.locator("input[name=expression]")).to_have_value("")
    expect(bob_page.locator("#entries .pending")).to_have_text(re.compile(r"6\*7\s*sending…"))

    missed = [f"{n}*3" for n in range(1, MISSED + 1)]
    in_thread(_submit_many, lobby.id, alice, missed)
    wait_for_seq(alice_page, 2 + MISSED)
    assert len(entry_rows(bob_page)) == 2  # still away: nothing arrived

    _come_back(bob_page, proxy)
    expect(bob_page.locator("#connection")).to_have_attribute(
        "data-state", "connected", timeout=15_000
    )
    away = bob_page.locator("#notices [data-notice=catch-up] .notice-text")
    expect(away).to_be_visible()
    expect(away).to_have_text(f"You were away: {MISSED} new entries.")
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
    expect(bob_page.locator("#entries .pending")).to_have_count(0)
    assert Entry.objects.filter(room=lobby).count() == last


def test_connection_shows_offline_while_offline_and_stays_connected_after(
    lobby: Room, bob: User, pages: Pages, proxy: CuttableProxy
) -> None:
    """While cut off, `#connection` says it is offline (the input stays usable). When the
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
    expect(connection).to_have_attribute("data-state", "offline")
    expect(connection).to_have_text("Offline")
    expect(bob_page.locator("input[name=expression]")).to_be_enabled()
    # An attempt has failed, so the next is 1-2 s away: coming back now beats that timer.
    _wait_until(bob_page, lambda: len(sockets) >= 2 and sockets[1].is_closed())
    attempts_offline = len(sockets)

    _come_back(bob_page, proxy)
    expect(connection).to_have_text("Connected", timeout=3_000)
    expect(bob_page.locator("#notices [data-notice=catch-up]")).to_contain_text(
        "Back online: nothing new while you were away."
    )
    expect(bob_page.locator("#notices [data-notice=connection]")).to_have_count(0)
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
