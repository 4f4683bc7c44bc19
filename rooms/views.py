"""HTTP views: parse, authorize through `selectors.room_access`, call one service or selector."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from presence.services import presence_counts_sync, presence_state_sync, state_payload
from realtime import metrics
from realtime.events import EntryDict
from rooms import selectors, services
from rooms.models import Room
from rooms.payloads import entries_html, entry_as_dict, entry_html
from rooms.selectors import Access


def wants_json(request: HttpRequest) -> bool:
    """JSON when asked by `format=json`, or when Accept prefers it to HTML (`*/*` gets HTML).

    A script with an access token gets JSON unless its Accept names HTML.
    """
    if request.GET.get("format") == "json":
        return True
    if getattr(request, "access_token", None) is not None:
        return "text/html" not in request.headers.get("Accept", "")
    if "application/json" not in request.headers.get("Accept", ""):
        return False
    return request.get_preferred_type(["text/html", "application/json"]) == "application/json"


def json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def signed_in(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Login required: a redirect to the login page, or 401 JSON for a client that wants JSON."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            if wants_json(request):
                return json_error(401, "unauthenticated", "Sign in first.")
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapper


def _data_view(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Answer 404/403 of the access check as JSON to JSON clients."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(request, *args, **kwargs)
        except Http404:
            metrics.refusal("not_found", "http")
            if wants_json(request):
                return json_error(404, "not_found", "No such room.")
            raise
        except PermissionDenied as exc:
            metrics.refusal("forbidden", "http")
            if wants_json(request):
                return json_error(403, "forbidden", str(exc) or "Forbidden.")
            return HttpResponse(str(exc) or "Forbidden.", status=403, content_type="text/plain")

    return wrapper


def _room(request: HttpRequest, slug: str, need: Access = Access.MEMBER) -> tuple[Room, Access]:
    """The room, if the access check lets this request have `need`: else 404 or 403.

    A room the user may not even see is a 404 (private rooms do not reveal that they exist); a
    public room seen by a non-member who needs more is a 403.
    """
    grant = selectors.room_access(slug=slug, user=request.user)
    if grant.room is None or grant.access == Access.NONE:
        raise Http404("No such room.")
    if grant.access < need:
        if grant.access < Access.MEMBER:
            raise PermissionDenied("Join this room first.")
        raise PermissionDenied("Only the room's owner can do that.")
    return grant.room, grant.access


# --- Pages --------------------------------------------------------------------------------------


@require_GET
@signed_in
def room_list(request: HttpRequest) -> HttpResponse:
    """A page of your rooms (`?mine=N`) and a page of the public rooms (`?page=N`): however many
    rooms exist, the list is ROOM_LIST_PAGE_SIZE of each."""
    mine, public = selectors.rooms_for_list(user=request.user)
    size = settings.ROOM_LIST_PAGE_SIZE
    mine_page = Paginator(mine, size).get_page(request.GET.get("mine"))
    public_page = Paginator(public, size).get_page(request.GET.get("page"))
    shown = [*mine_page.object_list, *public_page.object_list]
    counts = presence_counts_sync(room_ids=[room.id for room in shown])
    for room in shown:
        room.online_count = counts.get(room.id, 0)
    return render(
        request,
        "rooms/room_list.html",
        {
            "my_rooms": mine_page.object_list,
            "public_rooms": public_page.object_list,
            "mine_page": mine_page,
            "public_page": public_page,
            "mine_links": _page_links(request, "mine", mine_page),
            "public_links": _page_links(request, "page", public_page),
        },
    )


def _page_links(request: HttpRequest, param: str, page: Page) -> dict[str, str | None]:
    """The previous and next page's query strings, keeping the other list's page."""

    def link(number: int) -> str:
        query = request.GET.copy()
        query[param] = str(number)
        return "?" + query.urlencode()

    return {
        "previous": link(page.previous_page_number()) if page.has_previous() else None,
        "next": link(page.next_page_number()) if page.has_next() else None,
    }


@require_http_methods(["GET", "POST"])
@signed_in
def room_create(request: HttpRequest) -> HttpResponse:
    error = None
    status = 200
    name = request.POST.get("name", "")
    visibility = request.POST.get("visibility", Room.Visibility.PUBLIC)
    if request.method == "POST":
        try:
            room = services.room_create(owner=request.user, name=name, visibility=visibility)
        except services.Refused as refused:
            error = refused.message
            status = 429 if refused.code == "rate_limited" else 400
        else:
            return redirect("rooms:detail", slug=room.slug)
    return render(
        request,
        "rooms/room_create.html",
        {"error": error, "name": name, "visibility": visibility},
        status=status if error else 200,
    )


@require_GET
@signed_in
def room_detail(request: HttpRequest, slug: str) -> HttpResponse:
    room, access = _room(request, slug, Access.VISITOR)
    if access < Access.MEMBER:
        return _join_page(request, room)
    page = selectors.entries_before(room=room, before=None, limit=settings.ROOM_PAGE_ENTRIES)
    online = state_payload(presence_state_sync(room_id=room.id))
    last_seq = page.entries[-1]["seq"] if page.entries else 0
    last_read = selectors.read_position(room_id=room.id, user_id=request.user.pk)
    # The divider goes before the first unread entry shown (the oldest shown when even older
    # ones are unread); none when everything is read.
    unread = [e["seq"] for e in page.entries if e["seq"] > last_read]
    return render(
        request,
        "rooms/room_detail.html",
        {
            "room": room,
            "access": access,
            "is_owner": access == Access.OWNER,
            "entries": page.entries,
            "has_older": page.has_more,
            "oldest_seq": page.entries[0]["seq"] if page.entries else None,
            "last_seq": last_seq,
            "first_unread": unread[0] if unread else None,
            "online": online,
            "typing_text": "",
            "config": {
                "room": room.slug,
                "username": request.user.username,
                "lastSeq": last_seq,
                "lastReadSeq": last_read,
                "entriesUrl": reverse("rooms:entries", args=[room.slug]),
                "loginUrl": f"{reverse('account_login')}?{urlencode({'next': request.path})}",
                "roomsUrl": reverse("rooms:list"),
                "expressionMaxLength": settings.EXPRESSION_MAX_LENGTH,
                "expressionBucketCapacity": settings.EXPRESSION_BUCKET_CAPACITY,
                "expressionRefillPerSecond": settings.EXPRESSION_BUCKET_REFILL_PER_SECOND,
                "pageEntries": settings.ROOM_PAGE_ENTRIES,
                "pageLimit": settings.ENTRIES_MAX_LIMIT,
                "typingIntervalMs": _ms(settings.TYPING_SEND_INTERVAL_SECONDS),
                "reconnectMinMs": _ms(settings.RECONNECT_MIN_SECONDS),
                "reconnectCapMs": _ms(settings.RECONNECT_CAP_SECONDS),
                "connectionDeadAfterMs": _ms(settings.CONNECTION_DEAD_AFTER_SECONDS),
                "resendMinMs": _ms(settings.RESEND_MIN_SECONDS),
                "resendCapMs": _ms(settings.RESEND_CAP_SECONDS),
            },
        },
    )


def _join_page(request: HttpRequest, room: Room) -> HttpResponse:
    """A public room's page for a visitor: the Join button, or why there is none (barred)."""
    grant = selectors.room_access(room_id=room.pk, user=request.user)
    context = {"room": room, "barred": grant.barred}
    if grant.barred:
        context["barred_message"] = services.barred_message(room)
    return render(request, "rooms/room_join.html", context)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@require_POST
