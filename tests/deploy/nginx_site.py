"""Debian's nginx in front of test servers, configured by the deployment's own site file.

`NginxProxy(upstream_ports).start()` renders deploy/nginx/calcrooms.conf (the very file an
operator installs) with only the host-specific parts substituted: the upstream's process ports,
the listen ports (spare ports on 127.0.0.1), a self-signed certificate for 127.0.0.1, the static
root and the log paths. Each substitution must match the file, so a site file that changed shape
fails here instead of being tested half. nginx runs as a child process of the test, in the
foreground, from a directory of its own (config, pid, logs, temp files) and, when the tests run
as root, as the unprivileged `nobody`; it never touches the machine's own nginx.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tests.live import ROOT, ServerProcess, free_port

SITE = ROOT / "deploy" / "nginx" / "calcrooms.conf"

MAIN_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log notice;
events {{ worker_connections 1024; }}
http {{
    include {mime_types};
    default_type application/octet-stream;
    access_log {dir}/logs/access.log;
    client_body_temp_path {dir}/temp/client_body;
    proxy_temp_path {dir}/temp/proxy;
    fastcgi_temp_path {dir}/temp/fastcgi;
    uwsgi_temp_path {dir}/temp/uwsgi;
    scgi_temp_path {dir}/temp/scgi;
    include {dir}/calcrooms.conf;
}}
"""


def nginx_binary() -> str:
    """Debian's nginx (`make test` installs it through tests/services.py when missing)."""
    path = os.environ.get("NGINX_PATH") or shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        raise RuntimeError(
            "nginx is missing: `make test` installs Debian's nginx (tests/services.py); "
            "or `apt-get install nginx`, or set NGINX_PATH"
        )
    return path


def _replace(text: str, pattern: str, replacement: str, count: int) -> str:
    """`text` with each match of `pattern` replaced; it must match exactly `count` times."""
    found = len(re.findall(pattern, text, flags=re.MULTILINE))
    if found != count:
        raise AssertionError(f"{SITE.name}: expected {count} of {pattern!r}, found {found}")
    return re.sub(pattern, replacement, text, flags=re.MULTILINE)


def render_site(
    text: str,
    *,
    upstream_ports: list[int],
    http_port: int,
    https_port: int,
    certificate: Path,
    key: Path,
    static_root: Path,
    logs: Path,
) -> str:
    """The site file with this machine's ports and paths in place of the operator's."""
    # The upstream's process lines, keeping their parameters: one per test server.
    match = re.search(r"^    server 127\.0\.0\.1:\d+( [^;]*)?;\n(?:    server .*\n)*", text, re.M)
    if match is None:
        raise AssertionError(f"{SITE.name}: no `server 127.0.0.1:<port>` lines in the upstream")
    params = match.group(1) or ""
    servers = "".join(f"    server 127.0.0.1:{port}{params};\n" for port in upstream_ports)
    text = text[: match.start()] + servers + text[match.end() :]
    text = _replace(text, r"^    listen 80;$", f"    listen 127.0.0.1:{http_port};", 1)
    text = _replace(text, r"^    listen \[::\]:80;\n", "", 1)
    text = _replace(
        text, r"^    listen 443 ssl http2;$", f"    listen 127.0.0.1:{https_port} ssl http2;", 1
    )
    text = _replace(text, r"^    listen \[::\]:443 ssl http2;\n", "", 1)
    text = _replace(text, r"ssl_certificate \S+;", f"ssl_certificate {certificate};", 1)
    text = _replace(text, r"ssl_certificate_key \S+;", f"ssl_certificate_key {key};", 1)
    text = _replace(text, r"alias /srv/calcrooms/var/static/;", f"alias {static_root}/;", 1)
    text = _replace(text, r"/var/log/nginx/", f"{logs}/", 2)
    return text


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (clients skip verification)."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(certificate),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return certificate, key


def collect_static(static_root: Path) -> None:
    """`manage.py collectstatic` into `static_root`, as the migrate unit does on a host."""
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_STATIC_ROOT": str(static_root)},
        check=True,
        capture_output=True,
    )


class NginxProxy:
    """nginx on spare ports, in front of the uvicorn processes on `upstream_ports`."""

    def __init__(self, upstream_ports: list[int]) -> None:
        self.upstream_ports = upstream_ports
        self.http_port = free_port()
        self.https_port = free_port()
        self.url = f"https://127.0.0.1:{self.https_port}"
        self.dir = Path(tempfile.mkdtemp(prefix="calcrooms-nginx-"))
        self.static_root = self.dir / "static"
        self.access_log = self.dir / "logs" / "calcrooms.access.log"
        self.error_log = self.dir / "logs" / "calcrooms.error.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> NginxProxy:
        for sub in ("logs", "temp"):
            (self.dir / sub).mkdir()
        collect_static(self.static_root)
        certificate, key = self_signed_certificate(self.dir)
        site = render_site(
            SITE.read_text(),
            upstream_ports=self.upstream_ports,
            http_port=self.http_port,
            https_port=self.https_port,
            certificate=certificate,
            key=key,
            static_root=self.static_root,
            logs=self.dir / "logs",
        )
        (self.dir / "calcrooms.conf").write_text(site)
        mime_types = Path("/etc/nginx/mime.types")
        if not mime_types.exists():  # nginx-common's; a build from source keeps its own
            mime_types = Path(nginx_binary()).resolve().parent.parent / "conf" / "mime.types"
        (self.dir / "nginx.conf").write_text(MAIN_CONF.format(dir=self.dir, mime_types=mime_types))
        user = None
        if os.geteuid() == 0:  # never nginx as root: the master itself runs as nobody
            user = pwd.getpwnam("nobody")
            for path in [self.dir, *self.dir.rglob("*")]:
                os.lchown(path, user.pw_uid, user.pw_gid)
        command = [nginx_binary(), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")]
        command += ["-e", str(self.dir / "logs" / "error.log")]
        log = (self.dir / "logs" / "nginx.out").open("wb")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.logs()}")
            if (self.dir / "nginx.pid").exists() and _port_open(self.https_port):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nginx did not listen in {timeout}s: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("nginx.out", "error.log", "calcrooms.error.log"):
            path = self.dir / "logs" / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast: open sockets are cut
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NginxProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def nginx_in_front_of_two(env: dict[str, str]) -> Iterator[tuple[NginxProxy, list[ServerProcess]]]:
    """nginx on spare ports in front of two fresh uvicorn processes started with `env`."""
    servers = [ServerProcess(env=env), ServerProcess(env=env)]
    proxy = NginxProxy([server.port for server in servers])
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ServerProcess.start, servers))
        proxy.start()
        yield proxy, servers
    finally:
        proxy.stop()
        for server in servers:
            server.stop()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
