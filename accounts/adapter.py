"""allauth adapter: where signing in and out lands, and mail that cannot be sent."""

from __future__ import annotations

import logging
import smtplib
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.contrib import messages
from django.http import HttpRequest

logger = logging.getLogger(__name__)


class AccountAdapter(DefaultAccountAdapter):
    def get_login_redirect_url(self, request: HttpRequest) -> str:
        return super().get_login_redirect_url(request) or "/"

    def send_mail(self, template_prefix: str, email: str, context: dict[str, Any]) -> None:
        """Send, or say plainly that mail is not set up: the account itself is already made,
        so a mail server that is missing must not turn signing up into an error page."""
        try:
            super().send_mail(template_prefix, email, context)
        except (OSError, smtplib.SMTPException) as exc:
            logger.warning(
                "could not send %s mail to %s: %s: %s",
                template_prefix.rsplit("/", 1)[-1],
                email,
                type(exc).__name__,
                exc,
            )
            request = getattr(self, "request", None) or context.get("request")
            if request is not None:
                messages.warning(
                    request,
                    "We could not send you an e-mail: mail is not set up on this server. "
                    "Your account works without it; ask the operator to configure mail "
                    "for password resets.",
                )
