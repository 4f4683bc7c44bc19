"""A broadcast's frame, framed once, written as the same bytes to every socket that takes it now.

uvicorn frames each `websocket.send` on its own: the text encoded, a websockets `Frame` built and
serialized, the output joined, then written. Without compression (the product serves sockets
with permessage-deflate off) a server's text frame is the same bytes for every socket, so a
broadcast to a thousand sockets framed the same text a thousand times: about a sixth of a busy
process's time. Here the frame is made once per text (`framed`) and written straight to each
socket's transport (`Wire.write`) when uvicorn's own send would have written it at once: the
connection open and not closing, its transport not paused, no extension negotiated. Otherwise
the caller takes uvicorn's send as before, which waits when it must. That is the systems'
shape that hold many sockets (Phoenix and Centrifugo write a broadcast's encoded frame to each).

Only uvicorn's `websockets-sansio` protocol is known here; with any other server or protocol,
`Wire.of` answers None and every frame goes through the server's send.
"""

from __future__ import annotations

from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn is a dependency; another server may run this
    WebSocketsSansIOProtocol = None

_FRAMED_KEPT = 8
_framed: dict[int, tuple[str, bytes]] = {}  # id(text) -> (text, its frame): the last few texts


def framed(text: str) -> bytes:
    """`text` as one unmasked, uncompressed text frame, the bytes uvicorn would write for it.

    A broadcast hands the same `str` to every socket, so the frame is made once per broadcast
    (and per wire mode): the last few are remembered by the identity of their text."""
    known = _framed.get(id(text))
    if known is not None and known[0] is text:
        return known[1]
    frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    if len(_framed) >= _FRAMED_KEPT:
        _framed.clear()
    _framed[id(text)] = (text, frame)
    return frame


class Wire:
    """A socket's transport under uvicorn's websockets-sansio protocol."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @classmethod
    def of(cls, send: Any) -> Wire | None:
        """The wire behind the server's own `send` (None: not a protocol known here)."""
        protocol = getattr(send, "__self__", None)
        if WebSocketsSansIOProtocol is None or type(protocol) is not WebSocketsSansIOProtocol:
            return None
        return cls(protocol)

    def write(self, frame: bytes) -> bool:
        """Write `frame` now if uvicorn's send would have (True); False: nothing was written,
        send it through the server (it waits for a paused transport, or tells the socket is
        gone)."""
        protocol = self._protocol
        conn = protocol.conn
        if (
            protocol.writable.is_set()
            and protocol.handshake_complete
            and not protocol.close_sent
            and not protocol.disconnected
            and protocol.initial_response is None
            and conn.state is OPEN
            and not conn.extensions
            and not conn.expect_continuation_frame
            and not protocol.transport.is_closing()
        ):
            protocol.transport.write(frame)
            return True
        return False
