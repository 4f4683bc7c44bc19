"""B1: the minimal Channels tutorial chat consumer, served by uvicorn with the product's flags.

The consumer of the Channels tutorial ("Write your first consumer", async version): join the
room's group on connect, `group_send` every received message to it, send each `chat_message` to
the socket. No auth, no persistence, no presence; the channel layer is channels-redis's core
layer (`bench/b1_settings.py`). A client connects to `/ws/chat/<room>/` and sends
`{"message": "..."}`; every socket of the room (the sender's included) receives
`{"message": "..."}`.

    DJANGO_SETTINGS_MODULE=b1_settings uvicorn b1_asgi:application --app-dir bench <UVICORN_FLAGS>
"""

from __future__ import annotations

import json
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "b1_settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code: int) -> None:
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message = json.loads(text_data or "{}")["message"]
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"message": event["message"]}))


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [re_path(r"^ws/chat/(?P<room_name>[\w-]+)/$", ChatConsumer.as_asgi())]
        ),
    }
)
