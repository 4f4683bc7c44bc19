"""Shared results on the room page in real Chromium (static/js/results.js): a result is a control
that inserts its reference at the cursor, a copy button copies the plain value, a `#N` in an
expression goes to the entry it names, and a rounded result reads `≈`."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rooms.models import Entry, Membership, Room
from tests.browser.conftest import entry_rows, expect, submit, wait_for_seq

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"


def _history(room: Room, author: Any, count: int) -> None:
    Entry.objects.bulk_create(
        Entry(room=room, seq=seq, author=author, expression=f"{seq}+0", result=str(seq))
        for seq in range(1, count + 1)
    )
    Room.objects.filter(pk=room.pk).update(last_seq=count)
    # Read by everyone: the page opens at the bottom, not at an unread divider.
    Membership.objects.filter(room=room).update(last_read_seq=count)


def test_clicking_a_result_inserts_its_reference_and_both_pages_see_what_it_gives(
    lobby: Room, alice: Any, bob: Any, page_for: Any
) -> None:
    """Alice's 6*7 arrives live on Bob's page; Bob types `100 + `, clicks her result, sees `#1`
    inserted where his cursor was, submits, and both pages show 142 for his entry."""
    alice_page = page_for(alice, ROOM)
    bob_page = page_for(bob, ROOM)
    submit(alice_page, "6*7")
    wait_for_seq(bob_page, 1)

    field = bob_page.locator("input[name=expression]")
    field.fill("100 + ")
    bob_page.locator("#entry-1 .result").click()
    expect(field).to_have_value("100 + #1")
    expect(field).to_be_focused()
    field.press("Enter")

    wait_for_seq(alice_page, 2)
    wait_for_seq(bob_page, 2)
    wanted = [(1, "alice", "6*7", "42"), (2, "bob", "100 + #1", "142")]
    assert entry_rows(alice_page) == wanted
    assert entry_rows(bob_page) == wanted
    stored = Entry.objects.get(room=lobby, seq=2)
    assert (stored.result, stored.refs) == ("142", [1])
    # The reference in the stored expression links to the entry it names, on both pages.
    for page in (alice_page, bob_page):
        link = page.locator("#entry-2 .expression a.ref")
        expect(link).to_have_text("#1")
        expect(link).to_have_attribute("href", "#entry-1")


def test_the_reference_goes_in_at_the_cursor_replacing_a_selection(
    lobby: Room, alice: Any, page_for: Any
) -> None:
    page = page_for(alice, ROOM)
    submit(page, "2")
    submit(page, "3")
    wait_for_seq(page, 2)
    field = page.locator("input[name=expression]")
    field.fill("( + 1) * X")
    field.evaluate("el => el.setSelectionRange(1, 1)")
    page.locator("#entry-1 .result").click()
    expect(field).to_have_value("(#1 + 1) * X")
    # The cursor is after what was inserted, so typing carries on from there.
    assert field.evaluate("el => [el.selectionStart, el.selectionEnd]") == [3, 3]
    field.evaluate("el => el.setSelectionRange(11, 12)")  # select the X
    page.locator("#entry-2 .result").click()
    expect(field).to_have_value("(#1 + 1) * #2")
    field.press("Enter")
    wait_for_seq(page, 3)
    assert entry_rows(page)[-1] == (3, "alice", "(#1 + 1) * #2", "9")


def test_a_result_is_a_keyboard_control(lobby: Room, alice: Any, page_for: Any) -> None:
    page = page_for(alice, ROOM)
    submit(page, "12*7")
    wait_for_seq(page, 1)
    control = page.locator("#entry-1 button.use")
    expect(control).to_have_attribute("title", "Insert #1 at the cursor")
    assert control.evaluate("el => el.tagName") == "BUTTON"
    control.focus()
    control.press("Enter")
    field = page.locator("input[name=expression]")
    expect(field).to_have_value("#1")
    expect(field).to_be_focused()
    control.focus()
    control.press(" ")
    expect(field).to_have_value("#1#1")


def test_the_copy_button_copies_the_plain_value_and_says_so(
    lobby: Room, alice: Any, page_for: Any, server: Any
) -> None:
    page = page_for(alice, ROOM)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    submit(page, "99999999999999999999*99999999999999999999")
    submit(page, "1/3")
    wait_for_seq(page, 2)
    exact = "9999999999999999999800000000000000000001"  # all 40 digits, no grouping
    expect(page.locator("#entry-1 .result")).to_have_text(exact)
    copy = page.locator("#entry-1 button.copy")
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    expect(copy).to_have_attribute("data-state", "copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == exact
    expect(page.locator(".results-status")).to_have_text("Copied the result of #1.")
    expect(copy).to_have_text("Copy", timeout=5_000)  # the confirmation goes away by itself
    page.locator("#entry-2 button.copy").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == (
        "0.3333333333333333333333333333"  # the plain value: no ≈
    )


def test_a_rounded_result_reads_approximately_and_an_exact_one_equals(
    lobby: Room, alice: Any, page_for: Any
) -> None:
    page = page_for(alice, ROOM)
    submit(page, "1/3")
    submit(page, "2**100")
    submit(page, "1/0")
    wait_for_seq(page, 3)
    expect(page.locator("#entry-1 .equals")).to_have_text("≈")
    expect(page.locator("#entry-1")).to_have_attribute("data-rounded", "true")
    expect(page.locator("#entry-2 .equals")).to_have_text("=")
    expect(page.locator("#entry-2 .result")).to_have_text("1267650600228229401496703205376")
    expect(page.locator("#entry-3 button")).to_have_count(0)  # a failed entry has no result


def test_a_reference_goes_to_an_older_entry_loading_it_first(
    lobby: Room, alice: Any, bob: Any, page_for: Any
) -> None:
    """Entry 5 of 120 is not on the page (it shows the newest 50): following `#5` loads older
    pages until it is there, scrolls to it and highlights it."""
    _history(lobby, alice, 120)
    page = page_for(bob, ROOM)
    expect(page.locator("#entry-5")).to_have_count(0)
    submit(page, "#5 * 2")
    wait_for_seq(page, 121)
    expect(page.locator("#entry-121 .result")).to_have_text("10")
    page.locator("#entry-121 .expression a.ref").click()
    target = page.locator("#entry-5")
    expect(target).to_have_class(re.compile(r"\bhighlight\b"))
    expect(target).to_be_in_viewport()
    seqs = [row[0] for row in entry_rows(page)]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) and seqs[-1] == 121
    assert 5 in seqs
    # A link to an entry already shown only scrolls there.
    page.locator("#entry-121 .expression a.ref").click()
    expect(target).to_be_in_viewport()


def test_a_reference_far_back_opens_the_history_at_that_entry(
    lobby: Room, alice: Any, page_for: Any
) -> None:
    _history(lobby, alice, 1200)
    page = page_for(alice, ROOM)
    submit(page, "#3 + 1")
    wait_for_seq(page, 1201)
    page.locator("#entry-1201 .expression a.ref").click()
    page.wait_for_url(re.compile(r"/rooms/lobby/history/\?before=4#entry-3$"))
    expect(page.locator("#entry-3")).to_be_in_viewport()
