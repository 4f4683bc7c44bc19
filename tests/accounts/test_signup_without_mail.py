"""With DEBUG off and no mail server, signing up still works and says mail is not set up."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
from django.test import Client

from accounts.models import User


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket is closed


@pytest.mark.django_db
def test_signup_without_a_mail_server_creates_the_account_and_says_so(settings, caplog):
    settings.DEBUG = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = _closed_port()
    caplog.set_level(logging.WARNING, logger="accounts")
    client = Client(raise_request_exception=False)
    # An address of its own: allauth spaces confirmation mails per address (in the shared cache).
    email = f"dora-{uuid.uuid4().hex[:8]}@example.com"
    response = client.post(
        "/accounts/signup/",
        {
            "username": "dora",
            "email": email,
            "password1": "a long enough passphrase",
            "password2": "a long enough passphrase",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert User.objects.filter(username="dora").exists()
    assert b"mail is not set up" in response.content
    assert "could not send" in caplog.text and email in caplog.text


def test_server_errors_are_logged_with_their_traceback_whatever_debug_says(settings):
    """Django only mails them to ADMINS when DEBUG is off; here they reach the console."""
    logger = logging.getLogger("django.request")
    assert logger.getEffectiveLevel() <= logging.ERROR
    assert any(isinstance(h, logging.StreamHandler) for h in logger.handlers)
