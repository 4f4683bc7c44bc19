"""Logging out ends that session's live sockets too (they close with 4401)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest

from realtime.events import send_event_on_commit, user_group


@receiver(user_logged_out)
def close_sockets_of_ended_session(
    sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any
) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is None or not session_key:
        return
    # A failed send is logged, never an error page: the room tick closes the socket anyway.
    send_event_on_commit(user_group(user.pk), {"type": "session.ended", "session_key": session_key})
