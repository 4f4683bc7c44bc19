"""Who is online and who is typing, as the room page shows it in real Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.models import User
from rooms.models import Room
from tests.browser.conftest import Pages, expect, submit, wait_for_seq

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"

# Every text `#typing` ever shows on a page, recorded in the page itself (the element is
# replaced by each presence frame, so the observer watches its parent).
RECORD_TYPING = """() => {
  window.__typingSeen = [];
  const note = () => {
    const typing = document.getElementById("typing");
    const text = typing ? typing.textContent.trim() : "";
    if (text) window.__typingSeen.push(text);
  };
  note();
  new MutationObserver(note).observe(document.getElementById("typing").parentNode, {
    childList: true, subtree: true, characterData: true,
  });
}"""


def online(page: Any) -> list[str]:
    return sorted(page.locator("#online li").all_text_contents())


def expect_online(page: Any, *usernames: str, timeout: float = 5_000) -> None:
    """`#online` lists exactly these people, one item each."""
    items = page.locator("#online li")
    expect(items).to_have_count(len(usernames), timeout=timeout)
    for username in usernames:
        expect(page.locator(f'#online li[data-username="{username}"]')).to_have_count(1)
    assert online(page) == sorted(usernames)


def test_each_sees_the_other_online_once_per_person(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    alice_page = pages.page_for(alice, ROOM)
    expect_online(alice_page, "alice")
    bob_page = pages.page_for(bob, ROOM)
    expect_online(bob_page, "alice", "bob")
    expect_online(alice_page, "alice", "bob")

    # A second tab of alice's is still one alice, on every page.
    alice_tab = pages.open_page(alice_page.context, "alice-tab-2", ROOM)
    expect_online(alice_tab, "alice", "bob")
    alice_page.wait_for_timeout(1_200)  # a presence frame would have come by now
    expect_online(alice_page, "alice", "bob")
    expect_online(bob_page, "alice", "bob")

    # Closing one of her two tabs leaves her online.
    alice_tab.close()
    bob_page.wait_for_timeout(1_200)
    expect_online(bob_page, "alice", "bob")


def test_typing_shows_to_others_only_and_clears_when_the_expression_is_stored(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    alice_page = pages.page_for(alice, ROOM)
    bob_page = pages.page_for(bob, ROOM)
    expect_online(alice_page, "alice", "bob")
    expect_online(bob_page, "alice", "bob")
    bob_page.evaluate(RECORD_TYPING)
    alice_typing = alice_page.locator("#typing")
    expect(alice_typing).to_have_text("")

    bob_input = bob_page.locator("input[name=expression]")
    bob_input.press_sequentially("12*7", delay=50)
    expect(alice_typing).to_have_text("bob is typing…")
    expect(bob_page.locator("#typing")).to_have_text("")

    # Storing bob's expression ends his typing at once (not after the 5 s expiry).
    bob_input.press("Enter")
    wait_for_seq(alice_page, 1)
    expect(alice_typing).to_have_text("", timeout=2_000)

    # Alice types: bob sees her; she never sees herself.
    alice_page.evaluate(RECORD_TYPING)
    alice_page.locator("input[name=expression]").press_sequentially("1+", delay=50)
    expect(bob_page.locator("#typing")).to_have_text("alice is typing…")
    submit(alice_page, "1+1")
    wait_for_seq(bob_page, 2)
    expect(bob_page.locator("#typing")).to_have_text("", timeout=2_000)

    assert set(bob_page.evaluate("() => window.__typingSeen")) == {"alice is typing…"}
    assert alice_page.evaluate("() => window.__typingSeen") == []


def test_typing_clears_when_the_input_is_emptied(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    alice_page = pages.page_for(alice, ROOM)
    bob_page = pages.page_for(bob, ROOM)
    expect_online(alice_page, "alice", "bob")
    bob_input = bob_page.locator("input[name=expression]")
    bob_input.press_sequentially("99", delay=50)
    expect(alice_page.locator("#typing")).to_have_text("bob is typing…")
    bob_input.press("Backspace")
    bob_input.press("Backspace")  # empty: the page sends typing.stop
    expect(alice_page.locator("#typing")).to_have_text("", timeout=2_000)


def test_closing_the_page_leaves_the_room_within_two_seconds(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    alice_page = pages.page_for(alice, ROOM)
    bob_page = pages.page_for(bob, ROOM)
    expect_online(alice_page, "alice", "bob")

    bob_page.close()
    expect_online(alice_page, "alice", timeout=2_500)
