"""The room page is keyboard first (Chromium): focus starts in the input, Enter submits, ↑/↓ recall
your own earlier expressions in this room from its history (so across reloads, a page at a time),
Escape clears, `/` focuses the input from anywhere else (and is not typed), and every control shows
where the focus is."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.models import User
from rooms import services
from rooms.models import Entry, Membership, Room
from tests.browser.conftest import Pages, expect, goto_room, in_thread, submit, wait_for_seq

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"
OWN = 70  # more than one page (50) of bob's own history


def _field(page: Any) -> Any:
    return page.locator("input[name=expression]")


def _mixed_history(room: Room, alice: User, bob: User) -> None:
    """bob wrote the odd seqs ("1+0", "3+0", …), alice the even ones."""
    Entry.objects.bulk_create(
        Entry(
            room=room,
            seq=seq,
            author=bob if seq % 2 else alice,
            expression=f"{seq}+0",
            result=str(seq),
        )
        for seq in range(1, 2 * OWN + 1)
    )
    Room.objects.filter(pk=room.pk).update(last_seq=2 * OWN)
    # Read by everyone: the page opens at the bottom, not at an unread divider.
    Membership.objects.filter(room=room).update(last_read_seq=2 * OWN)


def test_focus_starts_in_the_input_and_enter_submits(lobby: Room, bob: User, pages: Pages) -> None:
    page = pages.page_for(bob, ROOM)
    expect(_field(page)).to_be_focused()
    page.keyboard.type("6*7")  # no click first
    page.keyboard.press("Enter")
    wait_for_seq(page, 1)
    expect(page.locator("#entry-1 .result")).to_have_text("42")
    expect(_field(page)).to_have_value("")
    expect(_field(page)).to_be_focused()


def test_up_and_down_recall_your_own_expressions_from_history_after_a_reload(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    _mixed_history(lobby, alice, bob)
    page = pages.page_for(bob, ROOM)
    submit(page, "7*6")
    wait_for_seq(page, 2 * OWN + 1)
    in_thread(
        services.entry_submit_sync,
        room_id=lobby.id,
        author=alice,
        expression="999",
        client_id=None,
    )
    wait_for_seq(page, 2 * OWN + 2)

    goto_room(page, ROOM)  # a reload: what is recalled comes from the server
    field = _field(page)
    expect(field).to_be_focused()
    field.type("12")  # a draft
    field.press("ArrowUp")
    expect(field).to_have_value("7*6")  # bob's newest, not alice's "999"
    field.press("ArrowUp")
    expect(field).to_have_value(f"{2 * OWN - 1}+0")
    field.press("ArrowUp")
    expect(field).to_have_value(f"{2 * OWN - 3}+0")
    field.press("ArrowDown")
    expect(field).to_have_value(f"{2 * OWN - 1}+0")
    field.press("ArrowDown")
    expect(field).to_have_value("7*6")
    field.press("ArrowDown")
    expect(field).to_have_value("12")  # back to the draft
    assert page.evaluate("() => document.activeElement.selectionStart") == 2  # caret at the end

    # All the way back, past the first page of history, to bob's first expression.
    for _ in range(OWN + 1):
        field.press("ArrowUp")
    expect(field).to_have_value("1+0")
    field.press("ArrowUp")  # nothing older: stays
    expect(field).to_have_value("1+0")

    # A recalled expression is sent like a typed one.
    field.press("ArrowDown")
    expect(field).to_have_value("3+0")
    field.press("Enter")
    wait_for_seq(page, 2 * OWN + 3)
    expect(page.locator(f"#entry-{2 * OWN + 3} .expression")).to_have_text("3+0")
    field.press("ArrowUp")
    expect(field).to_have_value("3+0")  # what you just sent is the newest


def test_escape_clears_and_slash_focuses_the_input_without_typing_itself(
    lobby: Room, bob: User, pages: Pages
) -> None:
    page = pages.page_for(bob, ROOM)
    field = _field(page)
    field.type("1+2")
    field.press("Escape")
    expect(field).to_have_value("")
    expect(field).to_be_focused()

    page.locator("h1").click()  # focus leaves the input
    expect(field).not_to_be_focused()
    page.keyboard.press("/")
    expect(field).to_be_focused()
    expect(field).to_have_value("")  # the / was not typed

    # In the input, / is division.
    page.keyboard.type("8/2")
    expect(field).to_have_value("8/2")
    page.keyboard.press("Enter")
    wait_for_seq(page, 1)
    expect(page.locator("#entry-1 .result")).to_have_text("4")

    # From a link or a button too.
    page.locator(".room-links a", has_text="History").focus()
    page.keyboard.press("/")
    expect(field).to_be_focused()
    expect(field).to_have_value("")
    page.locator("#entries").focus()
    page.keyboard.press("/")
    expect(field).to_be_focused()


# The focused element's visible focus indicator, or "" when it has none.
FOCUS_RING = """() => {
  const elt = document.activeElement;
  if (!elt || elt === document.body) return null;
  const style = getComputedStyle(elt);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
  const ring = style.boxShadow && style.boxShadow !== "none";
  const cls = typeof elt.className === "string" && elt.className ? elt.className.split(" ")[0] : "";
  const text = elt.textContent || elt.value || elt.getAttribute("aria-label") || "";
  const name = elt.tagName.toLowerCase() + (elt.id ? "#" + elt.id : "") + (cls ? "." + cls : "")
    + ":" + text.trim().slice(0, 20);
  return [name, outline || ring ? "visible" : "none"];
}"""


def test_every_control_shows_visible_focus(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    """Tab through the whole page, with a refused row, a notice and `#jump-new` showing: each
    control that takes the focus shows it."""
    Entry.objects.bulk_create(
        Entry(room=lobby, seq=seq, author=alice, expression=f"{seq}+0", result=str(seq))
        for seq in range(1, 61)
    )
    Room.objects.filter(pk=lobby.pk).update(last_seq=60)
    # Read by everyone: the page opens at the bottom, not at an unread divider.
    Membership.objects.filter(room=lobby).update(last_read_seq=60)
    page = pages.page_for(bob, ROOM)
    submit(page, "1" * 501)  # a refused row (Edit, Dismiss) and a notice (Dismiss)
    expect(page.locator("#entries .refused")).to_have_count(1)
    page.evaluate("() => { document.getElementById('entries').scrollTop = 200; }")
    page.wait_for_function("() => document.getElementById('entries').scrollTop === 200")
    in_thread(
        services.entry_submit_sync,
        room_id=lobby.id,
        author=alice,
        expression="1+1",
        client_id=None,
    )
    expect(page.locator("#jump-new")).to_be_visible()

    page.locator("a.brand").focus()
    seen: list[list[str]] = []
    for _ in range(400):
        ring = page.evaluate(FOCUS_RING)
        if ring is not None:
            if seen and ring == seen[0]:
                break  # round the whole page once
            seen.append(ring)
        page.keyboard.press("Tab")
    names = [name for name, _ in seen]
    for wanted in ("div#entries", "input#expression", "button#jump-new", "button.edit:Edit"):
        assert any(name.startswith(wanted) for name in names), (
            f"{wanted} never focused; focused in turn: {names}; #jump-new hidden now: "
            f"{page.locator('#jump-new').is_hidden()}"
        )
    assert "button.dismiss:Dismiss" in names  # the refused row's
    assert "button.dismiss:×" in names  # the notice's
    missing = [name for name, ring in seen if ring != "visible"]
    assert not missing, f"no visible focus on: {missing}"
