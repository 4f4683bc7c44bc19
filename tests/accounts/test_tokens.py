"""Personal access tokens over HTTP: the tokens page, and Bearer requests to the rooms' routes.

Through the real middleware stack (sessions, CSRF enforced, the token middleware) on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AccessToken
from accounts.tokens import token_create, token_revoke
from rooms.models import Entry

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def new_token(user, scope: str = "read", name: str = "bot") -> str:
    return token_create(owner=user, name=name, scope=scope)[1]


# --- The tokens page --------------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_only_its_hash_is_stored(alice):
    client = signed_in(alice)
    response = client.post("/accounts/tokens/", {"name": "nightly report", "scope": "write"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    match = re.search(r'<code id="new-token">(cr_[A-Za-z0-9_-]{43})</code>', response.text)
    assert match, response.text
    raw = match.group(1)
    stored = AccessToken.objects.get(owner=alice)
    assert (stored.name, stored.scope) == ("nightly report", "write")
    assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {str(value) for value in AccessToken.objects.values_list().get()}
    # Listed from now on, never shown again.
    page = client.get("/accounts/tokens/")
    assert page.status_code == 200
    assert "nightly report" in page.text and "Read and write" in page.text
    assert raw not in page.text and 'id="new-token"' not in page.text


def test_the_list_shows_my_tokens_with_when_they_were_made_and_used(alice, bob):
    new_token(alice, name="alice's bot")
    new_token(bob, name="bob's bot")
    page = signed_in(alice).get("/accounts/tokens/").text
    assert "alice&#x27;s bot" in page and "bob" not in page.split("<main")[1]
    assert "never" in page  # last used
    assert 'id="tokens"' in page and "Revoke" in page


@pytest.mark.parametrize(
    ("name", "scope", "says"),
    [
        ("", "read", "Give the token a name"),
        ("   ", "write", "Give the token a name"),
        ("x" * 101, "read", "at most 100"),
        ("bell\x07name", "read", "control characters"),
        ("nul\x00name", "read", "NUL"),
        ("bot", "admin", "read, or read and write"),
        ("bot", "", "read, or read and write"),
    ],
)
def test_a_token_without_a_name_or_a_known_scope_is_refused(alice, name, scope, says):
    response = signed_in(alice).post("/accounts/tokens/", {"name": name, "scope": scope})
    assert response.status_code == 400
    assert says in response.text
    assert 'id="new-token"' not in response.text
    assert not AccessToken.objects.exists()


def test_the_tokens_page_needs_a_signed_in_person(db):
    response = Client().get("/accounts/tokens/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert Client().post("/accounts/tokens/", {"name": "x", "scope": "read"}).status_code == 302


def test_the_page_header_links_to_the_tokens_page(alice):
    assert 'href="/accounts/tokens/"' in signed_in(alice).get("/").text


def test_revoking_my_token_ends_it_and_closes_its_sockets(
    alice, lobby, sent_events, django_capture_on_commit_callbacks
):
    raw = new_token(alice)
    token = AccessToken.objects.get()
    client = signed_in(alice)
    assert Client().get("/rooms/lobby/entries/", headers=bearer(raw)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/accounts/tokens/{token.pk}/revoke/")
    assert response.status_code == 302 and response["Location"] == "/accounts/tokens/"
    assert sent_events == [(f"user.{alice.pk}", {"type": "token.revoked", "token_id": token.pk})]
    token.refresh_from_db()
    assert token.revoked is not None
    assert Client().get("/rooms/lobby/entries/", headers=bearer(raw)).status_code == 401
    page = client.get("/accounts/tokens/").text
    assert "revoked" in page and f"/accounts/tokens/{token.pk}/revoke/" not in page


def test_someone_elses_token_cannot_be_revoked(alice, bob):
    new_token(bob)
    token = AccessToken.objects.get()
    assert signed_in(alice).post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 404
    assert signed_in(alice).post("/accounts/tokens/999999/revoke/").status_code == 404
    assert signed_in(bob).get(f"/accounts/tokens/{token.pk}/revoke/").status_code == 405
    token.refresh_from_db()
    assert token.revoked is None


def test_revoking_needs_the_csrf_token_of_a_browser_session(alice):
    new_token(alice)
    token = AccessToken.objects.get()
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/accounts/tokens/{token.pk}/revoke/").status_code == 403
    token.refresh_from_db()
    assert token.revoked is None


# --- Bearer requests --------------------------------------------------------------------------


def test_a_read_token_reads_entries_as_json(bob, lobby):
    signed_in(bob).post("/rooms/lobby/entries/", {"expression": "6*7"})
    raw = new_token(bob, "read")
    response = Client().get("/rooms/lobby/entries/", headers=bearer(raw))  # no Accept: JSON
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["room"] == "lobby" and body["last_seq"] == 1
    assert [(e["author"], e["result"]) for e in body["entries"]] == [("bob", "42")]
    presence = Client().get("/rooms/lobby/presence/", headers=bearer(raw))
    assert presence.status_code == 200 and presence.json()["room"] == "lobby"
    # A script that asks for HTML gets the fragments, like the page.
    html = Client().get("/rooms/lobby/entries/", headers={**bearer(raw), "Accept": "text/html"})
    assert html.status_code == 200 and 'id="entry-1"' in html.text


def test_a_read_token_cannot_submit(bob, lobby):
    raw = new_token(bob, "read")
    response = Client(enforce_csrf_checks=True).post(
        "/rooms/lobby/entries/", {"expression": "1+1"}, headers=bearer(raw)
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "read-only" in response.json()["error"]["message"]
    assert not Entry.objects.exists()


def test_a_write_token_submits_without_a_cookie_or_csrf_token(bob, lobby):
    raw = new_token(bob, "write")
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/rooms/lobby/entries/",
        {"expression": "12*7", "client_id": "6b6f0b55-29e4-4f34-a6c1-3b8f6f1c0c01"},
        headers=bearer(raw),
    )
    assert response.status_code == 201, response.content
    entry = response.json()["entry"]
    assert (entry["author"], entry["expression"], entry["result"]) == ("bob", "12*7", "84")
    assert Entry.objects.get().author == bob
    # The same submission again is the stored entry (200), as for every transport.
    again = client.post(
        "/rooms/lobby/entries/",
        {"expression": "12*7", "client_id": "6b6f0b55-29e4-4f34-a6c1-3b8f6f1c0c01"},
        headers=bearer(raw),
    )
    assert again.status_code == 200 and Entry.objects.count() == 1
    assert "sessionid" not in response.cookies  # nothing to ride on later


def test_a_cookie_post_still_needs_its_csrf_token(bob, lobby):
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    assert client.post("/rooms/lobby/entries/", {"expression": "1+1"}).status_code == 403
    assert not Entry.objects.exists()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer cr_not-a-real-token-not-a-real-token-not-a-real-x",
        "Bearer cr_short",
        "Bearer ",
        "bearer nonsense",
        "Bearer cr_\u00e9\u00e9",
    ],
)
def test_a_bad_token_is_401_json(bob, lobby, header):
    response = Client().get("/rooms/lobby/entries/", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_and_a_deactivated_owner_are_401(bob, lobby):
    raw = new_token(bob, "write")
    token_revoke(owner=bob, token_id=AccessToken.objects.get().pk)
    response = Client().get("/rooms/lobby/entries/", headers=bearer(raw))
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
    other = new_token(bob, "write")
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    assert Client().get("/rooms/lobby/entries/", headers=bearer(other)).status_code == 401


def test_a_token_has_its_owners_access_and_no_more(carol, lobby, vault):
    raw = new_token(carol, "write")
    public = Client().get("/rooms/lobby/entries/", headers=bearer(raw))
    assert public.status_code == 403 and public.json()["error"]["code"] == "forbidden"
    private = Client().get("/rooms/vault/entries/", headers=bearer(raw))
    assert private.status_code == 404 and private.json()["error"]["code"] == "not_found"
    post = Client().post("/rooms/vault/entries/", {"expression": "1"}, headers=bearer(raw))
    assert post.status_code == 404
    assert not Entry.objects.exists()


def test_a_token_cannot_manage_the_account(alice):
    raw = new_token(alice, "write")
    for response in (
        Client().get("/accounts/tokens/", headers=bearer(raw)),
        Client().post("/accounts/tokens/", {"name": "more", "scope": "write"}, headers=bearer(raw)),
        Client().get("/accounts/email/", headers=bearer(raw)),
        Client().get("/admin/", headers=bearer(raw)),
    ):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    assert AccessToken.objects.count() == 1


def test_last_used_is_written_at_most_once_an_interval(bob, lobby):
    raw = new_token(bob, "read")
    token = AccessToken.objects.get()
    assert token.last_used is None
    Client().get("/rooms/lobby/entries/", headers=bearer(raw))
    token.refresh_from_db()
    first = token.last_used
    assert first is not None
    Client().get("/rooms/lobby/entries/", headers=bearer(raw))
    token.refresh_from_db()
    assert token.last_used == first  # not written again within the interval
    AccessToken.objects.update(last_used=timezone.now() - timedelta(minutes=2))
    Client().get("/rooms/lobby/entries/", headers=bearer(raw))
    token.refresh_from_db()
    assert token.last_used > first


def test_the_admin_lists_tokens_and_revokes_them_through_the_service(
    alice, bob, sent_events, django_capture_on_commit_callbacks
):
    new_token(bob, "write", name="bob's bot")
    token = AccessToken.objects.get()
    alice.is_staff = alice.is_superuser = True
    alice.save(update_fields=["is_staff", "is_superuser"])
    client = signed_in(alice)
    listing = client.get("/admin/accounts/accesstoken/")
    assert listing.status_code == 200 and "bob&#x27;s bot" in listing.text
    assert token.token_hash in client.get(f"/admin/accounts/accesstoken/{token.pk}/change/").text
    assert client.get("/admin/accounts/accesstoken/add/").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/accounts/accesstoken/",
            {"action": "revoke", "_selected_action": [token.pk]},
        )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked is not None
    assert [event for _, event in sent_events] == [{"type": "token.revoked", "token_id": token.pk}]
