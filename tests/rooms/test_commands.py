"""The management commands `make run` relies on."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.core.management import call_command

from accounts.models import User
from rooms.models import Membership, Room

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_load_demo_loads_nothing_with_debug_off_unless_forced(capsys, settings):
    settings.DEBUG = False
    call_command("load_demo")
    assert not User.objects.exists()
    assert "demo data not loaded" in capsys.readouterr().out


@pytest.mark.django_db
def test_load_demo_fills_an_empty_database_once_with_the_contract_data(capsys):
    call_command("load_demo", force=True)
    call_command("load_demo", force=True)  # a second run leaves it alone
    assert sorted(User.objects.values_list("username", flat=True)) == ["alice", "bob", "carol"]
    assert authenticate(username="carol", password="calcrooms-demo") is not None
    lobby, vault = Room.objects.get(slug="lobby"), Room.objects.get(slug="vault")
    assert (lobby.visibility, lobby.owner.username) == ("public", "alice")
    assert (vault.visibility, vault.owner.username) == ("private", "alice")
    members = {(m.room.slug, m.user.username, m.role) for m in Membership.objects.all()}
    assert members == {
        ("lobby", "alice", "owner"),
        ("lobby", "bob", "member"),
        ("vault", "alice", "owner"),
    }
    out = capsys.readouterr().out
    assert "Demo logins: alice, bob, carol (password: calcrooms-demo)" in out
    assert "already has users" in out


def test_ensure_database_creates_a_missing_postgresql_database() -> None:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("PostgreSQL only")
    name = f"calcrooms_ensure_{uuid.uuid4().hex[:8]}"
    server = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}"
    env = {**os.environ, "DATABASE_URL": f"{server}/{name}"}
    try:
        for _ in range(2):  # creates it, then finds it there
            done = subprocess.run(
                [sys.executable, "manage.py", "ensure_database"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        with psycopg.connect(f"{server}/{name}") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
