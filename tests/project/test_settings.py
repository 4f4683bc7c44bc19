"""The settings module refuses to start half-configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _import_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "-c", "import project.settings as s; print(s.DEBUG, s.CHANNEL_LAYERS)"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_secret_key_outside_debug_refuses_to_start() -> None:
    done = _import_settings(DJANGO_DEBUG="0")
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in done.stderr


def test_debug_runs_without_a_secret_key() -> None:
    done = _import_settings(DJANGO_DEBUG="1")
    assert done.returncode == 0, done.stderr


def test_a_malformed_boolean_is_an_error_not_a_guess() -> None:
    done = _import_settings(DJANGO_DEBUG="perhaps")
    assert done.returncode != 0
    assert "DJANGO_DEBUG must be a boolean" in done.stderr


def test_without_redis_the_layer_is_in_memory_with_a_warning() -> None:
    env = {"DJANGO_DEBUG": "1", "REDIS_URL": ""}
    done = subprocess.run(
        [sys.executable, "-c", "import project.settings as s; print(s.CHANNEL_LAYERS)"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "REDIS_URL"}, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "InMemoryChannelLayer" in done.stdout
    assert "serves ONE process only" in done.stderr


def test_with_redis_the_layer_waits_forever_on_idle_sockets() -> None:
    done = _import_settings(DJANGO_DEBUG="1", REDIS_URL="redis://127.0.0.1:6379/0")
    assert done.returncode == 0, done.stderr
    assert "RedisChannelLayer" in done.stdout
    assert "'socket_timeout': None" in done.stdout
