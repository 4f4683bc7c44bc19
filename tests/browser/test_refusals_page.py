"""What a person sees when the room refuses an expression: the reason, and nothing lost."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from rooms.models import Entry
from rooms.throttle import expression_bucket_key, get_throttle
from tests.browser.conftest import Pages, expect, in_thread, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SOON = 20_000  # ms: "eventually" (the bucket refills one a second)


def _drain_bucket(key: str) -> None:
    async def drain() -> None:
        throttle = get_throttle()
        bucket = {
            "capacity": settings.EXPRESSION_BUCKET_CAPACITY,
            "refill_per_second": settings.EXPRESSION_BUCKET_REFILL_PER_SECOND,
        }
        while await throttle.take(key, **bucket):
            pass
        await throttle.aclose()

    asyncio.run(drain())


def test_rate_limited_expression_is_explained_kept_and_sent_when_the_room_allows(
    pages: Pages, lobby, bob
) -> None:
    """`rate_limited` is not a verdict on the expression: the page says why it waits, keeps the
    row, and sends it again once the bucket has refilled; it is stored once."""
    page = pages.page_for(bob, "/rooms/lobby/")
    # bob has just sent a burst from elsewhere (the bucket is shared by all his sockets).
    in_thread(_drain_bucket, expression_bucket_key(bob.id, lobby.id))
    submit(page, "99*99")
    expect(page.locator("#notices [data-code='rate_limited']")).to_be_visible()
    expect(page.locator("#entries .pending")).to_contain_text("99*99")
    expect(page.locator("input[name='expression']")).to_have_value("")
    expect(page.locator("#entry-1 .result")).to_have_text("9801", timeout=SOON)
    expect(page.locator("#entries .pending")).to_have_count(0)
    expect(page.locator("#notices [data-code='rate_limited']")).to_have_count(0)
    assert Entry.objects.filter(room=lobby).count() == 1
