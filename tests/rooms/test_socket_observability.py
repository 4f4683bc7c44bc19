"""What an operator sees of sockets: the metrics they move and the log lines they write, each with
the room, the person and the connection's id."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

pytestmark = pytest.mark.django_db(transaction=True)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, event: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", None) == event]


@pytest.fixture
def records():
    handler = Records()
    logger = logging.getLogger("rooms.consumers")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def test_a_socket_moves_the_metrics_an_operator_watches(connect, lobby, alice, bob):
    open_before = sample("calcrooms_sockets_open", room_size="2-10")
    entries_before = sample("calcrooms_frames_out_total", type="entry")
    fanouts_before = sample("calcrooms_fanout_seconds_count")
    expressions_before = sample("calcrooms_frames_in_total", type="expression")
    refusals_before = sample("calcrooms_refusals_total", code="invalid_frame", transport="ws")

    a = await connect(alice, "lobby")
    b = await connect(bob, "lobby")
    await a.receive_type("sync")
    await b.receive_type("sync")
    assert sample("calcrooms_sockets_open", room_size="2-10") == open_before + 2

    await a.send({"type": "expression", "expression": "6*7"})
    await a.receive_type("entry")
    await b.receive_type("entry")
    await a.send({"type": "no-such-frame"})
    await a.receive_type("error")

    assert sample("calcrooms_frames_in_total", type="expression") == expressions_before + 1
    assert sample("calcrooms_frames_out_total", type="entry") == entries_before + 2  # two sockets
    assert sample("calcrooms_fanout_seconds_count") == fanouts_before + 1  # one broadcast
    assert (
        sample("calcrooms_refusals_total", code="invalid_frame", transport="ws")
        == refusals_before + 1
    )
    await a.close()
    await b.close()


async def test_connect_close_and_refusal_are_logged_with_room_user_and_connection(
    connect, lobby, alice, bob, carol, records
):
    ws = await connect(alice, "lobby")
    await ws.receive_type("sync")
    refused = await connect(carol, "lobby")  # not a member
    assert not refused.connected
    await ws.close()

    [connected] = records.events("socket.connected")
    assert (connected.room, connected.user) == ("lobby", "alice")
    assert connected.conn
    [refusal] = records.events("socket.refused")
    assert (refusal.room, refusal.user) == ("lobby", "carol")
    # The close is logged once the socket's ending ran (the communicator's disconnect).
    for _ in range(100):
        if records.events("socket.closed"):
            break
        await asyncio.sleep(0.05)
    [closed] = records.events("socket.closed")
    assert (closed.room, closed.user, closed.conn) == ("lobby", "alice", connected.conn)
