"""`manage.py room_post`: a script's expression goes in as a person's does, live and in history."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client
from prometheus_client import REGISTRY

from rooms.models import Entry, Room
from tests import live

pytestmark = pytest.mark.django_db(transaction=True)


def manage_py(*args: str) -> subprocess.CompletedProcess[str]:
    """`manage.py` in a process of its own, as cron would run it, on the test database."""
    env = {
        **os.environ,
        "DATABASE_URL": live.test_database_url(),
        "REDIS_URL": settings.REDIS_URL or "",
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=live.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _history(user) -> list[dict]:
    client = Client()
    client.force_login(user)
    return client.get("/rooms/lobby/entries/?after=0&format=json").json()["entries"]


@pytest.mark.skipif(not settings.REDIS_URL, reason="another process reaches sockets via Redis")
async def test_a_posted_expression_shows_live_on_a_members_socket_and_in_history(
    connect, lobby, alice, bob
) -> None:
    bob_ws = await connect(bob, "lobby")
    assert bob_ws.connected
    result = await database_sync_to_async(manage_py)("room_post", "lobby", "6*7", "--as", "alice")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lobby #1 alice: 6*7 = 42"

    frame = await bob_ws.receive_type("entry", timeout=10)
    assert frame["entry"]["seq"] == 1
    assert frame["entry"]["author"] == "alice"
    assert frame["entry"]["expression"] == "6*7"
    assert frame["entry"]["result"] == "42"

    history = await database_sync_to_async(_history)(bob)
    assert [(e["seq"], e["author"], e["result"]) for e in history] == [(1, "alice", "42")]


def test_same_rules_as_a_person_shared_results_and_errors(lobby, bob) -> None:
    def stored_by_command() -> float:
        labels = {"transport": "command"}
        return REGISTRY.get_sample_value("calcrooms_entries_stored_total", labels) or 0.0

    before = stored_by_command()
    out = io.StringIO()
    call_command("room_post", "lobby", "x = 2^10", "--as", "bob", stdout=out)
    call_command("room_post", "lobby", "x + ans + #1", "--as", "bob", stdout=out)
    call_command("room_post", "lobby", "1/0", "--as", "bob", stdout=out)
    assert out.getvalue().splitlines() == [
        "lobby #1 bob: x = 2^10 = 1024",
        "lobby #2 bob: x + ans + #1 = 3072",
        "lobby #3 bob: 1/0 error: division by zero",  # stored, like a person's
    ]
    assert stored_by_command() - before == 3


def test_a_client_id_makes_a_retry_store_nothing_new(lobby, bob) -> None:
    client_id = str(uuid.uuid4())
    first, again = io.StringIO(), io.StringIO()
    call_command(
        "room_post", "lobby", "1+1", "--as", "bob", "--client-id", client_id, "--json", stdout=first
    )
    call_command("room_post", "lobby", "1+1", "--as", "bob", "--client-id", client_id, stdout=again)
    entry = json.loads(first.getvalue())["entry"]
    assert (entry["seq"], entry["result"], entry["client_id"]) == (1, "2", client_id)
    assert again.getvalue().strip() == "lobby #1 bob: 1+1 = 2 (stored before: same client id)"
    assert Entry.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lobby", "1+1", "--as", "carol"], "Refused (forbidden): carol is not a member of lobby."),
        (["nowhere", "1+1", "--as", "bob"], "No room 'nowhere'."),
        (["lobby", "1+1", "--as", "nobody"], "No user 'nobody'."),
        (["lobby", "   ", "--as", "bob"], "Refused (empty): Type an expression first."),
        (["lobby", "1" * 501, "--as", "bob"], "Refused (too_long): An expression is at most 500"),
        (["lobby", "1+\x00", "--as", "bob"], "Refused (invalid_frame): The expression holds a NUL"),
        (
            ["lobby", "1+1", "--as", "bob", "--client-id", "x"],
            "--client-id must be a UUID, not 'x'.",
        ),
    ],
)
def test_each_refusal_is_a_clear_error_and_stores_nothing(lobby, bob, carol, args, message):
    with pytest.raises(CommandError) as refused:
        call_command("room_post", *args, stdout=io.StringIO())
    assert str(refused.value).startswith(message)
    assert not Entry.objects.exists()
    assert Room.objects.get(pk=lobby.pk).last_seq == 0


def test_the_rate_limit_holds_for_a_script(lobby, bob, settings) -> None:
    settings.EXPRESSION_BUCKET_CAPACITY = 2
    settings.EXPRESSION_BUCKET_REFILL_PER_SECOND = 0.001
    for expression in ("1", "2"):
        call_command("room_post", "lobby", expression, "--as", "bob", stdout=io.StringIO())
    labels = {"code": "rate_limited", "transport": "command"}
    before = REGISTRY.get_sample_value("calcrooms_refusals_total", labels)
    with pytest.raises(CommandError, match=r"Refused \(rate_limited\)"):
        call_command("room_post", "lobby", "3", "--as", "bob", stdout=io.StringIO())
    assert Entry.objects.count() == 2
    assert REGISTRY.get_sample_value("calcrooms_refusals_total", labels) - before == 1


def test_from_a_shell_a_refusal_exits_non_zero_on_stderr(lobby, carol) -> None:
    private = manage_py("room_post", "lobby", "1+1", "--as", "carol")
    missing = manage_py("room_post", "nowhere", "1+1", "--as", "carol")
    assert (private.returncode, missing.returncode) == (1, 1)
    assert "carol is not a member of lobby" in private.stderr
    assert "No room 'nowhere'" in missing.stderr
    assert private.stdout == missing.stdout == ""
    assert not Entry.objects.exists()
