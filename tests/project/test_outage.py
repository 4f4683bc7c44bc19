"""The database being down is answered 503 wherever it surfaces, and logged once (in process; the
real outages, on a PostgreSQL of their own, are in test_postgres_outage.py)."""

from __future__ import annotations

import logging
import sys

import pytest
from django.db import OperationalError, connection
from django.test import Client

from accounts.models import User
from project.outage import OutageWithoutTraceback, outage
from rooms.models import Room

JSON = "application/json"


@pytest.fixture
def bob_client(lobby: Room, bob: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(bob)
    return client


@pytest.fixture(autouse=True)
def _outage_reset() -> None:
    outage.down_since, outage.refused = None, 0


def down(*args: object, **kwargs: object) -> None:
    raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")


def assert_unavailable_json(response) -> None:
    assert response.status_code == 503
    assert response["Content-Type"] == JSON
    assert response.json()["error"]["code"] == "unavailable"
    assert int(response["Retry-After"]) > 0


def test_a_session_that_cannot_be_loaded_is_a_503_not_a_500(
    bob_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The presence route's old 500 (`'SessionStore' object has no attribute '_session_cache'`):
    the session's lazy load failing inside Django's `except AttributeError`."""
    monkeypatch.setattr("django.contrib.sessions.backends.db.SessionStore.load", down)
    assert_unavailable_json(bob_client.get("/rooms/lobby/presence/", HTTP_ACCEPT=JSON))
    page = bob_client.get("/rooms/lobby/")
    assert page.status_code == 503
    assert page["Content-Type"].startswith("text/html")
    assert b"Unavailable for a moment" in page.content and page["Retry-After"]


def test_a_view_whose_query_fails_is_a_503(
    bob_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rooms.selectors.room_access", down)
    assert_unavailable_json(bob_client.get("/rooms/lobby/entries/?after=0", HTTP_ACCEPT=JSON))
    assert_unavailable_json(bob_client.get("/rooms/lobby/entries/?after=0&format=json"))
    assert bob_client.get("/rooms/lobby/history/").status_code == 503


def test_a_middleware_whose_query_fails_is_a_503_too(
    lobby: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside any view (the token lookup of BearerTokenMiddleware): the handler500 answers."""
    monkeypatch.setattr("accounts.tokens.token_authenticate", lambda **kwargs: down())
    client = Client(raise_request_exception=False)
    response = client.get("/rooms/lobby/presence/", HTTP_AUTHORIZATION="Bearer cr_x")
    assert_unavailable_json(response)


def test_a_page_that_reads_nothing_answers_503_too(db: None) -> None:
    """The login page reads nothing for a visitor, but its form would fail: 503 as well."""
    client = Client(raise_request_exception=False)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(connection, "ensure_connection", down)
        login = client.get("/accounts/login/")
    assert login.status_code == 503 and b"Unavailable for a moment" in login.content


def test_one_line_when_it_goes_and_one_when_it_is_back(
    bob_client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with monkeypatch.context() as patched:
        patched.setattr("django.contrib.sessions.backends.db.SessionStore.load", down)
        for _ in range(5):
            assert bob_client.get("/rooms/lobby/presence/").status_code == 503
    assert bob_client.get("/rooms/lobby/presence/").status_code == 200
    assert bob_client.get("/rooms/lobby/presence/").status_code == 200
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert [line for line in lines if line[0] == "django.request"] == []  # no line per request
    assert [line[1:] for line in lines if line[0] == "calcrooms.outage"] == [
        (
            "WARNING",
            "database unavailable (OperationalError: connection to server at 127.0.0.1 failed: "
            "Connection refused): answering 503 until it is back",
        ),
        ("WARNING", lines[-1][2]),
    ]
    assert lines[-1][2].startswith("database available again after ")
    assert lines[-1][2].endswith("(5 requests answered 503 meanwhile)")


def test_other_lines_about_an_outage_keep_their_error_and_lose_the_traceback() -> None:
    try:
        try:
            raise TimeoutError("couldn't get a connection after 2.00 sec")
        except TimeoutError as cause:
            raise OperationalError("couldn't get a connection after 2.00 sec") from cause
    except OperationalError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "realtime.tick", logging.ERROR, __file__, 1, "tick of room %s failed", (7,), exc_info
    )
    assert OutageWithoutTraceback().filter(record)
    assert record.exc_info is None
    assert logging.Formatter().format(record) == (
        "tick of room 7 failed (OperationalError: couldn't get a connection after 2.00 sec)"
    )
    try:
        raise ValueError("a bug")
    except ValueError:
        bug = logging.LogRecord("rooms", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert OutageWithoutTraceback().filter(bug)
    assert "Traceback" in logging.Formatter().format(bug)  # a bug keeps its traceback
