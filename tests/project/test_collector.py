"""The server process's garbage collector, as `uvicorn project.asgi:application` leaves it
(project/collector.py): what was loaded frozen out of the collections, the young generations
collected less often, and both set from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = "import gc, project.asgi; print(*gc.get_threshold(), gc.get_freeze_count())"


def _load_app(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GC_"))}
    return subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env={**clean, "DJANGO_DEBUG": "1", "REDIS_URL": "", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_loaded_app_is_frozen_and_young_objects_are_collected_less_often() -> None:
    done = _load_app()
    assert done.returncode == 0, done.stderr
    young, middle, old, frozen = (int(n) for n in done.stdout.split())
    assert (young, middle, old) == (50_000, 20, 10)
    # Django, the app and what they import: tens of thousands of objects no collection walks.
    assert frozen > 50_000


def test_the_environment_can_put_cpythons_collector_back() -> None:
    done = _load_app(GC_THRESHOLDS="700,10,10", GC_FREEZE="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["700", "10", "10", "0"]


def test_malformed_thresholds_refuse_to_start() -> None:
    for bad in ("700,10", "700,ten,10", "0,10,10"):
        done = _load_app(GC_THRESHOLDS=bad)
        assert done.returncode != 0, bad
        assert "GC_THRESHOLDS must be three whole numbers of at least 1" in done.stderr, bad
