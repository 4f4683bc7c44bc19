"""Security headers: a CSP with no inline script, HSTS over TLS, secure cookies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]

PAGES = [
    ("/accounts/login/", False),
    ("/accounts/signup/", False),
    ("/", True),
    ("/rooms/lobby/", True),
    ("/rooms/lobby/history/", True),
    ("/rooms/lobby/members/", True),
    ("/accounts/tokens/", True),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "signed_in"), PAGES)
def test_every_page_carries_a_csp_without_unsafe_inline(path, signed_in, lobby, alice):
    client = Client()
    if signed_in:
        client.force_login(alice)
    response = client.get(path)
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    # No inline handler or inline script left for the policy to block.
    body = response.content.decode()
    assert " onclick=" not in body and " onchange=" not in body and " onsubmit=" not in body
    assert "<script>" not in body


@pytest.mark.django_db
def test_hsts_is_sent_over_tls_only(settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    client = Client()
    assert "Strict-Transport-Security" not in client.get("/accounts/login/").headers
    secure = client.get("/accounts/login/", secure=True)
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_outside_debug_cookies_are_secure_and_hsts_is_on_by_default() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import project.settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
            " s.SESSION_COOKIE_HTTPONLY, s.SECURE_HSTS_SECONDS, s.ALLOWED_ORIGINS)",
        ],
        cwd=ROOT,
        env={**clean, "DJANGO_SECRET_KEY": "x", "DJANGO_ALLOWED_HOSTS": "calc.example.com"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "True",
        "True",
        "True",
        "31536000",
        "['https://calc.example.com']",
    ]
