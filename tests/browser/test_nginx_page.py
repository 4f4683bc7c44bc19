"""Two people's pages through the deployment's nginx, on two uvicorn processes, in real Chromium.

Debian's nginx runs the site file an operator installs (deploy/nginx/calcrooms.conf, rendered
with this machine's ports and paths: tests/deploy/nginx_site.py), over TLS with a self-signed
certificate, in front of two uvicorn processes that share PostgreSQL and Redis and do not serve
static files (the page's scripts come from nginx). Two people open the room through nginx only.
Shown: their sockets land on different processes (nginx's access log names the process each
socket was served by), and each sees the other's entries, presence and typing. (Static files,
forwarded headers and the redirect without a browser: tests/deploy/test_nginx.py.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from accounts.models import User
from rooms.models import Room
from tests.browser.conftest import Pages, expect, wait_for_seq
from tests.deploy.nginx_site import NginxProxy, nginx_in_front_of_two
from tests.live import ServerProcess

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


@pytest.fixture
def stack(lobby: Room) -> Iterator[tuple[NginxProxy, list[ServerProcess]]]:
    with nginx_in_front_of_two(BEHIND_NGINX) as stack:
        yield stack


@pytest.fixture
def pages(pages: Pages, stack: tuple[NginxProxy, list[ServerProcess]]) -> Pages:
    """The suite's pages, through this test's nginx."""
    pages.base_url = stack[0].url
    return pages


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
    alice_page.wait_for_load_state("networkidle")  # no request of hers in flight to either
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
