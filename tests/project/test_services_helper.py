"""tests/services.py, the Makefile's service finder: only `export` lines on stdout, and throwaway
servers that really start (on spare ports, never the machine's own servers)."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "tests" / "services.py"
EXPORT = re.compile(r"^export [A-Z_]+=.*$")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

FAKE_APT = """#!/bin/sh
# A stand-in apt-get: chatters on stdout, and "installs" chromium next to itself.
echo "Reading package lists... (fake)"
echo "fake apt-get $*"
for arg in "$@"; do
    if [ "$arg" = chromium ]; then
        printf '#!/bin/sh\\necho fake chromium\\n' > "$(dirname "$0")/chromium"
        chmod +x "$(dirname "$0")/chromium"
        echo "Setting up chromium (fake) ..."
    fi
done
exit 0
"""


def helper_env(**extra: str) -> dict[str, str]:
    """The environment without the URLs pytest-env fills in, nor any of the helper's own
    overrides from outside."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CHROMIUM_PATH"}
        and not key.startswith("CALCROOMS_")
    }
    return {**env, **extra}


def run_helper(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HELPER)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


def exports(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    assert lines, "the helper printed nothing on stdout"
    for line in lines:
        assert EXPORT.match(line), f"not an export line on stdout: {line!r}"
    values = {}
    for line in lines:
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    return values


def spare_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are 0700, and the postgres user has to get through.
    path = Path(tempfile.mkdtemp(prefix="calcrooms-svc-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def postgres_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parent.parent.name)],
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def test_stdout_holds_only_exports_while_apt_chatters() -> None:
    if not IS_ROOT:
        pytest.skip("the helper only runs apt-get as root, and this test runs as another user")
    with scratch_dir() as fake_bin:
        apt = fake_bin / "apt-get"
        apt.write_text(FAKE_APT)
        apt.chmod(apt.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        chromium = fake_bin / "chromium"  # where the fake apt-get will put it
        env = helper_env(
            PATH=f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            DATABASE_URL="postgres://postgres@127.0.0.1:5432/calcrooms",
            REDIS_URL="redis://127.0.0.1:6379/0",
            CHROMIUM_PATH=str(chromium),
        )

        done = run_helper(env)

        assert done.returncode == 0, done.stderr
        values = exports(done.stdout)
        assert "Reading package lists... (fake)" in done.stderr
        assert "fake apt-get install" in done.stderr
        assert "fake" not in done.stdout
        assert chromium.exists()
        assert values["CHROMIUM_PATH"] == str(chromium)
        assert values["DATABASE_URL"] == env["DATABASE_URL"]
        assert values["REDIS_URL"] == env["REDIS_URL"]
        assert values["REDIS_KEY_PREFIX"].startswith("calcrooms-test-")

        shell = subprocess.run(
            ["sh", "-c", 'eval "$OUT" && echo "$CHROMIUM_PATH"'],
            env={**env, "OUT": done.stdout},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.strip() == str(chromium)


def test_throwaway_servers_start_on_spare_ports_and_survive_a_stale_pid_file() -> None:
    import psycopg
    import redis

    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    if IS_ROOT and not shutil.which("runuser"):
        pytest.skip("running as root needs runuser to start PostgreSQL as the postgres user")

    pg_probe, redis_probe, pg_port, redis_port = spare_ports(4)
    with scratch_dir() as scratch:
        data = scratch / "pg"
        env = helper_env(
            CALCROOMS_PG_PORT=str(pg_probe),
            CALCROOMS_REDIS_PORT=str(redis_probe),
            CALCROOMS_THROWAWAY_PG_PORT=str(pg_port),
            CALCROOMS_THROWAWAY_REDIS_PORT=str(redis_port),
            CALCROOMS_THROWAWAY_PG_DIR=str(data),
            CALCROOMS_THROWAWAY_REDIS_DIR=str(scratch / "redis"),
            CHROMIUM_PATH=sys.executable,
        )
        as_postgres = ["runuser", "-u", "postgres", "--"] if IS_ROOT else []

        def stop_postgres() -> None:
            if (data / "postmaster.pid").exists():
                subprocess.run(
                    [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"],
                    cwd="/",
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
            wait_until(lambda: not port_open(pg_port))

        def check(values: dict[str, str]) -> None:
            assert values["DATABASE_URL"] == f"postgres://postgres@127.0.0.1:{pg_port}/calcrooms"
            assert values["REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"
            assert values["CHROMIUM_PATH"] == sys.executable
            maintenance = values["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(maintenance, connect_timeout=10) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
                assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
            client = redis.Redis.from_url(values["REDIS_URL"], socket_timeout=10)
            try:
                assert client.ping()
            finally:
                client.close()

        try:
            first = run_helper(env)
            assert first.returncode == 0, first.stderr
            check(exports(first.stdout))

            # The cluster's server dies without cleaning up (as when the network namespace it
            # ran in is killed) and its pid goes to another, live process: it still starts.
            stop_postgres()
            assert not port_open(pg_port), "the throwaway PostgreSQL did not stop"
            (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n")
            second = run_helper(env)
            assert second.returncode == 0, second.stderr
            assert "stale" in second.stderr
            check(exports(second.stdout))
        finally:
            stop_postgres()
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=redis_port, socket_timeout=5)
                client.shutdown(nosave=True)
            wait_until(lambda: not port_open(redis_port))
        assert not port_open(pg_port), "the throwaway PostgreSQL was left running"
        assert not port_open(redis_port), "the throwaway Redis was left running"
