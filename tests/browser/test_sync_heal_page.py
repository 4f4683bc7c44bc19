"""A broadcast the channel layer drops (as channels-redis does when a channel is full) is healed
by the page through the next `sync` frame: it reveals the gap and the page fetches it.

The server sends `sync` every 2 s and the page is given five periods; nothing else could heal the
gap meanwhile (the socket stays open, and no other entry is stored until it is healed)."""

from __future__ import annotations

import pytest

from rooms import services
from tests.browser.conftest import Pages, entry_rows, expect, in_thread, marker, set_marker
from tests.live import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SYNC_SECONDS = 2
HEALED_WITHIN_MS = 5 * SYNC_SECONDS * 1000
SOON_MS = 10_000  # "eventually", for everything else


@pytest.fixture
def fast_sync_server() -> ServerProcess:
    server = ServerProcess(
        env={"SYNC_INTERVAL_SECONDS": str(SYNC_SECONDS), "PRESENCE_HEARTBEAT_SECONDS": "1"}
    )
    server.start()
    yield server
    server.stop()


def test_dropped_broadcast_is_healed_through_sync(
    pages: Pages, fast_sync_server: ServerProcess, lobby, alice, bob, monkeypatch
) -> None:
    context = pages.context_for(bob, base_url=fast_sync_server.url)
    page = pages.open_page(context, "bob", "/rooms/lobby/")
    token = set_marker(page)

    with monkeypatch.context() as patch:
        patch.setattr("realtime.events._publish", lambda events: None)  # dropped
        in_thread(
            services.entry_submit_sync,
            room_id=lobby.id,
            author=alice,
            expression="6*7",
            client_id=None,
        )
    expect(page.locator("#entry-1")).to_have_count(0)

    # The next sync shows last_seq 1 > 0: the page fetches seq 1.
    expect(page.locator("#entry-1 .result")).to_have_text("42", timeout=HEALED_WITHIN_MS)

    # Live delivery goes on from there, in order, once each, without a reload.
    in_thread(
        services.entry_submit_sync,
        room_id=lobby.id,
        author=alice,
        expression="1+1",
        client_id=None,
    )
    expect(page.locator("#entry-2 .result")).to_have_text("2", timeout=SOON_MS)
    assert [row[0] for row in entry_rows(page)] == [1, 2]
    assert marker(page) == token
