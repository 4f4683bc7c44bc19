"""The deployment's nginx site in front of two uvicorn processes, without a browser.

Debian's nginx runs the site file an operator installs (deploy/nginx/calcrooms.conf, rendered
with this machine's ports and paths: tests/deploy/nginx_site.py), over TLS with a self-signed
certificate, in front of two uvicorn processes that do not serve static files. Shown: the static
files come from nginx only, the app takes the scheme from X-Forwarded-Proto (HSTS), /metrics is
not public, and plain http is sent to https. (Two browsers on two processes behind it:
tests/browser/test_nginx_page.py.)
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

from rooms.models import Room
from tests.deploy.nginx_site import NginxProxy, nginx_in_front_of_two
from tests.live import ROOT, ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)

# The processes behind nginx, as deployed: nginx serves /static/. (uvicorn believes X-Forwarded-*
# from 127.0.0.1: --proxy-headers is its default, and FORWARDED_ALLOW_IPS's.)
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
    with nginx_in_front_of_two(BEHIND_NGINX) as stack:
        yield stack


def test_static_files_come_from_nginx_and_the_app_trusts_its_headers(
    stack: tuple[NginxProxy, list[ServerProcess]],
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
