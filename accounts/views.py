"""Account pages of our own (allauth serves sign-in, sign-up and the rest): access tokens."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import tokens
from accounts.models import AccessToken


@require_http_methods(["GET", "POST"])
@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    """Your tokens; POST makes one and shows it, this once, in `#new-token`."""
    context: dict[str, object] = {"name": "", "scope": AccessToken.Scope.READ}
    status = 200
    if request.method == "POST":
        try:
            token, raw = tokens.token_create(
                owner=request.user,
                name=request.POST.get("name"),
                scope=request.POST.get("scope"),
            )
        except tokens.TokenRefused as refused:
            context |= {
                "error": refused.message,
                "name": request.POST.get("name", ""),
                "scope": request.POST.get("scope", AccessToken.Scope.READ),
            }
            status = 400
        else:
            context |= {"new_token": raw, "new_token_row": token}
    context["tokens"] = AccessToken.objects.filter(owner=request.user)
    response = render(request, "accounts/tokens.html", context, status=status)
    # The token is in this page only: no cache (the browser's or a proxy's) may keep it.
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token = tokens.token_revoke(owner=request.user, token_id=token_id)
    except AccessToken.DoesNotExist:
        raise Http404("No such token.") from None
    messages.info(request, f"Revoked “{token.name}”: it no longer works, and its sockets closed.")
    return redirect("accounts:tokens")
