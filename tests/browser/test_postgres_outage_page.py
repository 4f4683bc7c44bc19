"""The room page through a PostgreSQL outage, on a PostgreSQL and a server of the test's own (the
pool on, as deployed): what is typed while it is down stays as "sending…", the page says it is
waiting, and once PostgreSQL is back each expression is stored, once, and shown as an entry."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests.browser.conftest import entry_rows, expect, goto_room, submit
from tests.pg_cluster import Site, site_on_own_postgres

pytestmark = pytest.mark.browser

SOON = 30_000  # ms: many times what the page needs


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with site_on_own_postgres() as made:
        yield made


def stored(site: Site) -> Counter[str]:
    """How many times each expression is in the room's history."""
    request = urllib.request.Request(
        f"{site.server.url}/rooms/lobby/entries/?after=0&limit=500",
        headers={
            "Accept": "application/json",
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={site.cookies['bob']}",
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return Counter(e["expression"] for e in json.load(response)["entries"])


def test_the_page_keeps_expressions_as_sending_through_an_outage_and_stores_each_once(
    site: Site, browser: Any
) -> None:
    context = browser.new_context(base_url=site.server.url)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": site.cookies["bob"],
                "domain": "127.0.0.1",
                "path": "/",
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        goto_room(page, "/rooms/lobby/")
        expect(page.locator("#room")).to_have_attribute("data-caught-up", "1")

        site.cluster.stop("fast")
        typed = ["6*7", "2+2"]
        for expression in typed:
            submit(page, expression)
        pending = page.locator("#entries .pending")
        expect(pending).to_have_count(2)
        expect(pending.first).to_contain_text("sending…")
        waiting = page.locator("#notices [data-notice=waiting]")
        expect(waiting).to_have_attribute("data-code", "unavailable", timeout=SOON)
        expect(pending).to_have_count(2)  # answered `unavailable`: still there, still sending
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")

        site.cluster.start()
        expect(pending).to_have_count(0, timeout=SOON)
        expect(waiting).to_have_count(0, timeout=SOON)
        rows = entry_rows(page)
        assert [(row[2], row[3]) for row in rows[-2:]] == [("6*7", "42"), ("2+2", "4")]
        counts = stored(site)
        assert [counts[expression] for expression in typed] == [1, 1]
        assert errors == []
    finally:
        context.close()
