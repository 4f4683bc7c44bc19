"""A PostgreSQL cluster of a test's own, on a spare port, that the test may stop and start.

Never the machine's shared server: `PgCluster` runs initdb into a directory of its own (as the
postgres user when running as root, through tests/services.py), starts it on a free port, and can
stop it (`fast` or `immediate`) and start it again on the same port, as an operator's restart
would. `close()` stops it and removes its directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from tests import services
from tests.live import ROOT, free_port


class PgCluster:
    def __init__(self) -> None:
        bindir = services.postgres_bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL's binaries are missing (Debian: apt-get install postgresql)"
            )
        self.bindir = bindir
        self.port = free_port()
        # Not under pytest's tmp_path: its parents are closed to the postgres user.
        self.data = Path(f"/tmp/calcrooms-outage-pg-{uuid.uuid4().hex[:8]}")
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, name: str = "calcrooms") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Start (initdb the first time); returns once it accepts connections."""
        services.start_throwaway_postgres(self.bindir, self.data, port=self.port)
        self._wait_ready()

    def _wait_ready(self) -> None:
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "60"],
            check=False,
            capture_output=True,
        )
        if ready.returncode != 0:
            raise RuntimeError(f"PostgreSQL on {self.port} is not ready: {ready.stdout!r}")

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session and shuts down cleanly; `immediate` aborts, as a crash."""
        subprocess.run(
            [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "stop", "-m", mode],
            check=True,
            cwd="/",
            capture_output=True,
            timeout=60,
        )

    def create_database(self, name: str = "calcrooms") -> None:
        subprocess.run(
            [
                str(self.bindir / "createdb"),
                "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "stop", "-m",
                 "immediate"],
                check=False,
                cwd="/",
                capture_output=True,
                timeout=60,
            )  # fmt: skip
        shutil.rmtree(self.data, ignore_errors=True)


def manage(database_url: str, *args: str, stdin: str | None = None) -> str:
    """`manage.py <args>` against `database_url`; its stdout."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "calcrooms-test-secret-key"),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr[-3000:]}")
    return done.stdout
