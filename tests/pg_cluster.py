"""A PostgreSQL cluster of a test's own, on a spare port, that the test may stop and start.

Never the machine's shared server: `PgCluster` runs initdb into a directory of its own (as the
postgres user when running as root, through tests/services.py), starts it on a free port, and can
stop it (`fast` or `immediate`) and start it again on the same port, as an operator's restart
would. `close()` stops it and removes its directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import services
from tests.live import ROOT, ServerProcess, free_port


class PgCluster:
    def __init__(self) -> None:
        bindir = services.postgres_bindir()
        if bindir is None and services.apt_install("postgresql"):  # as root, when missing
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


_SETUP = """
import json
from django.test import Client
from accounts.models import User
from accounts.tokens import token_create
out = {}
for name in ("alice", "bob"):
    client = Client()
    client.force_login(User.objects.get(username=name))
    out[name] = client.cookies["sessionid"].value
out["token"] = token_create(owner=User.objects.get(username="bob"), name="outage", scope="write")[1]
print("SETUP" + json.dumps(out))
"""


@dataclass
class Site:
    """A uvicorn process on a PostgreSQL of its own, with the demo data, alice's and bob's
    session cookies and a write token of bob's."""

    cluster: PgCluster
    server: ServerProcess
    cookies: dict[str, str]
    token: str

    def log_offset(self) -> int:
        return self.server.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        return self.server.log_path.read_bytes()[offset:].decode(errors="replace")


@contextlib.contextmanager
def site_on_own_postgres(env: dict[str, str] | None = None) -> Iterator[Site]:
    """A fresh cluster, migrated, with the demo data, and a server process on it."""
    cluster = PgCluster()
    server: ServerProcess | None = None
    try:
        cluster.start()
        cluster.create_database()
        url = cluster.url()
        manage(url, "migrate", "--noinput")
        manage(url, "load_demo", "--force")
        made = json.loads(manage(url, "shell", stdin=_SETUP).split("SETUP", 1)[1])
        server = ServerProcess(env={"DATABASE_URL": url, **(env or {})}).start()
        yield Site(cluster, server, {n: made[n] for n in ("alice", "bob")}, made["token"])
    finally:
        if server is not None:
            server.stop()
        cluster.close()


def manage(database_url: str, *args: str, stdin: str | None = None) -> str:
    """`manage.py <args>` against `database_url`; its stdout."""
    from django.conf import settings  # the key the test's server signs its cookies with

    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
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
