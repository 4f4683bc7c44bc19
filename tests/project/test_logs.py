"""`LOG_FORMAT=json`: every log line is one JSON object carrying the record's fields."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from project.logs import JsonFormatter
from tests.live import ROOT, ServerProcess

SOCKET_CLOSED = {
    "event": "socket.closed",
    "room": "lobby",
    "user": "bob",
    "conn": "c-1f3a",
    "code": 4403,
}


def _record(extra: dict[str, object] | None = None, exc_info: object = None) -> logging.LogRecord:
    logger = logging.getLogger("rooms.consumers")
    return logger.makeRecord(
        "rooms.consumers", logging.INFO, __file__, 1, "closing %s's socket", ("bob",), exc_info,
        extra=extra,
    )  # fmt: skip


def test_a_record_is_one_line_with_its_extras() -> None:
    line = JsonFormatter().format(_record(extra=SOCKET_CLOSED))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "INFO"
    assert parsed["logger"] == "rooms.consumers"
    assert parsed["message"] == "closing bob's socket"
    assert parsed["time"].endswith("Z")
    assert {key: parsed[key] for key in SOCKET_CLOSED} == SOCKET_CLOSED


def test_a_traceback_stays_inside_the_object() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        record = _record(exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert "ZeroDivisionError: division by zero" in parsed["exception"]
    assert parsed["exception"].startswith("Traceback (most recent call last):")


def test_values_json_cannot_write_become_text() -> None:
    parsed = json.loads(JsonFormatter().format(_record(extra={"request": object(), "who": {"a"}})))
    assert parsed["request"].startswith("<object object")
    assert parsed["who"] == ["a"]


SCRIPT = """
import logging, warnings
import django
django.setup()
logging.getLogger("rooms.consumers").info("closing %s's socket", "bob", extra=EXTRA)
try:
    {}["missing"]
except KeyError:
    logging.getLogger("realtime.connection").exception("closing a socket: a handler failed")
logging.getLogger("uvicorn.error").error("Exception in ASGI application")
logging.getLogger("django.security.DisallowedHost").error("Invalid HTTP_HOST header")
warnings.warn("an old way", UserWarning)
"""


def _run_with_settings(log_format: str | None) -> subprocess.CompletedProcess[str]:
    # A Redis URL (never connected to here): without one the settings warn before logging is set.
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "REDIS_URL": redis_url}
    env.pop("LOG_FORMAT", None)
    if log_format:
        env["LOG_FORMAT"] = log_format
    code = f"EXTRA = {SOCKET_CLOSED!r}\n{SCRIPT}"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_with_the_settings_every_line_of_a_process_is_json() -> None:
    result = _run_with_settings("json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    by_message = {line["message"]: line for line in lines}
    closed = by_message["closing bob's socket"]
    assert {key: closed[key] for key in SOCKET_CLOSED} == SOCKET_CLOSED
    failed = by_message["closing a socket: a handler failed"]
    assert failed["level"] == "ERROR"
    assert "KeyError: 'missing'" in failed["exception"]
    assert by_message["Exception in ASGI application"]["logger"] == "uvicorn.error"
    assert by_message["Invalid HTTP_HOST header"]["logger"] == "django.security.DisallowedHost"
    assert any("an old way" in line["message"] for line in lines)
    assert len(lines) == 5  # once each: nothing printed twice by two handlers


def test_the_default_stays_the_human_message() -> None:
    result = _run_with_settings(None)
    assert result.returncode == 0, result.stderr
    assert "closing bob's socket\n" in result.stderr
    assert "Traceback (most recent call last):\n" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


@pytest.mark.django_db(transaction=True)
def test_a_real_server_logs_json_lines() -> None:
    server = ServerProcess(env={"LOG_FORMAT": "json", "METRICS_TOKEN": "t0ken-t0ken"})
    with server:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/metrics", timeout=10)
        assert refused.value.code == 401
    text = server.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    refusals = [line for line in lines if line.get("event") == "metrics.refused"]
    assert len(refusals) == 1
    assert refusals[0]["client"] == "127.0.0.1"
    assert refusals[0]["code"] == 401
    assert refusals[0]["logger"] == "calcrooms.metrics"
