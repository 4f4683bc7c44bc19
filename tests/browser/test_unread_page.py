"""Awareness in Chromium: the room opens at the first unread entry under its divider, the read
position follows what a visible page shows, the room list's unread counts change live (and after a
reload), the hidden tab's title counts what arrived, your own entries carry `data-mine`, times are
local with date separators, and history searches expression text."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import override_settings

from accounts.models import User
from rooms import services
from rooms.models import Membership, Room
from tests.browser.conftest import (
    Pages,
    expect,
    expect_fully_visible,
    in_thread,
    marker,
    not_fully_visible,
    set_marker,
    submit,
    wait_for_seq,
)
from tests.factories import MembershipFactory, RoomFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _store(room_id: int, author: User, expressions: list[str]) -> None:
    with override_settings(
        EXPRESSION_BUCKET_CAPACITY=10_000, EXPRESSION_BUCKET_REFILL_PER_SECOND=10_000
    ):
        for expression in expressions:
            services.entry_submit_sync(
                room_id=room_id, author=author, expression=expression, client_id=None
            )


def _read_of(room: Room, user: User) -> int:
    return Membership.objects.get(room=room, user=user).last_read_seq


def _eventually(fn: Any, expected: Any, page: Any, timeout_ms: int = 5_000) -> None:
    waited = 0
    while True:
        value = in_thread(fn)
        if value == expected or waited >= timeout_ms:
            break
        page.wait_for_timeout(100)
        waited += 100
    assert value == expected


def _set_hidden(page: Any, hidden: bool) -> None:
    """Emulate the tab going to the background (or back): what a browser says and fires."""
    page.evaluate(
        """hidden => {
            Object.defineProperty(document, "visibilityState", {
                configurable: true, get: () => hidden ? "hidden" : "visible" });
            Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_the_room_opens_at_the_first_unread_entry_under_the_divider(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    in_thread(_store, lobby.id, bob, [f"{n}+0" for n in range(1, 6)])
    in_thread(services.read_position_advance, room_id=lobby.id, user=bob, seq=5)
    in_thread(_store, lobby.id, alice, [f"{n}*1" for n in range(6, 46)])  # while bob was away
    page = pages.page_for(bob, "/rooms/lobby/")
    divider = page.locator("#unread-divider")
    expect(divider).to_have_count(1)
    # Right before the first unread entry, and in view instead of the bottom.
    assert (
        page.evaluate("() => document.getElementById('unread-divider').nextElementSibling.id")
        == "entry-6"
    )
    expect_fully_visible(page, "#unread-divider")
    expect_fully_visible(page, "#entry-6")
    assert not_fully_visible(page, "#entry-45")
    # Your own entries are marked as yours (the server's page and live ones alike).
    expect(page.locator("#entry-1")).to_have_attribute("data-mine", "")
    expect(page.locator("#entry-6")).not_to_have_attribute("data-mine", "")
    # The visible page has shown up to 45: the server's read position follows.
    _eventually(lambda: _read_of(lobby, bob), 45, page)
    submit(page, "12*7")
    wait_for_seq(page, 46)
    expect(page.locator("#entry-46")).to_have_attribute("data-mine", "")
    _eventually(lambda: _read_of(lobby, bob), 46, page)
    # Come back later: nothing unread, no divider, the bottom.
    page.reload()
    expect(page.locator("#room")).to_have_attribute("data-ready", "true")
    expect(page.locator("#unread-divider")).to_have_count(0)
    expect_fully_visible(page, "#entry-46")


def test_the_room_list_counts_unread_entries_live_and_after_a_reload(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    other = RoomFactory(name="Annex", owner=alice)
    MembershipFactory(room=other, user=bob)
    in_thread(_store, other.id, alice, ["1"])
    in_thread(services.read_position_advance, room_id=other.id, user=bob, seq=1)
    page = pages.page_for(bob)
    page.goto("/")
    expect(page.locator("#my-rooms")).to_have_attribute("data-live", "true")
    lobby_item = page.locator('#my-rooms li[data-room="lobby"]')
    expect(lobby_item).to_have_attribute("data-unread", "0")
    expect(page.locator("#my-rooms li").first).to_have_attribute("data-room", other.slug)
    kept = set_marker(page)

    in_thread(_store, lobby.id, alice, ["2+2", "3+3"])
    expect(lobby_item).to_have_attribute("data-unread", "2")
    expect(lobby_item.locator(".unread-count")).to_have_text("2")
    expect(lobby_item.locator(".unread")).to_be_visible()
    # Latest activity first.
    expect(page.locator("#my-rooms li").first).to_have_attribute("data-room", "lobby")
    assert marker(page) == kept  # no reload

    page.reload()
    expect(lobby_item).to_have_attribute("data-unread", "2")
    expect(page.locator("#my-rooms li").first).to_have_attribute("data-room", "lobby")
    expect(page.locator("#my-rooms")).to_have_attribute("data-live", "true")
    kept = set_marker(page)

    # Reading the room in another tab clears the count here, live.
    pages.open_page(page.context, "bob-room", "/rooms/lobby/")
    expect(lobby_item).to_have_attribute("data-unread", "0")
    expect(lobby_item.locator(".unread")).to_be_hidden()
    assert marker(page) == kept


def test_the_hidden_tab_title_counts_what_arrived(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    page = pages.page_for(bob, "/rooms/lobby/")
    expect(page).to_have_title("Lobby · Calcrooms")
    _set_hidden(page, True)
    in_thread(_store, lobby.id, alice, ["1+1", "2+2", "3+3"])
    wait_for_seq(page, 3)
    expect(page).to_have_title("(3) Lobby · Calcrooms")
    page.wait_for_timeout(1_500)
    assert in_thread(_read_of, lobby, bob) == 0  # hidden: not read
    _set_hidden(page, False)
    expect(page).to_have_title("Lobby · Calcrooms")
    _eventually(lambda: _read_of(lobby, bob), 3, page)
    # Hidden again: the count starts over.
    _set_hidden(page, True)
    in_thread(_store, lobby.id, alice, ["4+4"])
    expect(page).to_have_title("(1) Lobby · Calcrooms")


def test_history_searches_expression_text_and_shows_local_times(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    in_thread(_store, lobby.id, alice, ["sqrt(2)", "1+1"])
    in_thread(_store, lobby.id, bob, ["SQRT(16)", "2*3"])
    page = pages.page_for(bob)
    page.goto("/rooms/lobby/history/")
    expect(page.locator("#history article")).to_have_count(4)
    expect(page.locator("#history article").first).to_have_attribute("data-day", "Today")
    expect(page.locator("#history article[data-day]")).to_have_count(1)  # one day: one separator
    time = page.locator("#entry-1 time")
    expect(time).to_have_attribute("title", re.compile(r"\d"))
    expect(page.locator("#entry-3")).to_have_attribute("data-mine", "")
    search = page.get_by_label("Search")
    search.fill("Sqrt")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"q=Sqrt"))
    expect(page.locator("#history article")).to_have_count(2)
    expect(page.locator("#history #entry-1")).to_have_count(1)
    expect(page.locator("#history #entry-3")).to_have_count(1)
    # The author filter keeps the search.
    page.get_by_label("Author").select_option("bob")
    expect(page).to_have_url(re.compile(r"author=bob"))
    expect(page.locator("#history article")).to_have_count(1)
    expect(page.locator("#history #entry-3")).to_have_count(1)
    expect(search).to_have_value("Sqrt")
