"""What a person sees when the room refuses an expression: the reason, and their text back."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from rooms.models import Entry
from rooms.throttle import expression_bucket_key, get_throttle
from tests.browser.conftest import Pages, expect, in_thread, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


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


def test_rate_limited_expression_is_explained_and_given_back(pages: Pages, lobby, bob) -> None:
    page = pages.page_for(bob, "/rooms/lobby/")
    # bob has just sent a burst from elsewhere (the bucket is shared by all his sockets).
    in_thread(_drain_bucket, expression_bucket_key(bob.id, lobby.id))
    submit(page, "99*99")
    expect(page.locator("#errors [data-code='rate_limited']")).to_be_visible()
    expect(page.locator("input[name='expression']")).to_have_value("99*99")
    assert not Entry.objects.filter(room=lobby).exists()