@signed_in
def room_join(request: HttpRequest, slug: str) -> HttpResponse:
    room, _access = _room(request, slug, Access.VISITOR)
    try:
        services.room_join(room=room, user=request.user)
    except services.Refused as refused:
        raise PermissionDenied(refused.message) from None
    return redirect("rooms:detail", slug=room.slug)


def _confirmed(request: HttpRequest) -> bool:
    """Leaving and removing act only on a POST that carries `confirm=yes` (the confirmation
    page's button): the first click shows what will happen and asks."""
    return request.method == "POST" and request.POST.get("confirm") == "yes"


def _confirm_page(
    request: HttpRequest, *, title: str, message: str, button: str, back: str
) -> HttpResponse:
    return render(
        request,
        "rooms/confirm.html",
        {"title": title, "message": message, "button": button, "back": back},
    )


@require_http_methods(["GET", "POST"])
@signed_in
def room_leave(request: HttpRequest, slug: str) -> HttpResponse:
    room, access = _room(request, slug)
    if access == Access.OWNER:
        messages.error(request, "The owner cannot leave their own room.")
        return redirect("rooms:detail", slug=room.slug)
    if not _confirmed(request):
        return _confirm_page(
            request,
            title=f"Leave {room.name}?",
            message=(
                "You will stop seeing this room. "
                + (
                    "You can join it again from the room list."
                    if room.is_public
                    else "It is private: to come back you will need a new invite link."
                )
            ),
            button="Leave room",
            back=reverse("rooms:detail", args=[room.slug]),
        )
    try:
        services.room_leave(room=room, user=request.user)
    except services.Refused as refused:
        messages.error(request, refused.message)
        return redirect("rooms:detail", slug=room.slug)
    messages.info(request, f"You left {room.name}.")
    return redirect("rooms:list")


