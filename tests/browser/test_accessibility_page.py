"""Accessibility in real Chromium: axe-core (the PyPI wrapper `axe-playwright-python`, which
ships axe.min.js) finds no critical or serious violation on any page, in the light and the dark
theme; other people's new entries are announced through a polite live region (one short text per
entry, a summary for a burst, never your own); and on a phone (360x740) the online list collapses to
a count you can open, nothing scrolls sideways and the input does not capitalise or autocorrect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from rooms import services
from rooms.models import Entry, Room
from tests.browser.conftest import Pages, expect, in_thread, submit, wait_for_seq

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOM = "/rooms/lobby/"
SCHEMES = ["light", "dark"]
PHONE = {"width": 360, "height": 740}


def axe_problems(page: Any) -> list[str]:
    """The critical and serious violations axe-core finds on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(" ".join(node["target"]) for node in v["nodes"][:5])
        for v in results.response["violations"]
        if v["impact"] in ("critical", "serious")
    ]


def anonymous_page(pages: Pages, name: str) -> Any:
    context = pages.browser.new_context(base_url=pages.base_url)
    pages.contexts.append(context)
    return pages.open_page(context, name)


def check(page: Any, scheme: str, path: str, ready: str = "main") -> None:
    page.emulate_media(color_scheme=scheme)
    page.goto(path)
    expect(page.locator(ready).first).to_be_visible()
    if ready == "#room":
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    problems = axe_problems(page)
    assert not problems, f"{path} in {scheme}:\n" + "\n".join(problems)


def _entries(room: Room, author: User, count: int) -> None:
    Entry.objects.bulk_create(
        Entry(room=room, seq=seq, author=author, expression=f"{seq}*2", result=str(seq * 2))
        for seq in range(1, count + 1)
    )
    Room.objects.filter(pk=room.pk).update(last_seq=count)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_account_and_error_pages_have_no_serious_violations(
    scheme: str, alice: User, pages: Pages
) -> None:
    page = anonymous_page(pages, "anonymous")
    for path in ("/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"):
        check(page, scheme, path)
    pages.allow(r"status of 404")  # the error page, on purpose
    signed_in = pages.page_for(alice)
    for path in ("/rooms/nowhere/", "/accounts/logout/"):
        check(signed_in, scheme, path)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_app_pages_have_no_serious_violations(
    scheme: str, lobby: Room, alice: User, bob: User, carol: User, pages: Pages
) -> None:
    _entries(lobby, bob, 3)
    in_thread(
        lambda: services.entry_submit_sync(
            room_id=lobby.pk, author=alice, expression="1/0", client_id=None
        )
    )
    owner = pages.page_for(alice)
    check(owner, scheme, "/", "#my-rooms")
    check(owner, scheme, ROOM, "#room")
    check(owner, scheme, ROOM + "history/", "#history")
    check(owner, scheme, ROOM + "members/", "#invite-link")
    invite = owner.locator("#invite-link").get_attribute("href")
    check(owner, scheme, "/rooms/new/")
    newcomer = pages.page_for(carol)
    check(newcomer, scheme, "/", "main")  # no rooms of her own: the empty state
    check(newcomer, scheme, invite, "#accept-invite")
    check(newcomer, scheme, ROOM, "#join")


def _submit_as(room: Room, user: User, expression: str) -> None:
    in_thread(
        lambda: services.entry_submit_sync(
            room_id=room.pk, author=user, expression=expression, client_id=None
        )
    )


def announcements(page: Any) -> list[str]:
    return page.locator("#announcements p").all_text_contents()


