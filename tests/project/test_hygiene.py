"""Malformed requests of every kind get a clear 4xx from a real server: no 500, no traceback."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from rooms.models import Entry
from tests.live import ServerProcess, _session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

PATHS = [
    "/static/..%2fproject/settings.py",
    "/static/%2e%2e/project/settings.py",
    "/static/..%5c..%5cproject%5csettings.py",
    "/static/css/app.css%00",
    "/rooms/%00/",
    "/rooms/%ed%a0%80/",
    "/rooms/%ff%fe/",
    "/rooms/lobby/entries/?after=%00",
    "/rooms/lobby/entries/?after=-1",
    "/rooms/lobby/entries/?limit=lots",
    "/rooms/lobby/entries/?before=99999999999999999999999999",
    "/rooms/lobby/history/?author=%00",
    "/rooms/lobby/history/?author=%ed%a0%80",
    "/rooms/lobby/export.csv?author=%00",
    "/?q=%ff%fe%fd",
    "/accounts/login/?next=%00",
    "/rooms/" + "a" * 4000 + "/",
    "/invite/%00/",
    "/invite/..%2f..%2f/",
]

WS_PATHS = ["/ws/rooms/vault%20/", "/ws/", "/ws/rooms/", "/ws/rooms/lobby/extra/", "/ws/rooms/%00/"]


@pytest.fixture
def server(lobby) -> Iterator[ServerProcess]:
    with ServerProcess() as process:
        yield process


def _status(url: str, cookie: str, data: bytes | None = None) -> int:
    request = urllib.request.Request(
        url, data=data, headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def test_a_corpus_of_malformed_requests_gets_4xx_and_no_traceback(server, alice, lobby):
    cookie = await sync_to_async(_session_cookie)(alice)
    statuses = {path: await sync_to_async(_status)(server.url + path, cookie) for path in PATHS}
    bad = {path: status for path, status in statuses.items() if status >= 500}
    assert bad == {}

    # Over HTTP, an expression that can never be stored is refused, not a 500.
    form = urllib.parse.urlencode({"expression": "1\x00+1"}).encode()
    assert await sync_to_async(_status)(server.url + "/rooms/lobby/entries/", cookie, form) == 400

    for path in WS_PATHS:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"ws://127.0.0.1:{server.port}{path}",
                origin=Origin(server.url),
                additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
                open_timeout=5,
            ):
                pass
        assert refused.value.response.status_code == 403, path

    # Over the socket, such expressions are `invalid_frame`: never `unavailable` (which a client
    # would resend forever), never stored, and the socket stays open.
    async with connect(
        f"ws://127.0.0.1:{server.port}/ws/rooms/lobby/",
        origin=Origin(server.url),
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
        subprotocols=[Subprotocol("calcrooms.v1.json")],
        open_timeout=5,
    ) as ws:
        frames = [
            '{"type": "expression", "expression": "1\\u0000+1"}',
            '{"type": "expression", "expression": "2\\ud800"}',
            '{"type": "expression", "expression": "3", "client_id": "\\udfff"}',
            '{"type": "expression", "expression": "6*7"}',
        ]
        for frame in frames:
            await ws.send(frame)
        codes = []
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "error":
                codes.append(message["code"])
            if message["type"] == "entry":
                assert message["entry"]["result"] == "42"
                break
        assert codes == ["invalid_frame"] * 3
    assert await Entry.objects.filter(room=lobby).acount() == 1

    server.stop()
    log = server.log_path.read_text()
    assert "Traceback" not in log
    assert "Internal Server Error" not in log
