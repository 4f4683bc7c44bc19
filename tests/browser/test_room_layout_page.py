"""The room page's layout in real Chromium, on a laptop (1280x800) and a phone (360x740): the log
is its own scroll area between a header and an input bar that stay; the newest entry is fully
visible (nothing covers it: the element at its centre is the entry itself) after a submit, a live
entry, a reload and a catch-up; scrolled up, new entries do not move you and `#jump-new` counts
them; notices show just above the input, inside the viewport, and stay while they apply.

Each room starts with more than a screenful of history, so "at the bottom" means something.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import override_settings

from accounts.models import User
from rooms import services
from rooms.models import Entry, Membership, Room
from tests.browser.conftest import (
    Pages,
    expect,
    expect_fully_visible,
    goto_room,
    in_thread,
    not_fully_visible,
    submit,
    wait_for_seq,
)
from tests.browser.proxy import CuttableProxy
from tests.live import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"
SOON = 15_000  # ms: "eventually", many times what the page needs
VIEWPORTS = {
    "laptop": {"width": 1280, "height": 800},
    "phone": {"width": 360, "height": 740},
}
HISTORY = 50  # a screenful and more on both, and no older page to load
OFFLINE_NOISE = [re.compile(r"^\[error\] \[object Event\]$")]


@pytest.fixture(params=list(VIEWPORTS), ids=list(VIEWPORTS))
def viewport(request: pytest.FixtureRequest) -> dict[str, int]:
    return VIEWPORTS[request.param]


@pytest.fixture
def proxy(server: ServerProcess) -> Any:
    instance = CuttableProxy(server.port)
    yield instance
    instance.close()


def _history(room: Room, author: User, count: int) -> None:
    Entry.objects.bulk_create(
        Entry(room=room, seq=seq, author=author, expression=f"{seq}+0", result=str(seq))
        for seq in range(1, count + 1)
    )
    Room.objects.filter(pk=room.pk).update(last_seq=count)
    # Everyone has read it: these tests are about the bottom of the log (with unread entries
    # the page opens at the first of them instead: tests/browser/test_unread_page.py).
    Membership.objects.filter(room=room).update(last_read_seq=count)


def _store(room_id: int, author: User, expressions: list[str]) -> None:
    """Store and broadcast like any client's submission, past the per-person rate limit."""
    with override_settings(
        EXPRESSION_BUCKET_CAPACITY=10_000, EXPRESSION_BUCKET_REFILL_PER_SECOND=10_000
    ):
        for expression in expressions:
            services.entry_submit_sync(
                room_id=room_id, author=author, expression=expression, client_id=None
            )


def _open(pages: Pages, user: User, viewport: dict[str, int], base_url: str | None = None) -> Any:
    context = pages.context_for(user, base_url=base_url, viewport=viewport)
    return pages.open_page(context, user.username, ROOM)


def _log_scroll(page: Any) -> float:
    return page.evaluate("() => document.getElementById('entries').scrollTop")


def test_newest_entry_is_fully_visible_after_submit_live_entry_reload_and_catch_up(
    lobby: Room,
    alice: User,
    bob: User,
    pages: Pages,
    proxy: CuttableProxy,
    viewport: dict[str, int],
) -> None:
    pages.allow(*OFFLINE_NOISE)
    _history(lobby, alice, HISTORY)
    page = _open(pages, bob, viewport, base_url=proxy.url)
    seq = HISTORY
    expect_fully_visible(page, f"#entry-{seq}")  # on load

    # The page itself never scrolls: the header and the input bar stay where they are.
    assert page.evaluate("() => document.scrollingElement.scrollHeight") == viewport["height"]
    expect_fully_visible(page, "#connection")
    expect_fully_visible(page, "input[name=expression]")

    # A submit: your result comes in at the bottom, in view.
    submit(page, "12*7")
    seq += 1
    wait_for_seq(page, seq)
    expect(page.locator(f"#entry-{seq} .result")).to_have_text("84")
    expect_fully_visible(page, f"#entry-{seq}")

    # A live entry while at the bottom.
    in_thread(_store, lobby.id, alice, ["6*7"])
    seq += 1
    wait_for_seq(page, seq, timeout=SOON)
    expect_fully_visible(page, f"#entry-{seq}")

    # A reload.
    page.reload()
    expect(page.locator("#room")).to_have_attribute("data-ready", "true")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect_fully_visible(page, f"#entry-{seq}")

    # A catch-up after the network was gone (and its notice, shown above the input).
    page.context.set_offline(True)
    proxy.cut()
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    expect_fully_visible(page, "#notices [data-notice=connection]")
    in_thread(_store, lobby.id, alice, [f"{n}*2" for n in range(1, 6)])
    proxy.restore()
    page.context.set_offline(False)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=SOON)
    seq += 5
    wait_for_seq(page, seq, timeout=SOON)
    expect(page.locator("#notices [data-notice=catch-up]")).to_contain_text("5 new entries")
    expect_fully_visible(page, "#notices [data-notice=catch-up]")
    expect_fully_visible(page, f"#entry-{seq}")
    expect(page.locator("#jump-new")).to_be_hidden()


