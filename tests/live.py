"""Real uvicorn processes serving the app against the test database, for browser and
multi-process tests. `ServerProcess(...).start()` waits until it answers `/healthz`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

ROOT = Path(__file__).resolve().parent.parent


def makefile_uvicorn_flags() -> list[str]:
    """The product's uvicorn flags as `make run` passes them (the Makefile's UVICORN_FLAGS)."""
    match = re.search(r"^UVICORN_FLAGS := (.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile has no UVICORN_FLAGS"
    return shlex.split(match.group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """The URL of the database the tests are using (pytest-django's test_ database)."""
    db = settings.DATABASES["default"]
    name = connection.settings_dict["NAME"]
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{name}"


class ServerProcess:
    """One uvicorn worker process: the same command `make run` uses."""

    def __init__(self, *, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL or "",
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECURE_COOKIES": "0",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Its own origins, and any port on loopback: tests put proxies of their own (on
            # ports of their own) in front of it. The exact rule is tested in-process.
            "DJANGO_ALLOWED_ORIGINS": "http://127.0.0.1:*,http://localhost:*",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = ROOT / "var" / f"test-server-{self.port}.log"

    def start(self, timeout: float = 30) -> ServerProcess:
        self.log_path.parent.mkdir(exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "project.asgi:application",
                "--host", "127.0.0.1", "--port", str(self.port),
                *makefile_uvicorn_flags(), "--log-level", "warning",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer in {timeout}s: {self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: the process dies without closing its sockets or cleaning up."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- WebSocket clients of a ServerProcess ------------------------------------------------------

Frame = dict[str, Any]


class Client:
    """One person's socket on one server, in JSON mode."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def next(
        self, kind: str, predicate: Callable[[Frame], bool] = lambda f: True, within: float = 10
    ) -> Frame:
        """The first frame of `kind` matching `predicate` within `within` seconds."""
        seen: list[Frame] = []
        try:
            async with asyncio.timeout(within):
                while True:
                    frame = json.loads(await self.ws.recv())
                    seen.append(frame)
                    if frame["type"] == kind and predicate(frame):
                        return frame
        except TimeoutError:
            pytest.fail(f"no matching {kind} frame within {within}s; saw {seen}")

    async def close(self) -> None:
        await self.ws.close()


def _session_cookie(user: Any) -> str:
    from tests.conftest import session_cookie

    try:
        return session_cookie(user)
    finally:
        connections.close_all()  # no idle connection may outlive the test database


async def join(server: ServerProcess, user: Any) -> Client:
    """`user`'s JSON-mode socket on lobby, through `server`."""
    cookie = await sync_to_async(_session_cookie)(user)
    ws = await connect(
        f"ws://127.0.0.1:{server.port}/ws/rooms/lobby/",
        origin=Origin(server.url),
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
        subprotocols=[Subprotocol("calcrooms.v1.json")],
        open_timeout=5,
    )
    assert ws.subprotocol == "calcrooms.v1.json"
    return Client(ws)