@require_GET
@signed_in
def room_members(request: HttpRequest, slug: str) -> HttpResponse:
    room, _access = _room(request, slug, Access.OWNER)
    invite = services.invite_for_owner(room=room, actor=request.user)
    return render(
        request,
        "rooms/room_members.html",
        {
            "room": room,
            "members": selectors.room_members(room=room),
            "bars": selectors.room_bars(room=room),
            "invite": invite,
            "invite_url": request.build_absolute_uri(reverse("rooms:invite", args=[invite.token])),
            "invite_expires": services.invite_expires(invite),
        },
    )


@require_POST
@signed_in
def invite_reset(request: HttpRequest, slug: str) -> HttpResponse:
    room, _access = _room(request, slug, Access.OWNER)
    services.invite_reset(room=room, actor=request.user)
    messages.info(request, "Made a new invite link: every earlier link no longer works.")
    return redirect("rooms:members", slug=room.slug)


@require_http_methods(["GET", "POST"])
@signed_in
def member_remove(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    room, _access = _room(request, slug, Access.OWNER)
    if not _confirmed(request):
        member = selectors.room_members(room=room).filter(user_id=user_id).first()
        if member is None:
            raise Http404("No such member.")
        return _confirm_page(
            request,
            title=f"Remove {member.user.username} from {room.name}?",
            message=(
                f"{member.user.username} will be disconnected and barred: no invite link and no "
                "Join button lets them back until you lift the bar on the members page."
            ),
            button=f"Remove {member.user.username}",
            back=reverse("rooms:members", args=[room.slug]),
        )
    try:
        services.member_remove(room=room, actor=request.user, user_id=user_id)
    except services.Refused as refused:
        messages.error(request, refused.message)
    return redirect("rooms:members", slug=room.slug)


@require_POST
@signed_in
def member_unbar(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    room, _access = _room(request, slug, Access.OWNER)
    services.member_unbar(room=room, actor=request.user, user_id=user_id)
    return redirect("rooms:members", slug=room.slug)


@require_POST
@signed_in
def room_delete(request: HttpRequest, slug: str) -> HttpResponse:
    room, _access = _room(request, slug, Access.OWNER)
    if request.POST.get("confirm") != room.slug:
        messages.error(request, "Type the room's address to confirm deleting it.")
        return redirect("rooms:members", slug=room.slug)
    services.room_delete(room=room, actor=request.user)
    messages.info(request, f"Deleted {room.name} and its history.")
    return redirect("rooms:list")


@require_http_methods(["GET", "POST"])
@signed_in
def invite_accept(request: HttpRequest, token: str) -> HttpResponse:
    """The invite page names the room and who invited; a bad, reset or expired link is refused
    (400, saying which) before anything else, a barred person is refused (403), POST joins."""
    try:
        invite = services.invite_check(token=token)
    except services.Refused as refused:
        return render(
            request,
            "rooms/invite.html",
            {"error": refused.message, "code": refused.code},
            status=400,
        )
    if request.method == "POST":
        try:
            room = services.invite_accept(token=token, user=request.user)
        except services.Refused as refused:
            status = 403 if refused.code == "barred" else 400
            context = {"error": refused.message, "code": refused.code, "invite": invite}
            return render(request, "rooms/invite.html", context, status=status)
        return redirect("rooms:detail", slug=room.slug)
    grant = selectors.room_access(room_id=invite.room_id, user=request.user)
    context: dict[str, Any] = {"invite": invite, "room": invite.room}
    if grant.barred:
        context.update(error=services.barred_message(invite.room), code="barred")
        return render(request, "rooms/invite.html", context, status=403)
    context["already_member"] = grant.access >= Access.MEMBER
    return render(request, "rooms/invite.html", context)


# --- Data routes (entries, presence) ------------------------------------------------------------


def _int_param(request: HttpRequest, name: str) -> int | None:
    raw = request.GET.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


@require_http_methods(["GET", "POST"])
@signed_in
@_data_view
def room_entries(request: HttpRequest, slug: str) -> HttpResponse:
    room, _access = _room(request, slug)
    if request.method == "POST":
        return _entry_post(request, room)
    try:
        after = _int_param(request, "after")
        before = _int_param(request, "before")
        limit = selectors.clamp_limit(request.GET.get("limit"))
    except ValueError as exc:
        if wants_json(request):
            return json_error(400, "invalid", str(exc))
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    # `author` narrows either page to one person's entries (the page's ↑/↓ recall).
    author = request.GET.get("author") or None
    if before is not None:
        page = selectors.entries_before(room=room, before=before, limit=limit, author=author)
    else:
        page = selectors.entries_after(room=room, after=after or 0, limit=limit, author=author)
        if author is None:  # a client catching up (the recall's `author` pages are not)
            metrics.catchup_fetched(len(page.entries))
    entries = page.entries
    # The room's last seq as the access check read it, just before the page (one query fewer
    # per catch-up), or the page's newest entry if one was stored in between: never behind
    # what the answer holds. Entries stored since come live on the client's socket.
    last_seq = max(room.last_seq, entries[-1]["seq"] if entries else 0)
    if wants_json(request):
        return JsonResponse(
            {"room": room.slug, "last_seq": last_seq, "entries": entries, "has_more": page.has_more}
        )
    response = HttpResponse(entries_html(entries))
    response["X-Last-Seq"] = str(last_seq)
    response["X-Has-More"] = "true" if page.has_more else "false"
    response["Vary"] = "Accept"
    return response


def _entry_post(request: HttpRequest, room: Room) -> HttpResponse:
    client_id = request.POST.get("client_id") or None
    try:
        submission = services.entry_submit_sync(
            room_id=room.id,
            author=request.user,
            expression=request.POST.get("expression", ""),
            client_id=client_id,
        )
    except services.Refused as refused:
        metrics.refusal(refused.code, "http")
        status = {"rate_limited": 429, "forbidden": 403}.get(refused.code, 400)
        if wants_json(request):
            body = {"error": {"code": refused.code, "message": refused.message}}
            body["error"]["client_id"] = client_id
            return JsonResponse(body, status=status)
        return HttpResponse(refused.message, status=status, content_type="text/plain")
    payload = entry_as_dict(submission.entry)
    status = 201 if submission.created else 200
    if wants_json(request):
        return JsonResponse({"room": room.slug, "entry": payload}, status=status)
    return HttpResponse(entry_html(payload), status=status)


@require_GET
@signed_in
@_data_view
def room_presence(request: HttpRequest, slug: str) -> JsonResponse:
    room, _access = _room(request, slug)
    online = state_payload(presence_state_sync(room_id=room.id))
    return JsonResponse({"room": room.slug, "online": online, "count": len(online)})


# --- History and export ---------------------------------------------------------------------------


@require_GET
@signed_in
def room_history(request: HttpRequest, slug: str) -> HttpResponse:
    """A page of HISTORY_PAGE_SIZE entries: the newest, those `before` a seq, those `after` one,
    or those from a `date` (YYYY-MM-DD, UTC) on; filtered by `author` and by `q` (expression
    text, ignoring case)."""
    room, _access = _room(request, slug)
    author = request.GET.get("author") or None
    q = request.GET.get("q", "").strip()[: settings.EXPRESSION_MAX_LENGTH] or None
    day = request.GET.get("date", "").strip() or None
    try:
        before = _int_param(request, "before")
        after = _int_param(request, "after")
    except ValueError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    if day is not None:
        try:
            start = datetime.combine(date.fromisoformat(day), time.min, tzinfo=UTC)
        except ValueError:
            return HttpResponse("date must be YYYY-MM-DD", status=400, content_type="text/plain")
    if day is not None:
        first = selectors.first_seq_since(room=room, when=start)
        after = (first - 1) if first is not None else room.last_seq
    size = HISTORY_PAGE_SIZE
    if after is not None:
        page = selectors.entries_after(room=room, after=after, limit=size, author=author, q=q)
        has_older = after > 0
        has_newer = page.has_more
    else:
        page = selectors.entries_before(room=room, before=before, limit=size, author=author, q=q)
        has_older = page.has_more
        has_newer = before is not None
    entries = page.entries
    filters = {key: value for key, value in (("author", author), ("q", q)) if value}
    return render(
        request,
        "rooms/room_history.html",
        {
            "room": room,
            "entries": entries,
            "older_link": (
                "?" + urlencode({**filters, "before": entries[0]["seq"] if entries else after + 1})
                if has_older and (entries or after)
                else None
            ),
            "newer_link": (
                "?" + urlencode({**filters, "after": entries[-1]["seq"]})
                if has_newer and entries
                else None
            ),
            "newest_link": "?" + urlencode(filters)
            if before is not None or after is not None
            else None,
            "author": author,
            "q": q or "",
            "date": day or "",
            "authors": selectors.room_authors(room=room),
        },
    )


HISTORY_PAGE_SIZE = 100


EXPORT_FIELDS = ["seq", "author", "expression", "result", "error", "client_id", "created"]
EXPORT_BATCH = 1000


# What a spreadsheet takes for the start of a formula (OWASP's CSV injection list): such a cell
# gets a leading ' so it is shown as text, never run.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


async def _export_rows(room: Room, author: str | None) -> AsyncIterator[EntryDict]:
    """Every entry in seq order, a keyset batch at a time: memory stays flat however long."""
    after = 0
    while True:
        page = await sync_to_async(_export_batch)(room, after, author)
        for row in page[0]:
            yield row
        if not page[1]:
            return
        after = page[0][-1]["seq"]


def _export_batch(room: Room, after: int, author: str | None) -> tuple[list[EntryDict], bool]:
    page = selectors.entries_after(room=room, after=after, limit=EXPORT_BATCH, author=author)
    return page.entries, page.has_more


@require_GET
@signed_in
def room_export(request: HttpRequest, slug: str, fmt: str) -> StreamingHttpResponse:
    room, _access = _room(request, slug)
    author = request.GET.get("author") or None
    rows = _export_rows(room, author)
    if fmt == "csv":
        writer = csv.writer(_Echo())

        async def csv_lines() -> AsyncIterator[str]:
            yield writer.writerow([_csv_cell(f) for f in EXPORT_FIELDS])
            async for row in rows:
                yield writer.writerow([_csv_cell(row[f]) for f in EXPORT_FIELDS])

        response = StreamingHttpResponse(csv_lines(), content_type="text/csv; charset=utf-8")
    else:

        async def json_chunks() -> AsyncIterator[str]:
            yield '{"room": ' + json.dumps(room.slug) + ', "entries": ['
            first = True
            async for row in rows:
                yield ("" if first else ",") + json.dumps(row)
                first = False
            yield "]}"

        response = StreamingHttpResponse(json_chunks(), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{room.slug}-history.{fmt}"'
    return response
