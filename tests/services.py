"""Find (or start) the PostgreSQL, Redis and Chromium the test suite runs against.

`python tests/services.py` prints `export` lines for the Makefile: DATABASE_URL and REDIS_URL as
given, else the local servers on 5432 and 6379, else throwaway servers started here from the
installed binaries (installing Debian's postgresql / redis-server / chromium packages when running
as root and they are missing). When something cannot be had it says what and how, and exits 1.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
THROWAWAY_PG_PORT = 54329
THROWAWAY_REDIS_PORT = 63799


def say(message: str) -> None:
    print(message, file=sys.stderr)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.2)
    return False


def apt_install(*packages: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    say(f"installing {' '.join(packages)} from Debian's packages…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # stdout is the Makefile's `eval` input: everything apt prints goes to stderr.
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, stdout=sys.stderr)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages], check=False, env=env, stdout=sys.stderr
    )
    return done.returncode == 0


def ensure_postgres() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if port_open(5432):
        return "postgres://postgres@127.0.0.1:5432/calcrooms"
    if port_open(THROWAWAY_PG_PORT):
        return f"postgres://postgres@127.0.0.1:{THROWAWAY_PG_PORT}/calcrooms"
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins and apt_install("postgresql"):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        say(
            "PostgreSQL is missing: set DATABASE_URL, start a server on 127.0.0.1:5432, or "
            "install it (Debian: `sudo apt-get install postgresql`)."
        )
        sys.exit(1)
    bindir = Path(bins[-1]).parent
    data = Path("/tmp") / "calcrooms-test-pg"
    # initdb refuses to run as root: run the throwaway cluster as the postgres user.
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if prefix:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "log"),
            "-o",
            f"-p {THROWAWAY_PG_PORT} -k /tmp -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not wait_for_port(THROWAWAY_PG_PORT):
        say(f"the throwaway PostgreSQL did not start; see {data / 'log'}")
        sys.exit(1)
    return f"postgres://postgres@127.0.0.1:{THROWAWAY_PG_PORT}/calcrooms"


def ensure_redis() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if port_open(6379):
        return "redis://127.0.0.1:6379/0"
    if port_open(THROWAWAY_REDIS_PORT):
        return f"redis://127.0.0.1:{THROWAWAY_REDIS_PORT}/0"
    if not shutil.which("redis-server"):
        apt_install("redis-server")
    if not shutil.which("redis-server"):
        say(
            "Redis is missing: set REDIS_URL, start a server on 127.0.0.1:6379, or install it "
            "(Debian: `sudo apt-get install redis-server`)."
        )
        sys.exit(1)
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(THROWAWAY_REDIS_PORT),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not wait_for_port(THROWAWAY_REDIS_PORT):
        say("the throwaway Redis did not start")
        sys.exit(1)
    return f"redis://127.0.0.1:{THROWAWAY_REDIS_PORT}/0"


def ensure_chromium() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        apt_install("chromium")
    if not Path(path).exists():
        say(
            "Chromium is missing for the browser tests: install Debian's `chromium` package "
            "(`sudo apt-get install chromium`) or set CHROMIUM_PATH."
        )
        sys.exit(1)
    return path


def main() -> None:
    values = {
        "DATABASE_URL": ensure_postgres(),
        "REDIS_URL": ensure_redis(),
        "CHROMIUM_PATH": ensure_chromium(),
        # Tests keep to their own Redis keys: a prefix of their own per run.
        "REDIS_KEY_PREFIX": f"calcrooms-test-{uuid.uuid4().hex[:8]}",
    }
    for name, value in values.items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