def test_scrolled_up_new_entries_do_not_move_you_and_jump_new_takes_you_down(
    lobby: Room, alice: User, bob: User, pages: Pages, viewport: dict[str, int]
) -> None:
    _history(lobby, alice, HISTORY)
    page = _open(pages, bob, viewport)
    jump = page.locator("#jump-new")
    expect(jump).to_be_hidden()

    page.evaluate("() => { document.getElementById('entries').scrollTop = 300; }")
    page.wait_for_function("() => document.getElementById('entries').scrollTop === 300")
    in_thread(_store, lobby.id, alice, ["1+1", "2+2", "3+3"])
    wait_for_seq(page, HISTORY + 3, timeout=SOON)
    expect(jump).to_have_text("3 new ↓")
    expect_fully_visible(page, "#jump-new")
    assert _log_scroll(page) == 300, "a new entry moved the log while scrolled up"
    assert not_fully_visible(page, f"#entry-{HISTORY + 3}") != ""

    jump.click()
    expect_fully_visible(page, f"#entry-{HISTORY + 3}")
    expect(jump).to_be_hidden()
    expect(page.locator("input[name=expression]")).to_be_focused()

    # Back at the bottom, live entries keep the newest in view and no button shows.
    in_thread(_store, lobby.id, alice, ["4+4"])
    wait_for_seq(page, HISTORY + 4, timeout=SOON)
    expect_fully_visible(page, f"#entry-{HISTORY + 4}")
    expect(jump).to_be_hidden()

    # Scrolling down by hand to the bottom also clears the count.
    page.evaluate("() => { document.getElementById('entries').scrollTop = 0; }")
    in_thread(_store, lobby.id, alice, ["5+5"])
    expect(jump).to_have_text("1 new ↓", timeout=SOON)
    page.locator("#entries").hover()
    page.mouse.wheel(0, 100_000)
    expect(jump).to_be_hidden()
    expect_fully_visible(page, f"#entry-{HISTORY + 5}")


def test_notices_show_above_the_input_in_view_and_stay(
    lobby: Room, alice: User, bob: User, pages: Pages, viewport: dict[str, int]
) -> None:
    """A refusal's notice is inside the viewport just above the input, and stays (it used to hide
    itself after 6 s, below the fold); the refused row at the bottom of the log stays in view."""
    _history(lobby, alice, HISTORY)
    page = _open(pages, bob, viewport)
    submit(page, "1" * 501)
    refusal = page.locator("#notices [data-notice=refused]")
    expect(refusal).to_have_attribute("data-code", "too_long")
    expect_fully_visible(page, "#notices [data-notice=refused]")
    expect_fully_visible(page, "#entries .refused")
    above_input = page.evaluate(
        """() => {
          const notices = document.getElementById('notices').getBoundingClientRect();
          const input = document.getElementById('compose').getBoundingClientRect();
          const log = document.getElementById('entries').getBoundingClientRect();
          return notices.bottom <= input.top + 0.5 && notices.top >= log.bottom - 0.5;
        }"""
    )
    assert above_input, "the notices sit between the log and the input"

    page.wait_for_timeout(9_000)  # longer than the old notices lived
    expect_fully_visible(page, "#notices [data-notice=refused]")
    expect_fully_visible(page, "#entries .refused")

    # A notice stays until it stops applying: the next submission ends the refusal's.
    submit(page, "2+2")
    wait_for_seq(page, HISTORY + 1)
    expect(refusal).to_have_count(0)
    expect_fully_visible(page, f"#entry-{HISTORY + 1}")
    # The refused expression itself is still there to edit.
    expect(page.locator("#entries .refused")).to_have_count(1)


def test_a_notice_can_be_dismissed(lobby: Room, bob: User, pages: Pages) -> None:
    page = pages.page_for(bob, ROOM)
    submit(page, "1" * 501)
    notice = page.locator("#notices [data-notice=refused]")
    expect(notice).to_be_visible()
    notice.locator("button.dismiss").click()
    expect(notice).to_have_count(0)


def test_the_page_layout_holds_on_a_phone_with_long_names_and_many_people(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    """A long room name and a long expression do not push the input or the pill off a phone."""
    Room.objects.filter(pk=lobby.pk).update(name="A room with a rather long name " * 3)
    _history(lobby, alice, HISTORY)
    page = _open(pages, bob, VIEWPORTS["phone"])
    submit(page, "+".join(["123456789"] * 40))
    wait_for_seq(page, HISTORY + 1)
    expect_fully_visible(page, f"#entry-{HISTORY + 1}")
    expect_fully_visible(page, "#connection")
    expect_fully_visible(page, "input[name=expression]")
    width = page.evaluate("() => document.scrollingElement.scrollWidth")
    assert width <= VIEWPORTS["phone"]["width"], "the page scrolls sideways"
    goto_room(page, ROOM)
    expect_fully_visible(page, f"#entry-{HISTORY + 1}")
