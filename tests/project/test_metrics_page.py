"""`/metrics`: served to the token or the allowed addresses only, and what the app records shows.

In this process (prometheus_client's own registry), and across two real uvicorn processes sharing
one PROMETHEUS_MULTIPROC_DIR (multiprocess mode: either process serves the sum of both).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import OperationalError
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from accounts.tokens import token_create
from tests.live import ServerProcess

TOKEN = "metrics-secret-0123456789"
OUTSIDER = "203.0.113.9"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# --- In this process ------------------------------------------------------------------------


def test_with_a_token_only_the_bearer_is_served(client: Client, settings) -> None:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]  # the token wins: loopback is not enough
    refused = [
        client.get("/metrics"),
        client.get("/metrics", headers={"Authorization": "Bearer wrong"}),
        client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}),
    ]
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert all(b"calcrooms_" not in r.content for r in refused)
    served = client.get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, REMOTE_ADDR=OUTSIDER
    )
    assert served.status_code == 200
    assert served["Content-Type"].startswith("text/plain; version=")
    assert "calcrooms_entries_stored_total" in served.content.decode()


def test_without_a_token_nobody_is_served_by_default(client: Client, settings) -> None:
    settings.METRICS_TOKEN = None
    settings.METRICS_ALLOWED_IPS = []
    response = client.get("/metrics")  # from loopback
    assert response.status_code == 403
    assert b"calcrooms_" not in response.content


def test_the_allow_list_takes_addresses_and_networks(client: Client, settings) -> None:
    settings.METRICS_TOKEN = None
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1", "10.0.0.0/8", "::1"]
    statuses = {
        address: client.get("/metrics", REMOTE_ADDR=address).status_code
        for address in ("127.0.0.1", "10.20.30.40", "::1", "::ffff:10.1.1.1", OUTSIDER, "junk")
    }
    assert statuses == {
        "127.0.0.1": 200,
        "10.20.30.40": 200,
        "::1": 200,
        "::ffff:10.1.1.1": 200,
        OUTSIDER: 403,
        "junk": 403,
    }


@pytest.mark.django_db
def test_entries_catch_ups_refusals_and_database_errors_show(
    client: Client, settings, lobby, bob, monkeypatch
) -> None:
    settings.METRICS_TOKEN = TOKEN
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = client.get("/metrics", headers=auth).content.decode()
    client.force_login(bob)
    assert client.post("/rooms/lobby/entries/", {"expression": "6*7"}).status_code == 201
    assert client.post("/rooms/lobby/entries/", {"expression": "1" * 501}).status_code == 400
    assert client.get("/rooms/lobby/entries/?after=0&format=json").json()["entries"]
    assert client.get("/rooms/nowhere/entries/?format=json").status_code == 404
    monkeypatch.setattr(
        "rooms.selectors.room_access",
        lambda **kwargs: (_ for _ in ()).throw(OperationalError("server closed the connection")),
    )
    client.raise_request_exception = False
    client.get("/rooms/lobby/")
    monkeypatch.undo()
    after = client.get("/metrics", headers=auth).content.decode()

    def change(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert change("calcrooms_entries_stored_total", transport="http") == 1
    assert change("calcrooms_refusals_total", code="too_long", transport="http") == 1
    assert change("calcrooms_catchup_fetches_total") == 1
    assert change("calcrooms_refusals_total", code="not_found", transport="http") == 1
    assert change("calcrooms_catchup_entries_sum") == 1
    assert change("calcrooms_database_errors_total") == 1


# --- Two processes, one PROMETHEUS_MULTIPROC_DIR ------------------------------------------------


@pytest.fixture
def two_servers(tmp_path: Path, lobby) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}  # made by the app
    pair = (
        ServerProcess(env={**shared, "METRICS_TOKEN": TOKEN}),
        ServerProcess(env={**shared, "METRICS_ALLOWED_IPS": "127.0.0.1"}),
    )
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ServerProcess.start, pair))
        yield pair
    finally:
        for server in pair:
            server.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _post_entry(server: ServerProcess, raw_token: str, expression: str) -> int:
    request = urllib.request.Request(
        f"{server.url}/rooms/lobby/entries/",
        data=urllib.parse.urlencode({"expression": expression}).encode(),
        headers={"Authorization": f"Bearer {raw_token}", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


@pytest.mark.django_db(transaction=True)
def test_two_processes_serve_one_sum_each_behind_its_own_guard(two_servers, bob) -> None:
    first, second = two_servers
    _token, raw = token_create(owner=bob, name="cron", scope="write")
    assert _post_entry(first, raw, "1+1") == 201
    assert _post_entry(second, raw, "2+2") == 201
    assert _post_entry(second, raw, "3+3") == 201

    status, page = _get(f"{first.url}/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert sample(page, "calcrooms_entries_stored_total", transport="http") == 3
    status, other_page = _get(f"{second.url}/metrics")  # loopback is on its allow list
    assert status == 200
    assert sample(other_page, "calcrooms_entries_stored_total", transport="http") == 3

    refused = [
        _get(f"{first.url}/metrics"),  # no token
        _get(f"{first.url}/metrics", {"Authorization": "Bearer nope"}),
        # A proxy on loopback forwarding an outside client: the client's address counts.
        _get(f"{second.url}/metrics", {"X-Forwarded-For": OUTSIDER}),
    ]
    assert [status for status, _ in refused] == [401, 401, 403]
    assert all("calcrooms_" not in body for _, body in refused)
