"""The room page in real Chromium: what two people in one room see, live and in order."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rooms.models import Entry, Room
from tests.browser.conftest import entry_rows, expect, submit, wait_for_seq

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"


def test_both_pages_show_every_expression_live_in_the_same_order(
    lobby: Room, alice: Any, bob: Any, page_for: Any
) -> None:
    """Alice and Bob take turns; each sees the other's expression and exact result appear
    without a reload, and the two pages end up showing the very same list."""
    alice_page = page_for(alice, ROOM)
    bob_page = page_for(bob, ROOM)
    turns = [
        (alice_page, "alice", "12*7", "84"),
        (bob_page, "bob", "0.1+0.2", "0.3"),
        (alice_page, "alice", "1/0", "division by zero"),
        (bob_page, "bob", "1/3", "0.3333333333333333333333333333"),
        (alice_page, "alice", "x+1", "unknown name 'x'"),
        (bob_page, "bob", "2**10", "1024"),
        (alice_page, "alice", "sqrt(2)", "1.414213562373095048801688724"),
        (bob_page, "bob", "(1+", "syntax error at column 4"),
    ]
    for seq, (page, _author, expression, _outcome) in enumerate(turns, start=1):
        submit(page, expression)
        expect(page.locator("input[name=expression]")).to_have_value("")
        wait_for_seq(alice_page, seq)
        wait_for_seq(bob_page, seq)

    wanted = [
        (seq, author, expression, outcome)
        for seq, (_page, author, expression, outcome) in enumerate(turns, start=1)
    ]
    assert entry_rows(alice_page) == wanted
    assert entry_rows(bob_page) == wanted
    # Results are the `.result` text exactly; failures are shown as their error, not as a result.
    results = [r for r in alice_page.locator("#entries .result").all_text_contents()]
    assert results == ["84", "0.3", "0.3333333333333333333333333333", "1024",
                       "1.414213562373095048801688724"]  # fmt: skip
    expect(alice_page.locator("#entry-3")).to_have_class(re.compile(r"\bfailed\b"))
    expect(bob_page.locator("#entry-3 .error-text")).to_have_text("division by zero")
    assert Entry.objects.filter(room=lobby).count() == len(turns)


def test_submissions_at_the_same_moment_are_shown_in_one_order_everywhere(
    lobby: Room, alice: Any, bob: Any, page_for: Any
) -> None:
    """Both type quickly without waiting for each other: whatever order the server stored, both
    pages show seq 1..N without a gap or a duplicate, in the same order."""
    alice_page = page_for(alice, ROOM)
    bob_page = page_for(bob, ROOM)
    for index in range(4):
        submit(alice_page, f"{index}+100")
        submit(bob_page, f"{index}*1000")
    wait_for_seq(alice_page, 8)
    wait_for_seq(bob_page, 8)

    alice_rows = entry_rows(alice_page)
    assert alice_rows == entry_rows(bob_page)
    assert [row[0] for row in alice_rows] == list(range(1, 9))
    stored = list(
        Entry.objects.filter(room=lobby)
        .order_by("seq")
        .values_list("seq", "author__username", "expression", "result")
    )
    assert alice_rows == stored
    # Each person's own expressions stay in the order they typed them.
    assert [r[2] for r in alice_rows if r[1] == "alice"] == [f"{i}+100" for i in range(4)]
    assert [r[2] for r in alice_rows if r[1] == "bob"] == [f"{i}*1000" for i in range(4)]


def test_connection_status_says_connected(lobby: Room, alice: Any, page_for: Any) -> None:
    page = page_for(alice, ROOM)
    connection = page.locator("#connection")
    expect(connection).to_have_text("Connected")
    expect(connection).to_have_attribute("data-state", "connected")


def _history(room: Room, author: Any, count: int) -> None:
    Entry.objects.bulk_create(
        Entry(room=room, seq=seq, author=author, expression=f"{seq}+0", result=str(seq))
        for seq in range(1, count + 1)
    )
    Room.objects.filter(pk=room.pk).update(last_seq=count)


def test_latest_50_on_load_and_older_pages_on_demand(
    lobby: Room, alice: Any, bob: Any, page_for: Any
) -> None:
    """110 entries: the page opens with 61..110; "Load older entries" brings 11..60, then
    1..10, each page before the ones shown, oldest first, never twice; then the button is gone.
    A live entry still lands at the end afterwards."""
    _history(lobby, alice, 110)
    page = page_for(bob, ROOM)
    seqs = lambda: [row[0] for row in entry_rows(page)]  # noqa: E731
    assert seqs() == list(range(61, 111))
    assert entry_rows(page)[-1] == (110, "alice", "110+0", "110")

    older = page.locator("#load-older")
    expect(older).to_have_text("Load older entries")
    older.click()
    expect(page.locator("#entries article[data-seq]")).to_have_count(100)
    assert seqs() == list(range(11, 111))

    # Scrolled to the top, the page may already be loading the next page by itself (it loads
    # older entries when the button comes into view); a click then has nothing left to do.
    page.evaluate("document.getElementById('load-older')?.click()")
    expect(page.locator("#entries article[data-seq]")).to_have_count(110)
    assert seqs() == list(range(1, 111))
    expect(older).to_have_count(0)  # nothing older left
    assert entry_rows(page)[0] == (1, "alice", "1+0", "1")

    submit(page, "12*7")
    wait_for_seq(page, 111)
    assert seqs() == list(range(1, 112))
    assert entry_rows(page)[-1] == (111, "bob", "12*7", "84")


def test_a_short_room_has_no_load_older_button(lobby: Room, alice: Any, page_for: Any) -> None:
    _history(lobby, alice, 50)
    page = page_for(alice, ROOM)
    expect(page.locator("#entries article[data-seq]")).to_have_count(50)
    expect(page.locator("#load-older")).to_have_count(0)


def test_scrolling_to_the_top_brings_older_entries_without_a_click(
    lobby: Room, alice: Any, bob: Any, page_for: Any
) -> None:
    _history(lobby, alice, 80)
    page = page_for(bob, ROOM)
    expect(page.locator("#entries article[data-seq]")).to_have_count(50)
    # The log is the scroll area, not the page.
    page.evaluate("document.getElementById('entries').scrollTop = 0")
    expect(page.locator("#entries article[data-seq]")).to_have_count(80)
    assert [row[0] for row in entry_rows(page)] == list(range(1, 81))
