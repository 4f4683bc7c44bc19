"""Writes: seq assignment under the room lock, idempotent resends, broadcast only after commit."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction

from rooms import services
from rooms.models import Entry, Room
from tests.factories import MembershipFactory, UserFactory


@pytest.fixture
def sent(sent_events) -> list[tuple[str, dict]]:
    return sent_events


@pytest.fixture
def no_rate_limit(settings) -> None:
    """These tests are about storage under concurrency, not the per-person bucket."""
    settings.EXPRESSION_BUCKET_CAPACITY = 10_000
    settings.EXPRESSION_BUCKET_REFILL_PER_SECOND = 10_000


@pytest.mark.django_db
def test_entry_is_broadcast_only_after_commit(
    alice, lobby, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        submission = services.entry_submit_sync(
            room_id=lobby.id, author=alice, expression="6*7", client_id=None
        )
    assert sent == []  # nothing leaves before the transaction commits
    assert len(callbacks) == 1  # one publish: the room's broadcast, then its members' lists
    callbacks[0]()
    (group, event) = sent[0]
    assert group == f"room.{lobby.id}"
    assert event["type"] == "entry.created"
    assert event["entry"]["seq"] == submission.entry.seq == 1
    assert event["entry"]["result"] == "42"
    assert 'id="entry-1"' in event["frames"]["html"]
    assert '"seq":1' in event["frames"]["json"]


@pytest.mark.django_db
def test_rolled_back_submission_broadcasts_nothing_and_keeps_no_seq(alice, lobby, sent):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.entry_submit_sync(room_id=lobby.id, author=alice, expression="1", client_id=None)
        raise RuntimeError("the surrounding work failed")
    assert sent == []
    lobby.refresh_from_db()
    assert lobby.last_seq == 0
    services.entry_submit_sync(room_id=lobby.id, author=alice, expression="2", client_id=None)
    assert list(Entry.objects.values_list("seq", flat=True)) == [1]


@pytest.mark.django_db
def test_resend_returns_the_stored_entry_without_broadcast(
    alice, lobby, sent, django_capture_on_commit_callbacks
):
    client_id = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=True):
        first = services.entry_submit_sync(
            room_id=lobby.id, author=alice, expression="1+1", client_id=client_id
        )
    after_first = len(sent)  # the room's broadcast, and each member's room list
    with django_capture_on_commit_callbacks(execute=True):
        again = services.entry_submit_sync(
            room_id=lobby.id, author=alice, expression="1+1", client_id=client_id
        )
    assert first.created and not again.created
    assert again.entry.pk == first.entry.pk
    assert [event["type"] for _group, event in sent].count("entry.created") == 1
    assert len(sent) == after_first  # the resend sends nothing


@pytest.mark.django_db
def test_non_member_cannot_submit(carol, lobby):
    with pytest.raises(services.Refused) as refused:
        services.entry_submit_sync(room_id=lobby.id, author=carol, expression="1", client_id=None)
    assert refused.value.code == "forbidden"
    assert not Entry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_parallel_writers_on_separate_connections_get_gapless_seqs(lobby, no_rate_limit):
    """Real concurrency: each thread has its own PostgreSQL connection and transaction."""
    authors = []
    for n in range(6):
        user = UserFactory(username=f"writer{n}")
        MembershipFactory(room=lobby, user=user)
        authors.append(user)
    per_author = 15
    start = threading.Barrier(len(authors))

    def write(author):
        start.wait()
        try:
            for i in range(per_author):
                services.entry_submit_sync(
                    room_id=lobby.id, author=author, expression=f"{i}+1", client_id=uuid.uuid4()
                )
        finally:
            connection.close()

    with ThreadPoolExecutor(len(authors)) as pool:
        list(pool.map(write, authors))
    seqs = list(Entry.objects.filter(room=lobby).order_by("seq").values_list("seq", flat=True))
    total = len(authors) * per_author
    assert seqs == list(range(1, total + 1))
    assert Room.objects.get(pk=lobby.pk).last_seq == total


@pytest.mark.django_db(transaction=True)
def test_parallel_resends_of_one_client_id_store_one_entry(alice, lobby):
    client_id = uuid.uuid4()
    start = threading.Barrier(4)

    def resend(_):
        start.wait()
        try:
            return services.entry_submit_sync(
                room_id=lobby.id, author=alice, expression="7*6", client_id=client_id
            ).entry.pk
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        pks = set(pool.map(resend, range(4)))
    assert len(pks) == 1
    assert Entry.objects.filter(room=lobby).count() == 1


@pytest.mark.django_db
def test_member_removal_and_leave_revoke_open_sockets_after_commit(
    alice, bob, lobby, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.member_remove(room=lobby, actor=alice, user_id=bob.id)
    assert sent == [
        (f"user.{bob.id}", {"type": "access.revoked", "room_id": lobby.id, "user_id": bob.id})
    ]


@pytest.mark.django_db
def test_only_the_owner_removes_and_the_owner_cannot_be_removed(alice, bob, lobby):
    with pytest.raises(services.Refused):
        services.member_remove(room=lobby, actor=bob, user_id=alice.id)
    with pytest.raises(services.Refused):
        services.member_remove(room=lobby, actor=alice, user_id=alice.id)


@pytest.mark.django_db
def test_private_rooms_cannot_be_joined_without_an_invite(carol, vault):
    with pytest.raises(services.Refused) as refused:
        services.room_join(room=vault, user=carol)
    assert refused.value.code == "forbidden"
