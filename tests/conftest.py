"""Shared fixtures: personas, rooms, and WebSocket clients through the real ASGI stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from accounts.models import User
from rooms.models import Room
from tests.factories import MembershipFactory, RoomFactory, UserFactory

ORIGIN = b"http://testserver"


@pytest.fixture(scope="session", autouse=True)
def _clean_test_redis_keys() -> Any:
    """Tests write only under their own key prefix; remove it all when the run ends."""
    yield
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Any:
    """A channel layer per test: channels-redis binds its locks to the event loop that first
    used them, and every async test runs on a loop of its own."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _fresh_hub() -> Any:
    """A live hub per test: it binds its subscription to the event loop that first used it."""
    from realtime.hub import reset_hub

    reset_hub()
    yield
    reset_hub()


@pytest.fixture(autouse=True)
def _fresh_stores() -> Any:
    """Presence and throttles start empty in every test."""
    from presence.store import get_presence_store, reset_presence_store
    from rooms.throttle import get_throttle, reset_socket_quota, reset_throttle

    yield
    for getter in (get_presence_store, get_throttle):
        store = getter()
        with contextlib.suppress(Exception):
            asyncio.run(store.clear())
    reset_presence_store()
    reset_throttle()
    reset_socket_quota()


@pytest.fixture
def alice(db: None) -> User:
    return UserFactory(username="alice")


@pytest.fixture
def bob(db: None) -> User:
    return UserFactory(username="bob")


@pytest.fixture
def carol(db: None) -> User:
    return UserFactory(username="carol")


@pytest.fixture
def lobby(alice: User, bob: User) -> Room:
    """A public room: alice owns it, bob is a member."""
    room = RoomFactory(slug="lobby", name="Lobby", owner=alice)
    MembershipFactory(room=room, user=bob)
    return room


@pytest.fixture
def vault(alice: User) -> Room:
    """A private room with alice alone."""
    return RoomFactory(slug="vault", name="Vault", owner=alice, visibility=Room.Visibility.PRIVATE)


@pytest.fixture
def sent_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every event the services send, in order, instead of sending them (Zulip's
    capture_send_event_calls); a test that ignores the list has the layer "drop" them."""
    captured: list[tuple[str, dict[str, Any]]] = []

    def capture(events: list[tuple[str, Any]]) -> None:
        captured.extend((group, dict(event)) for group, event in events)

    monkeypatch.setattr("realtime.events._publish", capture)
    return captured


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


class Socket:
    """A WebSocket client on the real ASGI application (origin check, sessions, router)."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.connected = False
        self.subprotocol: str | None = None
        self.close_code: int | None = None

    async def send(self, frame: dict[str, Any] | str) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = 3) -> dict[str, Any]:
        message = await self.communicator.receive_output(timeout)
        if message["type"] == "websocket.close":
            self.close_code = message.get("code")
            raise ConnectionError(f"socket closed with {self.close_code}")
        return json.loads(message["text"])

    async def receive_type(self, kind: str, timeout: float = 3) -> dict[str, Any]:
        """The next frame of `kind`, skipping others (presence and sync come unasked)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.receive(timeout=max(0.01, deadline - loop.time()))
            if frame["type"] == kind:
                return frame

    async def receive_close(self, timeout: float = 3) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.communicator.receive_output(max(0.01, deadline - loop.time()))
            if message["type"] == "websocket.close":
                self.close_code = message.get("code")
                return self.close_code

    async def nothing(self, kind: str, within: float = 0.5) -> bool:
        """True if no frame of `kind` arrives within `within` seconds (the app keeps running)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (remaining := deadline - loop.time()) > 0:
            if await self.communicator.receive_nothing(timeout=remaining):
                return True
            if (await self.receive())["type"] == kind:
                return False
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.communicator.disconnect()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """`await connect(user, slug)` opens a JSON-mode socket; `html=True` for the page's mode."""
    from project.asgi import application

    sockets: list[Socket] = []

    async def _connect(
        user: User | None,
        slug: str,
        *,
        html: bool = False,
        origin: bytes = ORIGIN,
        cookie: str | None = None,
    ) -> Socket:
        headers = [(b"origin", origin)] if origin else []
        if cookie is None and user is not None:
            cookie = await sync_to_async(session_cookie)(user)
        if cookie:
            headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
        communicator = WebsocketCommunicator(
            application,
            f"/ws/rooms/{slug}/",
            headers=headers,
            subprotocols=[] if html else ["calcrooms.v1.json"],
        )
        socket = Socket(communicator)
        connected, detail = await communicator.connect(timeout=5)
        socket.connected = connected
        if connected:
            socket.subprotocol = detail
        else:
            socket.close_code = detail
        sockets.append(socket)
        return socket

    yield _connect
    for socket in sockets:
        await socket.close()
    await database_sync_to_async(connections.close_all)()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests need their own process (Playwright's sync API and asyncio clash)."""
    if os.environ.get("CALCROOMS_BROWSER") == "skip":
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="CALCROOMS_BROWSER=skip"))
