"""A page of a room's entries reads the same whichever way it is read: in plain SQL (PostgreSQL,
the catch-up's and the room page's way) or through the ORM (text search, other databases)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection

from rooms import selectors
from rooms.models import Entry
from tests.factories import EntryFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain SQL is PostgreSQL's"),
]


@pytest.fixture
def history(lobby, alice, bob):
    """Twelve entries by two people: results and errors, references, a variable, a client_id,
    a time with no microseconds (isoformat leaves them out) and times with."""
    for seq in range(1, 13):
        EntryFactory(
            room=lobby,
            author=alice if seq % 3 else bob,
            seq=seq,
            expression=f"#{seq - 1}+1" if seq > 1 else "x = 1",
            result=None if seq == 5 else str(seq),
            error="division by zero" if seq == 5 else None,
            client_id=uuid.uuid4() if seq % 2 else None,
            refs=[seq - 1] if seq > 1 else [],
            defines="x" if seq == 1 else None,
            rounded=seq == 7,
        )
    # Microseconds with zeros at the end: isoformat writes all six.
    at = dt.datetime(2026, 12, 4, 9, 0, 1, 120000, tzinfo=dt.UTC)
    Entry.objects.filter(room=lobby, seq=6).update(created=at)
    Entry.objects.filter(room=lobby, seq=4).update(
        created=dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.UTC)
    )
    lobby.last_seq = 12
    lobby.save(update_fields=["last_seq"])
    return lobby


def _orm_after(room, after, limit, author=None):
    queryset = selectors._entries(room, author, None).filter(seq__gt=after)
    return selectors._page(queryset.order_by("seq")[:limit])


def _orm_before(room, before, limit, author=None):
    queryset = selectors._entries(room, author, None)
    if before is not None:
        queryset = queryset.filter(seq__lt=before)
    return selectors._page(queryset.order_by("-seq")[:limit])


@pytest.mark.parametrize("author", [None, "alice", "bob", "nobody"])
@pytest.mark.parametrize(("after", "limit"), [(0, 100), (3, 4), (11, 5), (12, 5)])
def test_a_page_after_a_seq_is_the_orms(history, author, after, limit):
    plain = selectors._page_plain(
        history.id, seq=after, newest_first=False, author=author, limit=limit
    )
    assert plain == _orm_after(history, after, limit, author)


@pytest.mark.parametrize("author", [None, "alice", "nobody"])
@pytest.mark.parametrize(("before", "limit"), [(None, 100), (None, 3), (8, 3), (1, 5)])
def test_a_page_before_a_seq_is_the_orms(history, author, before, limit):
    plain = selectors._page_plain(
        history.id, seq=before, newest_first=True, author=author, limit=limit
    )
    assert plain == _orm_before(history, before, limit, author)


def test_the_pages_the_routes_answer_hold_every_field(history):
    page = selectors.entries_after(room=history, after=3, limit=2)
    assert page.has_more is True
    fourth, fifth = page.entries
    assert fourth["created"] == "2026-12-04T09:00:00Z"
    sixth = selectors.entries_after(room=history, after=5, limit=1).entries[0]
    assert sixth["created"] == "2026-12-04T09:00:01.120000Z"
    assert (fourth["refs"], fourth["expression"], fourth["author"]) == ([3], "#3+1", "alice")
    assert (fifth["result"], fifth["error"]) == (None, "division by zero")
    assert isinstance(fifth["client_id"], str) and uuid.UUID(fifth["client_id"])
    newest = selectors.entries_before(room=history, before=None, limit=2)
    assert [e["seq"] for e in newest.entries] == [11, 12] and newest.has_more is True


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_search_page_reads_through_the_orm_in_the_same_order_and_shape(history, newest_first):
    """`q` sends the page through the ORM (the trigram index serves it): every entry but the
    first holds a `#`, so the search is the plain page less that one."""
    searched = selectors._page_rows(
        history, None, "#", seq=None if newest_first else 0, newest_first=newest_first, limit=20
    )
    plain = selectors._page_plain(
        history.id, seq=None if newest_first else 0, newest_first=newest_first, author=None,
        limit=20,
    )  # fmt: skip
    assert searched == [entry for entry in plain if entry["seq"] != 1]
