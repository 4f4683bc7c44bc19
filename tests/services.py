"""Find (or start) the PostgreSQL, Redis, Chromium and nginx the test suite runs against.

`python tests/services.py` prints `export` lines for the Makefile, and nothing else on stdout:
DATABASE_URL and REDIS_URL as given, else the local servers on 127.0.0.1:5432 and :6379, else
throwaway servers started here from the installed binaries (installing Debian's postgresql /
redis-server / chromium / nginx packages when running as root and they are missing). Everything
else it, or anything it runs, has to say goes to stderr. When something cannot be had it says
what and how in one line, and exits 1.

The throwaway servers never touch the machine's own: they run on ports of their own, from a data
directory of their own, and work as root (PostgreSQL runs as the `postgres` user) and inside a
fresh network namespace (`unshare -n`). Environment overrides, mostly for tests of this helper:

    CALCROOMS_PG_PORT               5432    where a local PostgreSQL is looked for
    CALCROOMS_REDIS_PORT            6379    where a local Redis is looked for
    CALCROOMS_THROWAWAY_PG_PORT     54329   the throwaway PostgreSQL's port
    CALCROOMS_THROWAWAY_REDIS_PORT  63799   the throwaway Redis's port
    CALCROOMS_THROWAWAY_PG_DIR      /tmp/calcrooms-test-pg     its data directory (and socket, log)
    CALCROOMS_THROWAWAY_REDIS_DIR   /tmp/calcrooms-test-redis  the throwaway Redis's pid and log

Stop the throwaway servers with
`runuser -u postgres -- pg_ctl -D /tmp/calcrooms-test-pg stop -m fast` (without `runuser` when not
root) and `redis-cli -p 63799 shutdown nosave`.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

# Everything a child process prints goes here: stdout is the Makefile's `eval` input.
TO_STDERR = {"stdin": subprocess.DEVNULL, "stdout": sys.stderr.fileno()}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def give_up(message: str) -> None:
    say(message)
    sys.exit(1)


def env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        give_up(f"{name} must be a TCP port number (1-65535), not {raw!r}.")
    return int(raw)


PG_PORT = env_port("CALCROOMS_PG_PORT", 5432)
REDIS_PORT = env_port("CALCROOMS_REDIS_PORT", 6379)
THROWAWAY_PG_PORT = env_port("CALCROOMS_THROWAWAY_PG_PORT", 54329)
THROWAWAY_REDIS_PORT = env_port("CALCROOMS_THROWAWAY_REDIS_PORT", 63799)
THROWAWAY_PG_DIR = Path(os.environ.get("CALCROOMS_THROWAWAY_PG_DIR") or "/tmp/calcrooms-test-pg")
THROWAWAY_REDIS_DIR = Path(
    os.environ.get("CALCROOMS_THROWAWAY_REDIS_DIR") or "/tmp/calcrooms-test-redis"
)


def pg_url(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/calcrooms"


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


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


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"


_apt_updated = False


def apt_install(*packages: str) -> bool:
    global _apt_updated
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    say(f"installing {' '.join(packages)} from Debian's packages…")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, **TO_STDERR)
        _apt_updated = True
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=False,
        env=env,
        **TO_STDERR,
    )
    return done.returncode == 0


# PostgreSQL


def check_postgres(url: str, where: str) -> None:
    """The server has to take user postgres without a password (pytest-django creates
    test_calcrooms through it). Checked when psycopg is at hand, as it is in the venv."""
    try:
        import psycopg
    except ImportError:
        return
    try:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        reason = " ".join(str(error).split())
        give_up(
            f"{where} does not take user postgres without a password ({reason}); set "
            f"DATABASE_URL to a server that does."
        )


def postgres_bindir() -> Path | None:
    def version(initdb: str) -> tuple[int, ...]:
        name = Path(initdb).parent.parent.name
        return tuple(int(part) for part in re.findall(r"\d+", name))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    return None


def postgres_processes_in(data: Path) -> list[int]:
    """Every postgres process (postmaster or backend) working in the data directory: they all
    chdir into it. Works whatever postmaster.pid says and whichever network namespace they
    live in."""
    target = os.path.realpath(data)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            if os.readlink(proc / "cwd") == target:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def same_netns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return True


def netns_id() -> str:
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/net")) or "unknown"
    except OSError:
        return "unknown"


def clear_stale_locks(data: Path) -> None:
    """No postgres runs in `data`, so postmaster.pid and the socket locks are left over from a
    server that died (its network namespace went away, the machine was killed, ...). PostgreSQL
    itself refuses to start over them when their pid has since gone to another process."""
    for stale in [data / "postmaster.pid", *data.glob(".s.PGSQL.*")]:
        if stale.exists() or stale.is_symlink():
            say(f"removing the stale {stale} left by a throwaway PostgreSQL that is gone")
            stale.unlink()


def ensure_postgres() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if port_open(PG_PORT):
        check_postgres(pg_url(PG_PORT), f"the PostgreSQL on 127.0.0.1:{PG_PORT}")
        return pg_url(PG_PORT)
    url = pg_url(THROWAWAY_PG_PORT)
    if port_open(THROWAWAY_PG_PORT):
        check_postgres(url, f"the PostgreSQL on 127.0.0.1:{THROWAWAY_PG_PORT}")
        return url
    bindir = postgres_bindir()
    if bindir is None and apt_install("postgresql"):
        bindir = postgres_bindir()
    if bindir is None:
        give_up(
            f"PostgreSQL is missing: set DATABASE_URL, start a server on 127.0.0.1:{PG_PORT}, or "
            "install it (Debian: `sudo apt-get install postgresql`)."
        )
    start_throwaway_postgres(bindir, THROWAWAY_PG_DIR)
    check_postgres(url, f"the throwaway PostgreSQL on 127.0.0.1:{THROWAWAY_PG_PORT}")
    return url


def start_throwaway_postgres(bindir: Path, data: Path, port: int = THROWAWAY_PG_PORT) -> None:
    # initdb and postgres refuse to run as root: then the cluster is the postgres user's.
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            give_up(
                "runuser is missing (Debian: `apt-get install util-linux`); as root it runs the "
                "throwaway PostgreSQL as the postgres user."
            )
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            give_up(
                "there is no `postgres` user to run the throwaway PostgreSQL as root: install "
                "Debian's postgresql package, or `useradd --system postgres`, or set DATABASE_URL."
            )
        prefix = ["runuser", "-u", "postgres", "--"]
    run = {"cwd": "/", **TO_STDERR}  # cwd: the postgres user may not be able to read ours

    holders = postgres_processes_in(data)
    if holders and not any(same_netns(pid) for pid in holders):
        # A throwaway started in another network namespace still runs there, out of reach:
        # leave it be, and keep a cluster of this namespace's own.
        other = data.with_name(f"{data.name}-netns{netns_id()}")
        say(
            f"the throwaway PostgreSQL in {data} runs in another network namespace "
            f"(pid {holders[0]}); using {other} here"
        )
        data = other
        holders = postgres_processes_in(data)
    if holders:
        if wait_for_port(port, 30):  # one still starting up
            return
        give_up(
            f"a PostgreSQL runs in {data} (pid {min(holders)}) but not on 127.0.0.1:"
            f"{port}: stop it (`pg_ctl -D {data} stop -m fast`, as its user) or set "
            "CALCROOMS_THROWAWAY_PG_PORT to its port."
        )
    clear_stale_locks(data)

    log = data / "log"
    if not (data / "global" / "pg_control").exists():
        if data.exists() and any(data.iterdir()):
            if not (data / "PG_VERSION").exists():
                give_up(
                    f"{data} is not empty and not a PostgreSQL cluster: remove it or set "
                    "CALCROOMS_THROWAWAY_PG_DIR elsewhere."
                )
            say(f"{data} is a half-made cluster (an initdb was cut short): making it afresh")
            shutil.rmtree(data)
        data.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        # Data, socket (-k) and log all live in `data`, which has to be the postgres user's;
        # the directories above it only have to let that user through.
        for path in [data, *data.rglob("*")]:
            if path.lstat().st_uid != owner.pw_uid:
                os.lchown(path, owner.pw_uid, owner.pw_gid)
        reachable = subprocess.run([*prefix, "test", "-w", str(data)], check=False, **run)
        if reachable.returncode != 0:
            give_up(
                f"the postgres user cannot write to {data}: let it through the directories "
                "above it (chmod o+x), or set CALCROOMS_THROWAWAY_PG_DIR elsewhere."
            )
    if not (data / "global" / "pg_control").exists():
        say(f"creating a throwaway PostgreSQL cluster in {data}")
        made = subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=False,
            **run,
        )
        if made.returncode != 0:
            give_up(f"initdb failed for the throwaway PostgreSQL in {data} (its output is above).")
    options = " ".join(
        [
            f"-p {port}",
            f"-k {shlex.quote(str(data))}",
            "-c listen_addresses=127.0.0.1",
            "-c fsync=off",
        ]
    )
    say(f"starting a throwaway PostgreSQL on 127.0.0.1:{port} from {data}")
    started = subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=False,
        **run,
    )
    if started.returncode != 0 or not wait_for_port(port):
        give_up(
            f"the throwaway PostgreSQL on 127.0.0.1:{port} did not start: "
            f"{last_line(log)} (all of it in {log})"
        )


# Redis


def check_redis(port: int, where: str) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as error:
        give_up(f"{where} does not answer ({error}); set REDIS_URL to one that does.")
    if not answer.startswith(b"+PONG"):
        reply = answer.decode(errors="replace").strip()
        give_up(f"{where} does not answer PING ({reply!r}); set REDIS_URL to one that does.")


def ensure_redis() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if port_open(REDIS_PORT):
        check_redis(REDIS_PORT, f"the Redis on 127.0.0.1:{REDIS_PORT}")
        return redis_url(REDIS_PORT)
    where = f"the throwaway Redis on 127.0.0.1:{THROWAWAY_REDIS_PORT}"
    if port_open(THROWAWAY_REDIS_PORT):
        check_redis(THROWAWAY_REDIS_PORT, where)
        return redis_url(THROWAWAY_REDIS_PORT)
    if not shutil.which("redis-server"):
        apt_install("redis-server")
    server = shutil.which("redis-server")
    if not server:
        give_up(
            f"Redis is missing: set REDIS_URL, start a server on 127.0.0.1:{REDIS_PORT}, or "
            "install it (Debian: `sudo apt-get install redis-server`)."
        )
    THROWAWAY_REDIS_DIR.mkdir(parents=True, exist_ok=True)
    log = THROWAWAY_REDIS_DIR / f"redis-{THROWAWAY_REDIS_PORT}.log"
    say(f"starting {where}")
    started = subprocess.run(
        [
            server,
            "--port",
            str(THROWAWAY_REDIS_PORT),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(THROWAWAY_REDIS_DIR),
            "--pidfile",
            str(THROWAWAY_REDIS_DIR / f"redis-{THROWAWAY_REDIS_PORT}.pid"),
            "--logfile",
            str(log),
            "--daemonize",
            "yes",
        ],
        check=False,
        cwd=THROWAWAY_REDIS_DIR,
        **TO_STDERR,
    )
    if started.returncode != 0 or not wait_for_port(THROWAWAY_REDIS_PORT):
        give_up(f"{where} did not start: {last_line(log)} (all of it in {log})")
    check_redis(THROWAWAY_REDIS_PORT, where)
    return redis_url(THROWAWAY_REDIS_PORT)


def ensure_redis_binary() -> None:
    """tests/realtime/test_sentinel.py starts Redis servers and Sentinels of its own (the same
    binary in sentinel mode), whatever Redis the other tests use."""
    if not shutil.which("redis-server"):
        apt_install("redis-server")
    if not shutil.which("redis-server"):
        give_up(
            "redis-server is missing for the Sentinel test: install it (Debian: "
            "`sudo apt-get install redis-server`)."
        )


# Chromium


def ensure_chromium() -> str:
    given = os.environ.get("CHROMIUM_PATH")

    def find() -> str:
        return given or shutil.which("chromium") or "/usr/bin/chromium"

    if not Path(find()).exists():
        apt_install("chromium")
    path = find()
    if not Path(path).exists():
        where = f" (CHROMIUM_PATH is {given}, which does not exist)" if given else ""
        give_up(
            f"Chromium is missing for the browser tests{where}: install Debian's `chromium` "
            "package (`sudo apt-get install chromium`) or set CHROMIUM_PATH."
        )
    return path


# nginx (the deployment's reverse proxy, run by tests/deploy/ as a child process of the test)


def ensure_nginx() -> str:
    given = os.environ.get("NGINX_PATH")

    def find() -> str:
        return given or shutil.which("nginx") or "/usr/sbin/nginx"

    if not Path(find()).exists():
        apt_install("nginx")
    path = find()
    if not Path(path).exists():
        where = f" (NGINX_PATH is {given}, which does not exist)" if given else ""
        give_up(
            f"nginx is missing for the deployment tests{where}: install Debian's `nginx` "
            "package (`sudo apt-get install nginx`) or set NGINX_PATH."
        )
    return path


def main() -> None:
    ensure_redis_binary()
    values = {
        "DATABASE_URL": ensure_postgres(),
        "REDIS_URL": ensure_redis(),
        "CHROMIUM_PATH": ensure_chromium(),
        "NGINX_PATH": ensure_nginx(),
        # Tests keep to their own Redis keys: a prefix of their own per run.
        "REDIS_KEY_PREFIX": f"calcrooms-test-{uuid.uuid4().hex[:8]}",
    }
    for name, value in values.items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
