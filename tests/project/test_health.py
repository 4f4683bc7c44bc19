"""`/healthz` tells which part is down; `/healthz/live` only that the process answers."""

from __future__ import annotations

import threading

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_healthy_when_database_and_redis_answer(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "redis": "ok"}


def test_a_stopped_redis_is_a_503_naming_redis(client: Client, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    assert body["redis"].startswith("error")


def test_no_redis_configured_is_not_configured_never_ok(client: Client, settings) -> None:
    settings.REDIS_URL = None  # the in-memory layer and presence
    for route in ("/healthz", "/healthz/ready"):
        response = client.get(route)
        assert response.status_code == 200
        assert response.json() == {"database": "ok", "redis": "not configured"}


def test_liveness_touches_nothing_while_readiness_names_what_is_down(
    client: Client, settings, django_assert_num_queries
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    with django_assert_num_queries(0):
        live = client.get("/healthz/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = client.get("/healthz/ready")
    assert ready.status_code == 503
    assert ready.json()["redis"].startswith("error")


def test_a_database_that_hangs_is_a_503_after_the_short_timeout(
    client: Client, monkeypatch
) -> None:
    hung = threading.Event()  # never set: the check hangs past the timeout, then gives up
    monkeypatch.setattr("project.health.CHECK_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr("project.health._check_database", lambda: hung.wait(1) and "ok")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "error: timeout", "redis": "ok"}
