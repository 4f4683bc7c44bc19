"""The deployment's nginx site in front of two uvicorn processes, driven by real Chromium.

Debian's nginx runs the site file an operator installs (deploy/nginx/calcrooms.conf, rendered
with this machine's ports and paths: tests/deploy/nginx_site.py), over TLS with a self-signed
certificate, in front of two uvicorn processes that share PostgreSQL and Redis and do not serve
static files. Two people's pages open the room through nginx only. Shown: their sockets land on
different processes (nginx's access log names the process each socket was served by), each sees
the other's entries, presence and typing, the static files come from nginx, and the app takes
the scheme from X-Forwarded-Proto (HSTS), /metrics is not public, and plain http is sent to
https.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from typing import Any

import pytest
from django.conf import settings

from accounts.models import User
from rooms.models import Room
from tests.browser.conftest import (  # noqa: F401 (fixtures of the browser run)
    Pages,
    _fresh_stores,
    browser,
    django_db_modify_db_settings,
    expect,
    playwright_driver,
    wait_for_seq,
)
from tests.deploy.nginx_site import NginxProxy
from tests.live import ROOT, ServerProcess

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="two processes share Redis"),
]

ROOM = "/rooms/lobby/"
SOON = 15_000  # ms: "eventually", many times what nginx, the servers and the page need

# The processes behind nginx, as deployed: nginx serves /static/, and cookie sockets come from the
# https origin nginx serves on. (uvicorn believes X-Forwarded-* from 127.0.0.1: --proxy-headers
# is its default, and FORWARDED_ALLOW_IPS's.)
BEHIND_NGINX = {"DJANGO_SERVE_STATIC": "0", "DJANGO_ALLOWED_ORIGINS": "https://127.0.0.1:*"}


def insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str) -> tuple[int, Message, bytes]:
    """(status, headers (any letter case), body) of a GET, redirects not followed."""
    opener = urllib.request.build_opener(
        _NoRedirect, urllib.request.HTTPSHandler(context=insecure_tls())
    )
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def stack(lobby: Room) -> Iterator[tuple[NginxProxy, list[ServerProcess]]]:
    """nginx on spare ports in front of two fresh uvicorn processes."""
    servers = [ServerProcess(env=BEHIND_NGINX), ServerProcess(env=BEHIND_NGINX)]
    proxy = NginxProxy([server.port for server in servers])
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ServerProcess.start, servers))
        proxy.start()
        yield proxy, servers
    finally:
        proxy.stop()
        for server in servers:
            server.stop()


@pytest.fixture
def pages(browser: Any, stack: tuple[NginxProxy, list[ServerProcess]]) -> Iterator[Pages]:  # noqa: F811
    proxy, _ = stack
    state = Pages(browser=browser, base_url=proxy.url)
    yield state
    errors = state.unexpected_errors()
    for context in state.contexts:
        context.close()
    assert not errors, "the page logged JavaScript errors:\n" + "\n".join(errors)


def page_through(pages: Pages, user: User) -> Any:
    """`user`'s room page, opened through nginx, its socket connected."""
    context = pages.context_for(user, ignore_https_errors=True)
    return pages.open_page(context, user.username, ROOM)


def socket_lines(proxy: NginxProxy) -> list[str]:
    """nginx's access-log lines of room sockets (each written when its socket closed)."""
    if not proxy.access_log.exists():
        return []
    return [
        line
        for line in proxy.access_log.read_text().splitlines()
        if '"GET /ws/rooms/lobby/ ' in line
    ]


def wait_for_socket_lines(proxy: NginxProxy, count: int) -> list[str]:
    deadline = time.monotonic() + SOON / 1000
    while time.monotonic() < deadline:
        lines = socket_lines(proxy)
        if len(lines) >= count:
            return lines
        time.sleep(0.1)
    pytest.fail(f"nginx logged {socket_lines(proxy)} for the room's sockets, not {count} lines")


def upstream_of(line: str) -> str:
    match = re.search(r" 101 \d+ upstream=(\S+) ", line)
    assert match, f"not a socket upgraded by one process: {line}"
    return match.group(1)


