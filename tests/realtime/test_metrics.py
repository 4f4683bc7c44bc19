"""Each recording helper of `realtime.metrics` moves the series an operator would graph.

The metrics are process-wide (other tests record too), so each test reads a series before and
after and checks the difference.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from realtime import metrics
from tests.live import ROOT


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """The change of one series while the block runs."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels

    def __enter__(self) -> Delta:
        self.before = value(self.name, **self.labels)
        return self

    def __exit__(self, *exc: object) -> None:
        self.change = value(self.name, **self.labels) - self.before


@pytest.mark.parametrize(
    ("sockets", "bucket"),
    [
        (1, "1"),
        (2, "2-10"),
        (10, "2-10"),
        (11, "11-100"),
        (100, "11-100"),
        (101, "101-1000"),
        (1000, "101-1000"),
        (1001, ">1000"),
    ],
)
def test_room_size_buckets(sockets: int, bucket: str) -> None:
    assert metrics.room_size_bucket(sockets) == bucket


def test_open_sockets_move_with_their_room_across_a_bucket_boundary() -> None:
    def open_sockets() -> dict[str, float]:
        return {b: value("calcrooms_sockets_open", room_size=b) for b in metrics.ROOM_SIZES}

    before = open_sockets()
    for n in range(1, 12):  # a room grows to 11 sockets
        metrics.socket_opened(n)
    grown = open_sockets()
    assert grown["11-100"] - before["11-100"] == 11
    assert grown["2-10"] == before["2-10"]
    assert grown["1"] == before["1"]
    metrics.socket_closed(10)  # one leaves: the ten left are a 2-10 room now
    shrunk = open_sockets()
    assert shrunk["11-100"] == before["11-100"]
    assert shrunk["2-10"] - before["2-10"] == 10
    for n in range(9, -1, -1):
        metrics.socket_closed(n)
    assert open_sockets() == before


def test_frames_are_counted_by_type_and_a_client_cannot_invent_types() -> None:
    with (
        Delta("calcrooms_frames_out_total", type="entry") as out,
        Delta("calcrooms_frames_in_total", type="expression") as expressions,
        Delta("calcrooms_frames_in_total", type="other") as other,
    ):
        metrics.frame_out("entry", n=25)  # one broadcast to 25 local sockets
        metrics.frame_in("expression")
        metrics.frame_in("<script>")
    assert (out.change, expressions.change, other.change) == (25, 1, 1)
    assert value("calcrooms_frames_in_total", type="<script>") == 0


def test_entries_stored_by_transport() -> None:
    with (
        Delta("calcrooms_entries_stored_total", transport="ws") as ws,
        Delta("calcrooms_entries_stored_total", transport="command") as command,
    ):
        metrics.entry_stored("ws")
        metrics.entry_stored("ws")
        metrics.entry_stored("command")
    assert (ws.change, command.change) == (2, 1)


def test_fanout_time_is_a_histogram_in_seconds() -> None:
    with (
        Delta("calcrooms_fanout_seconds_count") as count,
        Delta("calcrooms_fanout_seconds_bucket", le="0.01") as fast,
    ):
        metrics.fanout_observed(0.004)
        metrics.fanout_observed(0.2)
    assert (count.change, fast.change) == (2, 1)


def test_catch_up_fetches_and_their_sizes() -> None:
    with (
        Delta("calcrooms_catchup_fetches_total") as fetches,
        Delta("calcrooms_catchup_entries_sum") as entries,
        Delta("calcrooms_catchup_entries_bucket", le="0.0") as empty,
    ):
        metrics.catchup_fetched(0)
        metrics.catchup_fetched(42)
    assert (fetches.change, entries.change, empty.change) == (2, 42, 1)


def test_refusals_by_code_and_transport_and_the_errors_counters() -> None:
    with (
        Delta("calcrooms_refusals_total", code="rate_limited", transport="ws") as limited,
        Delta("calcrooms_refusals_total", code="4403", transport="ws") as closed,
        Delta("calcrooms_refusals_total", code="too_long", transport="http") as http,
        Delta("calcrooms_redis_errors_total") as redis,
        Delta("calcrooms_database_errors_total") as database,
        Delta("calcrooms_presence_expiries_total") as expiries,
        Delta("calcrooms_slow_handlers_total", handler="entry_created") as slow,
    ):
        metrics.refusal("rate_limited")
        metrics.refusal(4403)
        metrics.refusal("too_long", "http")
        metrics.redis_error()
        metrics.database_error()
        metrics.presence_expired(3)
        metrics.slow_handler("entry_created")
        metrics.slow_handler("entry_created")
    changes = [d.change for d in (limited, closed, http, redis, database, expiries, slow)]
    assert changes == [1, 1, 1, 1, 1, 3, 2]


def test_every_metric_is_prefixed_and_documented() -> None:
    ours = {m.name: m for m in REGISTRY.collect() if m.name.startswith("calcrooms")}
    assert set(ours) == {
        "calcrooms_sockets_open",
        "calcrooms_frames_in",
        "calcrooms_frames_out",
        "calcrooms_entries_stored",
        "calcrooms_fanout_seconds",
        "calcrooms_catchup_fetches",
        "calcrooms_catchup_entries",
        "calcrooms_presence_expiries",
        "calcrooms_refusals",
        "calcrooms_redis_errors",
        "calcrooms_database_errors",
        "calcrooms_slow_handlers",
    }
    assert all(m.documentation for m in ours.values())


def test_the_module_imports_no_django_and_no_app() -> None:
    code = (
        "import sys, realtime.metrics; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('django', 'channels', 'rooms', 'accounts', 'presence', 'project')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _in_process(directory: str, code: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
    result = subprocess.run(
        [sys.executable, "-c", f"from realtime import metrics\n{code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_multiprocess_counters_add_up_and_a_dead_process_holds_no_sockets(tmp_path) -> None:
    directory = str(tmp_path / "prometheus")  # created by the module
    for _process in range(2):  # two processes, each with two sockets open when it ends
        code = "metrics.entry_stored('ws'); metrics.entry_stored('ws')\n"
        _in_process(directory, code + "metrics.socket_opened(1); metrics.socket_opened(2)")
    page = _in_process(
        directory,
        "metrics.socket_opened(1)\nimport sys; sys.stdout.write(metrics.exposition()[0].decode())",
    )
    assert 'calcrooms_entries_stored_total{transport="ws"} 4.0' in page
    assert 'calcrooms_sockets_open{room_size="2-10"} 0.0' in page  # the dead ones' are dropped
    assert 'calcrooms_sockets_open{room_size="1"} 1.0' in page  # the living one's socket
