"""The pages work under the Content-Security-Policy: Chromium reports no violation."""

from __future__ import annotations

from typing import Any

import pytest

from rooms.models import Room
from tests.browser.conftest import expect, submit, wait_for_seq

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def test_the_room_page_works_under_the_policy_with_no_violation(
    lobby: Room, alice: Any, bob: Any, page_for: Any
) -> None:
    alice_page = page_for(alice, "/rooms/lobby/")
    alice_page.context.add_init_script(RECORD_VIOLATIONS)
    alice_page.reload()
    bob_page = page_for(bob, "/rooms/lobby/")
    expect(alice_page.locator("#connection")).to_have_attribute("data-state", "connected")
    assert alice_page.evaluate("() => document.querySelector('meta[name=htmx-config]') !== null")

    submit(alice_page, "6*7")  # the socket, htmx's swaps, room.js: all under the policy
    wait_for_seq(bob_page, 1)
    wait_for_seq(alice_page, 1)
    expect(bob_page.locator("#entry-1 .result")).to_have_text("42")

    alice_page.goto("/rooms/lobby/history/")  # the author filter submits without inline JS
    alice_page.locator("select[name=author]").select_option("alice")
    alice_page.wait_for_url("**author=alice**")
    assert alice_page.evaluate("() => window.__cspViolations") == []