def expect_online(page: Any, *usernames: str) -> None:
    expect(page.locator("#online li")).to_have_count(len(usernames), timeout=SOON)
    for username in usernames:
        expect(page.locator(f'#online li[data-username="{username}"]')).to_have_count(1)


def test_two_people_on_two_processes_behind_nginx_see_each_other(
    stack: tuple[NginxProxy, list[ServerProcess]],
    pages: Pages,
    lobby: Room,
    alice: User,
    bob: User,
) -> None:
    proxy, servers = stack
    processes = {f"127.0.0.1:{server.port}" for server in servers}

    # Alice's socket holds one process, so nginx (least_conn) gives bob's to the other.
    alice_page = page_through(pages, alice)
    expect_online(alice_page, "alice")
    bob_page = page_through(pages, bob)
    expect_online(bob_page, "alice", "bob")
    expect_online(alice_page, "alice", "bob")

    # Typing and entries, both ways: each types (the other sees it, nobody sees their own),
    # then sends it (the other sees the entry).
    bob_input = bob_page.locator("input[name=expression]")
    bob_input.press_sequentially("6*7", delay=50)
    expect(alice_page.locator("#typing")).to_have_text("bob is typing…", timeout=SOON)
    expect(bob_page.locator("#typing")).to_have_text("")
    bob_input.press("Enter")
    wait_for_seq(alice_page, 1, timeout=SOON)
    expect(alice_page.locator("#entry-1 .result")).to_have_text("42")

    alice_input = alice_page.locator("input[name=expression]")
    alice_input.press_sequentially("#1 + 1", delay=50)
    expect(bob_page.locator("#typing")).to_have_text("alice is typing…", timeout=SOON)
    expect(alice_page.locator("#typing")).to_have_text("")
    alice_input.press("Enter")
    wait_for_seq(bob_page, 2, timeout=SOON)
    expect(bob_page.locator("#entry-2 .result")).to_have_text("43")
    expect(bob_page.locator("#typing")).to_have_text("", timeout=SOON)

    # Which process each socket was on: nginx writes a socket's line when it closes.
    assert socket_lines(proxy) == [], "a socket closed (and reconnected) during the test"
    alice_page.context.close()
    expect_online(bob_page, "bob")  # alice's leave, through the other process, to bob
    (alice_line,) = wait_for_socket_lines(proxy, 1)
    bob_page.context.close()
    _, bob_line = wait_for_socket_lines(proxy, 2)
    alice_process, bob_process = upstream_of(alice_line), upstream_of(bob_line)
    print(f"alice's socket was served by {alice_process}, bob's by {bob_process}")
    assert {alice_process, bob_process} == processes


def test_static_files_come_from_nginx_and_the_app_trusts_its_headers(
    stack: tuple[NginxProxy, list[ServerProcess]], lobby: Room
) -> None:
    proxy, servers = stack
    script = (ROOT / "static" / "js" / "room.js").read_bytes()

    status, headers, body = fetch(f"{proxy.url}/static/js/room.js")
    assert (status, body) == (200, script)
    assert headers["Cache-Control"] == "max-age=3600"  # nginx's `expires`, not Django's
    for server in servers:  # the processes do not serve them at all
        assert fetch(f"{server.url}/static/js/room.js")[0] == 404

    # Proxied: the app sees https (X-Forwarded-Proto) and says so with HSTS.
    status, headers, _ = fetch(f"{proxy.url}/accounts/login/")
    assert status == 200
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    status, headers, _ = fetch(f"{servers[0].url}/accounts/login/")  # plain http, no proxy
    assert status == 200
    assert headers["Strict-Transport-Security"] is None

    # The metrics are scraped from each process, never through the public site.
    assert fetch(f"{proxy.url}/metrics")[0] == 403

    # Plain http only sends people to https.
    status, headers, _ = fetch(f"http://127.0.0.1:{proxy.http_port}/rooms/lobby/")
    assert status == 301
    assert headers["Location"] == "https://127.0.0.1/rooms/lobby/"
