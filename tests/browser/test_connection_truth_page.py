"""The room page tells the truth about its connection and never loses what was typed (Chromium).

- A socket that dies silently (frames held, nothing closed) is noticed by the heartbeat rule (no
  frame for CONNECTION_DEAD_AFTER_SECONDS) and replaced; the page catches up and sends what was
  typed meanwhile, stored once.
- The browser's `offline` event shows `offline` at once.
- An expression typed while the socket cannot connect is a "sending…" row at once, survives a
  reload (sessionStorage) and becomes its stored entry once.
- Resends answered `rate_limited` (the bucket spent elsewhere) or `unavailable` (PostgreSQL gone)
  are sent again later; none is dropped.
- A refused expression (too long, empty) stays in the log with its reason and an Edit button.
- When the room is over for the page (4401, 4403, 1008) a banner replaces the input, with the
  action that helps.

The network fails through `CuttableProxy` (tests/browser/proxy.py); PostgreSQL fails through one
too, in front of a server of this module's. Every wait is a generous deadline, never a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session

from accounts.models import User
from rooms import services
from rooms.models import Entry, Room
from rooms.throttle import expression_bucket_key, get_throttle
from tests.browser.conftest import (
    Pages,
    entry_rows,
    expect,
    expect_fully_visible,
    goto_room,
    in_thread,
    marker,
    set_marker,
    submit,
    wait_for_seq,
)
from tests.browser.proxy import CuttableProxy
from tests.live import ServerProcess
from tests.live import test_database_url as live_database_url

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"
SOON = 20_000  # ms: "eventually", many times what the page needs
LATER = 60_000  # ms: for what waits on a refilling rate-limit bucket
# While cut off, htmx logs each failed WebSocket attempt with console.error(event).
OFFLINE_NOISE = [re.compile(r"^\[error\] \[object Event\]$")]

DEAD_AFTER_SECONDS = 5  # this module's quick server: the heartbeat rule, scaled down
SYNC_SECONDS = 2

# Every `data-state` `#connection` takes, recorded in the page.
RECORD_STATES = """() => {
  const elt = document.getElementById("connection");
  window.__states = [elt.dataset.state];
  new MutationObserver(() => window.__states.push(elt.dataset.state))
    .observe(elt, { attributes: true, attributeFilter: ["data-state"] });
}"""

# Every error frame the page receives, as [code, client_id], recorded in the page.
RECORD_ERRORS = """() => {
  window.__errors = [];
  document.addEventListener("htmx:wsBeforeMessage", (evt) => {
    const found = /^<div id="errors".*?data-code="([a-z_]+)"(?: data-client-id="([^"]+)")?/s
      .exec(evt.detail.message);
    if (found) window.__errors.push([found[1], found[2] || null]);
  });
}"""


def states(page: Any) -> list[str]:
    return page.evaluate("() => window.__states")


def errors(page: Any) -> list[str]:
    """The codes of the error frames the page received, in order."""
    return [code for code, _client_id in page.evaluate("() => window.__errors")]


def errors_for(page: Any, client_id: str) -> list[str]:
    return [code for code, cid in page.evaluate("() => window.__errors") if cid == client_id]


def record_sent(page: Any) -> list[dict[str, Any]]:
    """Every expression frame the page sends from now on, with the index of its socket."""
    sent: list[dict[str, Any]] = []
    sockets: list[Any] = []

    def on_socket(ws: Any) -> None:
        index = len(sockets)
        sockets.append(ws)

        def on_frame(payload: Any) -> None:
            with contextlib.suppress(ValueError, TypeError):
                frame = json.loads(payload)
                if frame.get("type") == "expression":
                    sent.append({**frame, "socket": index})

        ws.on("framesent", on_frame)

    page.on("websocket", on_socket)
    return sent


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[CuttableProxy]:
    instance = CuttableProxy(server.port)
    yield instance
    instance.close()


@pytest.fixture
def quick_server() -> Iterator[ServerProcess]:
    """A server whose heartbeat rule is scaled down: sync every 2 s, dead after 5 s of silence."""
    server = ServerProcess(
        env={
            "SYNC_INTERVAL_SECONDS": str(SYNC_SECONDS),
            "CONNECTION_DEAD_AFTER_SECONDS": str(DEAD_AFTER_SECONDS),
        }
    )
    server.start()
    yield server
    server.stop()


def _page_via(pages: Pages, user: User, proxy: CuttableProxy) -> Any:
    return pages.open_page(pages.context_for(user, base_url=proxy.url), user.username, ROOM)


def _drain_bucket(key: str) -> None:
    async def drain() -> None:
        throttle = get_throttle()
        bucket = {
            "capacity": settings.EXPRESSION_BUCKET_CAPACITY,
            "refill_per_second": settings.EXPRESSION_BUCKET_REFILL_PER_SECOND,
        }
        while await throttle.take(key, **bucket):
            pass
        await throttle.aclose()

    asyncio.run(drain())


def _store(room_id: int, author: User, expression: str) -> None:
    services.entry_submit_sync(
        room_id=room_id, author=author, expression=expression, client_id=None
    )


def _stored(room: Room, expression: str) -> int:
    return Entry.objects.filter(room=room, expression=expression).count()


# --- A silent socket ---------------------------------------------------------------------------


def test_a_silently_stalled_socket_is_detected_and_healed(
    lobby: Room, alice: User, bob: User, pages: Pages, quick_server: ServerProcess
) -> None:
    proxy = CuttableProxy(quick_server.port)
    try:
        alice_page = pages.open_page(
            pages.context_for(alice, base_url=quick_server.url), "alice", ROOM
        )
        bob_page = pages.open_page(pages.context_for(bob, base_url=proxy.url), "bob")
        sent = record_sent(bob_page)  # from the first socket on
        goto_room(bob_page, ROOM)
        config = bob_page.evaluate(
            "() => JSON.parse(document.getElementById('room-config').textContent)"
        )
        assert config["connectionDeadAfterMs"] == DEAD_AFTER_SECONDS * 1000
        token = set_marker(bob_page)
        bob_page.evaluate(RECORD_STATES)

        # The path to bob dies silently: his socket stays open, nothing arrives either way.
        proxy.stall_websockets()
        submit(alice_page, "1+1")
        submit(alice_page, "2+2")
        wait_for_seq(alice_page, 2)
        submit(bob_page, "6*7")  # into the dead socket: it must not vanish
        pending = bob_page.locator("#entries .pending")
        expect(pending).to_contain_text("sending…")
        assert entry_rows(bob_page) == []

        # No frame for DEAD_AFTER_SECONDS: given up, replaced, caught up, what was typed sent.
        wait_for_seq(bob_page, 3, timeout=SOON)
        expect(bob_page.locator("#connection")).to_have_attribute("data-state", "connected")
        assert "reconnecting" in states(bob_page)
        rows = entry_rows(bob_page)
        assert [row[0] for row in rows] == [1, 2, 3]
        assert rows[2][1:] == ("bob", "6*7", "42")
        wait_for_seq(alice_page, 3)
        expect(pending).to_have_count(0)
        # Sent once on each connection: the dead one and its replacement.
        assert [f["socket"] for f in sent if f.get("expression") == "6*7"] == [0, 1]

        # The held frames of the dead socket (its copy of "6*7" too) finally arrive: still once.
        proxy.release()
        submit(alice_page, "3+3")
        wait_for_seq(bob_page, 4, timeout=SOON)
        assert _stored(lobby, "6*7") == 1
        assert [row[0] for row in entry_rows(bob_page)] == [1, 2, 3, 4]
        expect(bob_page.locator("#entries code.expression", has_text="6*7")).to_have_count(1)
        assert marker(bob_page) == token, "the page was reloaded"
    finally:
        proxy.close()


def test_the_browser_going_offline_shows_offline_at_once(
    lobby: Room, bob: User, pages: Pages
) -> None:
    pages.allow(*OFFLINE_NOISE)
    page = pages.page_for(bob, ROOM)
    connection = page.locator("#connection")
    page.context.set_offline(True)
    # At once: well before any heartbeat could have been missed.
    expect(connection).to_have_attribute("data-state", "offline")
    expect(connection).to_have_text("Offline")
    expect_fully_visible(page, "#notices [data-notice=connection]")
    expect(page.locator("#notices [data-notice=connection]")).to_contain_text("offline")

    page.context.set_offline(False)
    expect(connection).to_have_attribute("data-state", "connected", timeout=SOON)
    expect(page.locator("#notices [data-notice=connection]")).to_have_count(0)


def test_a_server_that_cannot_be_reached_shows_reconnecting_with_its_countdown(
    lobby: Room, bob: User, pages: Pages, proxy: CuttableProxy
) -> None:
    pages.allow(*OFFLINE_NOISE)
    page = _page_via(pages, bob, proxy)
    proxy.cut()  # the browser itself is online: the server is what is gone
    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-state", "reconnecting")
    expect(connection).to_have_text(re.compile(r"^Reconnecting( in \d+ s)?…$"))
    notice = page.locator("#notices [data-notice=connection]")
    expect_fully_visible(page, "#notices [data-notice=connection]")
    proxy.restore()
    notice.locator("button.notice-action").click()  # "Reconnect now"
    expect(connection).to_have_attribute("data-state", "connected", timeout=SOON)
    expect(notice).to_have_count(0)


# --- Nothing typed is lost ------------------------------------------------------------------------


def test_a_sending_row_survives_a_reload_and_is_stored_once(
    lobby: Room, bob: User, pages: Pages, proxy: CuttableProxy
) -> None:
    pages.allow(*OFFLINE_NOISE)
    page = _page_via(pages, bob, proxy)
    proxy.block_websockets()  # HTTP still works: the page reloads, its socket cannot connect
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")

    submit(page, "6*7")
    pending = page.locator("#entries .pending")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("6*7")
    expect(pending).to_contain_text("sending…")
    client_id = pending.get_attribute("data-client-id")
    assert re.fullmatch(r"[0-9a-f-]{36}", client_id or "")

    page.reload()
    expect(page.locator("#room")).to_have_attribute("data-ready", "true")
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "connected")
    expect(pending).to_have_count(1)  # survived the reload, the same expression, the same id
    expect(pending).to_have_attribute("data-client-id", client_id)
    expect(pending).to_contain_text("6*7")
    expect(pending).to_contain_text("sending…")
    assert _stored(lobby, "6*7") == 0

    sent = record_sent(page)
    proxy.allow_websockets()
    wait_for_seq(page, 1, timeout=SOON)
    assert [f["client_id"] for f in sent] == [client_id]  # sent once, though caught up first
    expect(page.locator("#entry-1")).to_have_attribute("data-client-id", client_id)
    expect(page.locator("#entry-1 .result")).to_have_text("42")
    expect(pending).to_have_count(0)
    entry = Entry.objects.get(room=lobby)
    assert (entry.expression, str(entry.client_id)) == ("6*7", client_id)

    # Stored once, and gone from the tab's storage: another reload shows no row.
    page.reload()
    expect(page.locator("#room")).to_have_attribute("data-ready", "true")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=SOON)
    expect(pending).to_have_count(0)
    expect(page.locator("#entries article[data-seq]")).to_have_count(1)
    assert Entry.objects.filter(room=lobby).count() == 1


def test_resends_answered_rate_limited_are_sent_again_and_none_is_dropped(
    lobby: Room, bob: User, pages: Pages, proxy: CuttableProxy
) -> None:
    """Bob types more than the bucket holds while offline; when he is back, the bucket has been
    spent elsewhere. Every resend answered `rate_limited` is sent again later: all are stored, once
    each, in the order typed, and the socket is never closed for abuse."""
    pages.allow(*OFFLINE_NOISE)
    page = _page_via(pages, bob, proxy)
    page.evaluate(RECORD_ERRORS)
    page.evaluate(RECORD_STATES)
    sent = record_sent(page)
    token = set_marker(page)
    page.context.set_offline(True)
    proxy.cut()
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")

    typed = [f"{n}*11" for n in range(1, 15)]  # 14: more than the bucket of 10
    for expression in typed:
        submit(page, expression)
    expect(page.locator("#entries .pending")).to_have_count(len(typed))
    in_thread(_drain_bucket, expression_bucket_key(bob.id, lobby.id))

    proxy.restore()
    page.context.set_offline(False)
    wait_for_seq(page, len(typed), timeout=LATER)
    expect(page.locator("#entries .pending")).to_have_count(0)

    assert "rate_limited" in errors(page), "the resends were never refused: nothing was tested"
    # Each was sent once on the new connection, and once more for every `rate_limited` answer.
    by_id: dict[str, int] = {}
    for frame in sent:
        by_id[frame["client_id"]] = by_id.get(frame["client_id"], 0) + 1
    assert len(by_id) == len(typed)
    for client_id, count in by_id.items():
        assert count == 1 + errors_for(page, client_id).count("rate_limited")
    assert errors(page).count("rate_limited") < settings.WS_ABUSE_LIMIT
    rows = entry_rows(page)
    assert [row[2] for row in rows] == typed  # all of them, in the order typed
    assert [row[3] for row in rows] == [str(11 * n) for n in range(1, 15)]
    assert Entry.objects.filter(room=lobby).count() == len(typed)
    assert "ended" not in states(page)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(page.locator("#notices [data-notice=waiting]")).to_have_count(0)
    assert marker(page) == token


@pytest.fixture
def database_proxy() -> Iterator[CuttableProxy]:
    """PostgreSQL behind a proxy that can be cut: it "restarts" under a running server."""
    db = urlsplit(live_database_url())
    instance = CuttableProxy(db.port or 5432)
    yield instance
    instance.close()


@pytest.fixture
def server_on_database_proxy(database_proxy: CuttableProxy) -> Iterator[ServerProcess]:
    db = urlsplit(live_database_url())
    netloc = db.netloc.rsplit(":", 1)[0] if ":" in db.netloc.split("@")[-1] else db.netloc
    url = urlunsplit(db._replace(netloc=f"{netloc}:{database_proxy.port}"))
    # No pool: every unit of work connects, so a dead database answers at once.
    server = ServerProcess(env={"DATABASE_URL": url, "DATABASE_POOL": "0"})
    server.start()
    yield server
    server.stop()


def test_resends_answered_unavailable_are_sent_again_and_none_is_dropped(
    lobby: Room,
    bob: User,
    pages: Pages,
    database_proxy: CuttableProxy,
    server_on_database_proxy: ServerProcess,
) -> None:
    # While PostgreSQL is away, what the page asks over HTTP fails (a catch-up, say).
    pages.allow(r"Failed to load resource: the server responded with a status of 50[03]")
    context = pages.context_for(bob, base_url=server_on_database_proxy.url)
    page = pages.open_page(context, "bob", ROOM)
    expect(page.locator("#room")).to_have_attribute("data-caught-up", "1")
    page.evaluate(RECORD_ERRORS)
    token = set_marker(page)

    database_proxy.cut()  # PostgreSQL goes away under the running server
    typed = ["1+1", "2+2", "3+3"]
    for expression in typed:
        submit(page, expression)
    expect(page.locator("#entries .pending")).to_have_count(3)
    waiting = page.locator("#notices [data-notice=waiting]")
    expect(waiting).to_have_attribute("data-code", "unavailable", timeout=SOON)
    expect_fully_visible(page, "#notices [data-notice=waiting]")
    # Answered `unavailable` and sent again, more than once, while it stays down.
    page.wait_for_function("() => window.__errors.length >= 5", timeout=SOON)
    assert set(errors(page)) == {"unavailable"}
    expect(page.locator("#entries .pending")).to_have_count(3)

    database_proxy.restore()
    wait_for_seq(page, 3, timeout=SOON)
    expect(page.locator("#entries .pending")).to_have_count(0)
    expect(waiting).to_have_count(0)
    assert [row[2] for row in entry_rows(page)] == typed
    assert [_stored(lobby, expression) for expression in typed] == [1, 1, 1]
    assert marker(page) == token


def test_a_refused_expression_stays_with_its_reason_and_can_be_edited_and_sent(
    lobby: Room, bob: User, pages: Pages
) -> None:
    """A burst of refusals keeps every refused expression (not just the last), each with why."""
    page = pages.page_for(bob, ROOM)
    too_long = "1+" * 250 + "1"  # 501 characters
    submit(page, too_long)
    submit(page, "\x1c")  # blank to the server (not to the browser's trim): refused `empty`
    refused = page.locator("#entries .refused")
    expect(refused).to_have_count(2)
    expect(refused.nth(0)).to_have_attribute("data-code", "too_long")
    expect(refused.nth(0)).to_contain_text("at most 500 characters (this one has 501)")
    expect(refused.nth(1)).to_have_attribute("data-code", "empty", timeout=SOON)
    expect(refused.nth(1)).to_contain_text("Type an expression first.")
    expect(page.locator("#notices [data-notice=refused]")).to_be_visible()

    # Edit puts it back in the input; the row stays until the edited one is sent.
    refused.nth(0).locator("button.edit").click()
    field = page.locator("input[name=expression]")
    expect(field).to_have_value(too_long)
    expect(field).to_be_focused()
    expect(refused).to_have_count(2)
    field.fill(too_long[2:])  # 499 characters
    field.press("Enter")
    wait_for_seq(page, 1, timeout=SOON)
    expect(page.locator("#entry-1 .result")).to_have_text("250")
    expect(refused).to_have_count(1)
    expect(refused).to_have_attribute("data-code", "empty")

    # A refused row survives a reload too, and can be dismissed.
    page.reload()
    expect(page.locator("#room")).to_have_attribute("data-ready", "true")
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text("Type an expression first.")
    refused.locator("button.dismiss").click()
    expect(refused).to_have_count(0)
    page.reload()
    expect(page.locator("#room")).to_have_attribute("data-ready", "true")
    expect(refused).to_have_count(0)
    assert Entry.objects.filter(room=lobby).count() == 1


# --- The room is over for this page -----------------------------------------------------------


def _expect_banner(page: Any, code: int, text: str, action: str) -> Any:
    banner = page.locator("#ended")
    expect(banner).to_be_visible(timeout=SOON)
    expect(banner).to_have_attribute("data-code", str(code))
    expect(banner).to_contain_text(text)
    expect(page.locator("#connection")).to_have_attribute("data-state", "ended")
    expect(page.locator("input[name=expression]")).to_be_hidden()  # replaced, not greyed out
    expect_fully_visible(page, "#ended")
    button = banner.get_by_role("link", name=action).or_(banner.get_by_role("button", name=action))
    expect(button).to_be_visible()
    return button


def test_a_session_ended_elsewhere_shows_log_in_again(
    lobby: Room, alice: User, pages: Pages
) -> None:
    page = pages.page_for(alice, ROOM)
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    Session.objects.all().delete()  # logged out everywhere (the room's tick notices: 4401)
    action = _expect_banner(page, 4401, "Your session ended", "Log in again")
    expect(action).to_have_attribute("href", "/accounts/login/?next=%2Frooms%2Flobby%2F")
    page.wait_for_timeout(3_000)  # a 44xx close is never retried
    assert sockets == []
    action.click()
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=%2Frooms%2Flobby%2F$"))


def test_removal_from_the_room_shows_back_to_your_rooms(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    page = pages.page_for(bob, ROOM)
    # Removed once the page has caught up: a catch-up still in flight would be refused (403).
    expect(page.locator("#room")).to_have_attribute("data-caught-up", "1")
    in_thread(services.member_remove, room=lobby, actor=alice, user_id=bob.id)
    action = _expect_banner(page, 4403, "no longer have access", "Back to your rooms")
    expect(action).to_have_attribute("href", "/")
    action.click()
    expect(page).to_have_url(re.compile(r"/$"))


def test_repeated_abuse_shows_reload(lobby: Room, bob: User, pages: Pages) -> None:
    """30 refused frames close the socket with 1008: the page says why and offers Reload."""
    page = pages.page_for(bob, ROOM)
    page.evaluate(
        """limit => {
          const socket = document.getElementById('room')['htmx-internal-data'].webSocket.socket;
          for (let i = 0; i < limit; i++) socket.send('not json');
        }""",
        settings.WS_ABUSE_LIMIT,
    )
    action = _expect_banner(page, 1008, "too many refused messages", "Reload")
    action.click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=SOON)
    expect(page.locator("#ended")).to_have_count(0)
    submit(page, "1+1")
    wait_for_seq(page, 1)
