"""The systemd units of deploy/ run what they say, here without systemd.

Their command lines are read from the unit files, `/srv/calcrooms` taken for this checkout, `%i`
for a spare port, `/run` for a scratch directory, and run by hand as systemd would run them: the
web process's ExecStartPre and ExecStart (with the Makefile's uvicorn flags) serve the app and stop
on SIGTERM, after emptying their own metrics directory; the migrate unit's commands migrate (the
test database) and collect the static files.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from tests.live import ROOT, free_port, makefile_uvicorn_flags
from tests.live import test_database_url as database_url  # not a test of this module

pytestmark = pytest.mark.django_db(transaction=True)

UNITS = ROOT / "deploy" / "systemd"


def directives(unit: Path, name: str) -> list[str]:
    """Every value of `name=` in the unit, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", unit.read_text())
    return [m.group(1).strip() for m in re.finditer(rf"^{name}=(.*)$", text, re.MULTILINE)]


def as_here(value: str, *, port: int, run: Path) -> str:
    return (
        value.replace("/srv/calcrooms", str(ROOT))
        .replace("%i", str(port))
        .replace("/run/", f"{run}/")
    )


def app_env(**extra: str) -> dict[str, str]:
    """What /etc/calcrooms/calcrooms.env holds, for the test database and Redis prefix."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL or "",
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SERVE_STATIC": "0",
        **extra,
    }


def test_the_web_unit_runs_the_makefiles_uvicorn_and_stops_on_sigterm() -> None:
    unit = UNITS / "calcrooms@.service"
    (start,) = directives(unit, "ExecStart")
    assert directives(unit, "KillSignal") == ["SIGTERM"]
    command = shlex.split(start)
    assert command[:2] == ["/srv/calcrooms/.venv/bin/uvicorn", "project.asgi:application"]
    flags = makefile_uvicorn_flags()
    assert " ".join(flags) in " ".join(command), "the unit's flags are not the Makefile's"

    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch)
        environment = dict(
            as_here(line, port=port, run=run).split("=", 1)
            for line in directives(unit, "Environment")
        )
        multiproc = Path(environment["PROMETHEUS_MULTIPROC_DIR"])
        multiproc.mkdir(parents=True)
        (multiproc / "counter_999999.db").write_bytes(b"left by the previous run")
        env = app_env(**environment)
        for pre in directives(unit, "ExecStartPre"):
            subprocess.run(shlex.split(as_here(pre, port=port, run=run)), env=env, check=True)
        assert multiproc.is_dir() and list(multiproc.iterdir()) == []

        log = (run / "uvicorn.log").open("wb")
        process = subprocess.Popen(
            [as_here(arg, port=port, run=run) for arg in command],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    url = f"http://127.0.0.1:{port}/healthz/ready"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        assert response.status == 200
                        break
                except OSError:
                    assert process.poll() is None, (run / "uvicorn.log").read_text()
                    assert time.monotonic() < deadline, "the unit's process did not answer"
                    time.sleep(0.2)
            assert any(multiproc.iterdir()), "no metrics files in the unit's own directory"
            process.send_signal(signal.SIGTERM)
            # uvicorn re-raises the SIGTERM it handled once it has shut down.
            assert process.wait(timeout=30) == -signal.SIGTERM
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = (run / "uvicorn.log").read_text() if (run / "uvicorn.log").exists() else ""
    assert "Traceback" not in output, output


def test_the_migrate_unit_migrates_and_collects_the_static_files() -> None:
    unit = UNITS / "calcrooms-migrate.service"
    assert directives(unit, "Type") == ["oneshot"]
    commands = [shlex.split(line) for line in directives(unit, "ExecStart")]
    assert [c[2:] for c in commands] == [
        ["migrate", "--noinput"],
        ["collectstatic", "--noinput"],
    ]
    with tempfile.TemporaryDirectory() as scratch:
        static_root = Path(scratch) / "static"
        env = app_env(DJANGO_STATIC_ROOT=str(static_root))
        outputs = []
        for command in commands:
            done = subprocess.run(
                [as_here(arg, port=0, run=Path(scratch)) for arg in command],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
        assert "No migrations to apply." in outputs[0]  # the test database, already migrated
        script = static_root / "js" / "room.js"
        assert script.read_bytes() == (ROOT / "static" / "js" / "room.js").read_bytes()
