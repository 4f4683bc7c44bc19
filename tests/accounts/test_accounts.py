"""Signing up, in (by username or email) and out, through allauth's real pages."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_signup_creates_an_account_and_signs_in(client: Client) -> None:
    response = client.post(
        "/accounts/signup/",
        {
            "username": "dora",
            "email": "dora@example.com",
            "password1": "a-long-calc-passphrase",
            "password2": "a-long-calc-passphrase",
        },
    )
    assert response.status_code == 302
    assert User.objects.filter(username="dora", email="dora@example.com").exists()
    assert client.get("/").status_code == 200  # signed in: the room list, not the login page


def test_signup_refuses_a_taken_username(client: Client) -> None:
    UserFactory(username="dora")
    response = client.post(
        "/accounts/signup/",
        {
            "username": "dora",
            "email": "other@example.com",
            "password1": "a-long-calc-passphrase",
            "password2": "a-long-calc-passphrase",
        },
    )
    assert response.status_code == 200
    assert User.objects.filter(username="dora").count() == 1
    assert b"username" in response.content.lower()


@pytest.mark.parametrize("login", ["alice", "alice@example.com"])
def test_login_by_username_or_email_lands_on_the_room_list(client: Client, login: str) -> None:
    UserFactory(username="alice")
    response = client.post("/accounts/login/", {"login": login, "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_login_with_a_wrong_password_is_refused(client: Client) -> None:
    UserFactory(username="alice")
    response = client.post("/accounts/login/", {"login": "alice", "password": "nope"})
    assert response.status_code == 200
    assert client.get("/").status_code == 302


def test_logout_signs_out(client: Client) -> None:
    client.force_login(UserFactory(username="alice"))
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/")["Location"].startswith("/accounts/login/")


def test_signed_out_visitor_is_sent_to_login(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_password_reset_sends_an_email(client: Client, mailoutbox: list) -> None:
    UserFactory(username="alice")
    response = client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert response.status_code == 302
    assert len(mailoutbox) == 1
    assert "alice" in mailoutbox[0].body
