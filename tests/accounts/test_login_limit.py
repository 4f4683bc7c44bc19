"""allauth's failed-login limit is counted in Redis: every process shares it."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from tests.factories import PASSWORD
from tests.live import ServerProcess

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="the shared limit lives in Redis"),
]

TOO_MANY = "Too many failed login attempts"
HOST = {"Host": "localhost"}  # one public host name in front of both processes


@pytest.fixture
def two_servers(alice) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    pair = (ServerProcess(), ServerProcess())
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ServerProcess.start, pair))
        yield pair
    finally:
        for server in pair:
            server.stop()


def _log_in(server: ServerProcess, password: str) -> str:
    """Post the login form as a browser would, through a proxy that serves one host name (as
    nginx in front of several processes does: allauth keys the limit by site and login)."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    url = f"{server.url}/accounts/login/"
    with opener.open(urllib.request.Request(url, headers=HOST), timeout=10) as response:
        form = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode(
        {"login": "alice", "password": password, "csrfmiddlewaretoken": token}
    ).encode()
    with opener.open(urllib.request.Request(url, data, headers=HOST), timeout=10) as response:
        return response.read().decode()


def test_failed_logins_on_two_processes_add_up_to_one_limit(two_servers):
    first, second = two_servers
    for server in (first, second, first, second, first):  # five failures, split 3 + 2
        page = _log_in(server, "not the password")
        assert TOO_MANY not in page
        assert "not correct" in page, page[-3000:]
    # With a limit per process, the first server would have counted 3 and let alice in.
    assert TOO_MANY in _log_in(first, PASSWORD)
    assert TOO_MANY in _log_in(second, PASSWORD)