def test_other_peoples_entries_are_announced_politely_and_yours_are_not(
    lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    _entries(lobby, alice, 2)  # what the page opens with is not news
    page = pages.page_for(alice, ROOM)
    region = page.locator("#announcements")
    expect(region).to_have_attribute("aria-live", "polite")
    expect(region.locator("p")).to_have_count(0)

    _submit_as(lobby, bob, "12*7")
    expect(region.locator("p")).to_have_text(["bob: 12*7 = 84"])
    _submit_as(lobby, bob, "1/0")
    expect(region.locator("p")).to_have_text(["bob: 12*7 = 84", "bob: 1/0, division by zero"])

    # Her own entry, and bob typing, are not announced.
    submit(page, "2+2")
    wait_for_seq(page, 5)
    page.wait_for_timeout(800)
    assert len(announcements(page)) == 2

    # A burst (here a catch-up: six entries the page never heard of, then a seventh live) is one
    # summary, not seven announcements.
    def burst() -> None:
        room = Room.objects.get(pk=lobby.pk)
        Entry.objects.bulk_create(
            Entry(room=room, seq=seq, author=bob, expression="1+1", result="2")
            for seq in range(room.last_seq + 1, room.last_seq + 7)
        )
        Room.objects.filter(pk=room.pk).update(last_seq=room.last_seq + 6)

    in_thread(burst)
    _submit_as(lobby, bob, "3*3")
    wait_for_seq(page, 12)
    expect(region.locator("p").last).to_have_text("7 new entries")
    page.wait_for_timeout(800)
    assert len(announcements(page)) == 3


@pytest.mark.parametrize(
    "viewport",
    [PHONE, {"width": 640, "height": 400}],  # a phone; a 1280x800 laptop at 200 % zoom
    ids=["phone", "zoom-200"],
)
def test_on_a_phone_the_online_list_is_a_count_and_nothing_scrolls_sideways(
    viewport: dict[str, int], lobby: Room, alice: User, bob: User, pages: Pages
) -> None:
    Room.objects.filter(pk=lobby.pk).update(name="A room with a rather long name " * 3)
    pages.page_for(bob, ROOM)
    page = pages.open_page(pages.context_for(alice, viewport=viewport), "alice", ROOM)
    people = page.locator("details#people")
    expect(page.locator("#online li")).to_have_count(2)
    expect(page.locator("#online-count")).to_have_text("2")
    expect(people).not_to_have_attribute("open", "")
    expect(page.locator("#online")).to_be_hidden()
    expect(page.locator("#typing")).to_be_attached()
    people.locator("summary").click()
    expect(page.locator('#online li[data-username="bob"]')).to_be_visible()
    people.locator("summary").click()
    expect(page.locator("#online")).to_be_hidden()

    expression = page.locator("#expression")
    for name, value in {
        "autocapitalize": "off",
        "autocorrect": "off",
        "spellcheck": "false",
        "enterkeyhint": "send",
        "inputmode": "text",
    }.items():
        expect(expression).to_have_attribute(name, value)
    expect(page.get_by_role("button", name="Evaluate")).to_be_visible()

    submit(page, "+".join(["123456789"] * 30))
    wait_for_seq(page, 1)
    for path in (ROOM, "/", ROOM + "history/", ROOM + "members/"):
        page.goto(path)
        page.wait_for_load_state()
        width = page.evaluate("() => document.scrollingElement.scrollWidth")
        assert width <= viewport["width"], f"{path} scrolls sideways ({width}px)"


def test_on_a_laptop_the_online_list_is_open(lobby: Room, alice: User, pages: Pages) -> None:
    page = pages.open_page(
        pages.context_for(alice, viewport={"width": 1280, "height": 800}), "alice", ROOM
    )
    expect(page.locator("details#people")).to_have_attribute("open", "")
    expect(page.locator('#online li[data-username="alice"]')).to_be_visible()
    expect(page.locator("#online-count")).to_have_text("1")


def test_an_empty_room_says_what_to_type(lobby: Room, alice: User, pages: Pages) -> None:
    page = pages.page_for(alice, ROOM)
    empty = page.locator("#empty-room")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("Type an expression")
    submit(page, "1+1")
    wait_for_seq(page, 1)
    expect(empty).to_be_hidden()


def test_the_empty_room_list_says_how_to_start(carol: User, pages: Pages) -> None:
    page = pages.page_for(carol)
    page.goto("/")
    expect(page.locator("#no-rooms")).to_contain_text("New room")


def test_signup_says_what_the_confirmation_mail_is_and_remember_me_is_a_checkbox(
    pages: Pages,
) -> None:
    page = anonymous_page(pages, "anonymous")
    page.goto("/accounts/signup/")
    expect(page.locator("#email-note")).to_contain_text("works")
    page.goto("/accounts/login/")
    remember = page.get_by_label("Remember me")
    expect(remember).to_have_attribute("type", "checkbox")
    # Its label comes after the box.
    assert page.evaluate(
        """() => {
            const box = document.querySelector('input[type=checkbox][name=remember]');
            const label = document.querySelector('label[for="' + box.id + '"]');
            return !!(box.compareDocumentPosition(label) & Node.DOCUMENT_POSITION_FOLLOWING);
        }"""
    )


SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"


@pytest.mark.skipif(
    not os.environ.get("CALCROOMS_SCREENSHOTS"),
    reason="writes docs/screenshots/ (run with CALCROOMS_SCREENSHOTS=1)",
)
def test_write_the_screenshots(lobby: Room, alice: User, bob: User, pages: Pages) -> None:
    """docs/screenshots/: the room and the room list at 1280x800 and 360x740, light and dark."""
    for expression in ("12*7", "ans / 4", "rate = 7.5%", "1200 * (1 + rate)", "sqrt(2)", "1/0"):
        _submit_as(lobby, bob if "rate" in expression else alice, expression)
    pages.page_for(bob, ROOM)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for size, viewport in {"laptop": {"width": 1280, "height": 800}, "phone": PHONE}.items():
        page = pages.open_page(pages.context_for(alice, viewport=viewport), f"alice-{size}", ROOM)
        wait_for_seq(page, 6)
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            page.goto(ROOM)
            expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
            expect(page.locator('#online li[data-username="bob"]')).to_have_count(1)
            page.screenshot(path=str(SCREENSHOTS / f"room-{size}-{scheme}.png"))
            page.goto("/")
            expect(page.locator("#my-rooms")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / f"rooms-{size}-{scheme}.png"))
