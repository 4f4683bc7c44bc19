"""Who is online and who is typing, as the room page shows it in real Chromium.

The pages talk to a server of this module's on which typing never expires and presence records
outlive every test, so whatever clears a typing line or takes someone off the list is what the
test did; each is waited for with a generous deadline (`SOON`), never timed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from accounts.models import User
from rooms.models import Room
from tests.browser.conftest import Pages, expect, submit, wait_for_seq
from tests.live import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"
SOON = 10_000  # ms: "eventually", many times what the page and the server need
NEVER = 300  # s: typing expiry and presence TTL of this module's server, beyond any deadline


@pytest.fixture(scope="module")
def lasting_server(django_db_setup: None) -> Iterator[ServerProcess]:
    server = ServerProcess(
        env={"TYPING_EXPIRY_SECONDS": str(NEVER), "PRESENCE_TTL_SECONDS": str(NEVER)}
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pages(pages: Pages, lasting_server: ServerProcess) -> Pages:
    """The suite's pages, on this module's server."""
    pages.base_url = lasting_server.url
    return pages


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


def expect_online(page: Any, *usernames: str, timeout: float = SOON) -> None:
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
    expect(alice_typing).to_have_text("bob is typing…", timeout=SOON)
    expect(bob_page.locator("#typing")).to_have_text("")

    # Storing bob's expression ends his typing (typing never expires here).
    bob_input.press("Enter")
    wait_for_seq(alice_page, 1, timeout=SOON)
    expect(alice_typing).to_have_text("", timeout=SOON)

    # Alice types: bob sees her; she never sees herself.
    alice_page.evaluate(RECORD_TYPING)
    alice_page.locator("input[name=expression]").press_sequentially("1+", delay=50)
    expect(bob_page.locator("#typing")).to_have_text("alice is typing…", timeout=SOON)
    submit(alice_page, "1+1")
    wait_for_seq(bob_page, 2, timeout=SOON)
    expect(bob_page.locator("#typing")).to_have_text("", timeout=SOON)

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
    expect(alice_page.locator("#typing")).to_have_text("bob is typing…", timeout=SOON)
    bob_input.press("Backspace")
    bob_input.press("Backspace")  # empty: the page sends typing.stop
    expect(alice_page.locator("#typing")).to_have_text("", timeout=SOON)  # never by expiry here


def test_closing_the_page_leaves_the_room_at_once(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    alice_page = pages.page_for(alice, ROOM)
    bob_page = pages.page_for(bob, ROOM)
    expect_online(alice_page, "alice", "bob")

    bob_page.close()
    expect_online(alice_page, "alice")  # bob's record would outlive the test: his tab said goodbye
