"""Cookie sockets only from the exact origins the site is served on; every refusal is logged."""

from __future__ import annotations

import logging

import pytest

from project.origins import origin_refusal

pytestmark = pytest.mark.django_db(transaction=True)

SERVED = ["https://calc.example.com", "http://127.0.0.1:8000", "http://[::1]:8000"]


@pytest.mark.parametrize(
    ("origin", "why"),
    [
        ("https://calc.example.com", None),
        ("https://calc.example.com:443", None),
        ("HTTPS://Calc.Example.com", None),
        ("http://127.0.0.1:8000", None),
        ("http://[::1]:8000", None),
        ("http://calc.example.com", "scheme differs"),
        ("https://calc.example.com:8443", "port differs"),
        ("http://127.0.0.1:9999", "port differs"),
        ("https://127.0.0.1:8000", "scheme differs"),
        ("http://localhost:8000", "host not served here"),
        ("https://evil.example.com", "host not served here"),
        ("null", "not an origin"),
        ("", "no Origin header"),
        (None, "no Origin header"),
        ("javascript:alert(1)", "not an origin"),
    ],
)
def test_the_origin_must_match_scheme_host_and_port(origin, why):
    assert origin_refusal(origin, SERVED) == why


def test_a_star_port_is_an_explicit_opt_in_for_any_port():
    assert origin_refusal("http://127.0.0.1:5173", ["http://127.0.0.1:*"]) is None
    assert origin_refusal("https://127.0.0.1:5173", ["http://127.0.0.1:*"]) == "scheme differs"


@pytest.mark.parametrize(
    "origin",
    [b"http://testserver:8080", b"https://testserver", b"http://testserver.evil", b"null"],
)
async def test_a_cookie_socket_from_another_port_or_scheme_is_refused_and_logged(
    connect, lobby, alice, origin, caplog
):
    caplog.set_level(logging.INFO, logger="calcrooms.origins")
    socket = await connect(alice, "lobby", origin=origin)
    assert not socket.connected
    assert "alice" in caplog.text and origin.decode() in caplog.text


async def test_a_cookie_socket_from_the_served_origin_is_accepted(connect, lobby, alice):
    socket = await connect(alice, "lobby", origin=b"http://testserver")
    assert socket.connected
