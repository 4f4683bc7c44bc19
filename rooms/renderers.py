"""One renderer per wire mode: the room socket picks one at connect and sends what it builds.

A broadcast is built once, not once per socket: an entry's frames travel inside its event (see
`payloads.entry_frames`), and a presence frame is cached by the room's presence version, so a
thousand local sockets of a room cost one `json.dumps` (and, in HTML, one render per distinct
view: the viewer's own typing is never shown to them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

from realtime.events import EntryCreated, EntryDict
from rooms import payloads

Online = list[dict[str, Any]]


class _FrameCache:
    """The last few frames built, by key (presence frames of recent versions)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._frames: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    def get(self, key: tuple[Any, ...], build: Callable[[], str]) -> str:
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = build()
            if len(self._frames) > self.size:
                self._frames.popitem(last=False)
        return frame


class Renderer:
    """Builds every frame a room socket sends, in one wire mode."""

    mode: ClassVar[str]
    subprotocol: ClassVar[str | None]

    __slots__ = ("room_id", "room_slug", "viewer")  # one per socket

    def __init__(self, *, room_id: int, room_slug: str, viewer: str) -> None:
        self.room_id = room_id
        self.room_slug = room_slug
        self.viewer = viewer

    def entry_event(self, event: EntryCreated) -> str:
        return event["frames"][self.mode]  # type: ignore[literal-required]

    def entry(self, entry: EntryDict) -> str:
        return payloads.entry_frames(entry)[self.mode]  # type: ignore[literal-required]

    def presence(self, version: int, online: Online) -> str:
        raise NotImplementedError

    def sync(self, last_seq: int) -> str:
        raise NotImplementedError

    def error(self, code: str, message: str, client_id: str | None) -> str:
        raise NotImplementedError


class JsonRenderer(Renderer):
    """JSON envelopes `{"v": 1, "type": ...}` for clients that offer `calcrooms.v1.json`."""

    __slots__ = ()

    mode = "json"
    subprotocol = payloads.JSON_SUBPROTOCOL
    _presence: ClassVar[_FrameCache] = _FrameCache()

    def presence(self, version: int, online: Online) -> str:
        return self._presence.get(
            (self.room_id, version),
            lambda: payloads.json_frame(
                "presence", room=self.room_slug, online=online, count=len(online)
            ),
        )

    def sync(self, last_seq: int) -> str:
        return payloads.json_frame("sync", last_seq=last_seq)

    def error(self, code: str, message: str, client_id: str | None) -> str:
        return payloads.json_frame("error", code=code, message=message, client_id=client_id)


class HtmlRenderer(Renderer):
    """htmx fragments with `hx-swap-oob` for the room page."""

    __slots__ = ()

    mode = "html"
    subprotocol = None
    _presence: ClassVar[_FrameCache] = _FrameCache()

    _typing: ClassVar[OrderedDict[tuple[int, int], frozenset[str]]] = OrderedDict()

    def presence(self, version: int, online: Online) -> str:
        # Everyone who is not typing sees the same fragment; a typing viewer sees it without
        # their own name in the typing line. Who types is worked out once per state, not once
        # per socket (a walk of the whole room for each of its thousand sockets).
        view = self.viewer if self.viewer in self._typing_in(version, online) else ""
        return self._presence.get(
            (self.room_id, version, view),
            lambda: payloads.presence_html(online, viewer=self.viewer),
        )

    def _typing_in(self, version: int, online: Online) -> frozenset[str]:
        key = (self.room_id, version)
        typing = self._typing.get(key)
        if typing is None:
            typing = self._typing[key] = frozenset(o["username"] for o in online if o["typing"])
            if len(self._typing) > self._presence.size:
                self._typing.popitem(last=False)
        return typing

    def sync(self, last_seq: int) -> str:
        return payloads.html_sync_frame(last_seq)

    def error(self, code: str, message: str, client_id: str | None) -> str:
        return payloads.html_error_frame(code, message, client_id)


def renderer_for(subprotocols: list[str], *, room_id: int, room_slug: str, viewer: str) -> Renderer:
    """JSON when the client offers the JSON subprotocol, else the page's HTML fragments."""
    cls = JsonRenderer if payloads.JSON_SUBPROTOCOL in subprotocols else HtmlRenderer
    return cls(room_id=room_id, room_slug=room_slug, viewer=viewer)
