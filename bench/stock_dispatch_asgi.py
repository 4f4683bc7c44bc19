"""The app with Channels' stock consumer dispatch (an `aclose_old_connections()` DB-thread hop
before every handler): the baseline that bench/fanout.py compares the product against."""

from __future__ import annotations

from channels.consumer import AsyncConsumer

from project.asgi import application
from rooms.consumers import RoomConsumer

RoomConsumer.dispatch = AsyncConsumer.dispatch  # type: ignore[method-assign]

__all__ = ["application"]
