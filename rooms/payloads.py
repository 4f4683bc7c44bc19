"""What goes on the wire: the JSON entry shape, the HTML fragments, and the frame envelopes.

Both transports (HTTP and WebSocket) build their bodies here, so an entry looks the same whether
it arrived live, through catch-up, or in an export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from django.template.loader import render_to_string
from django.utils.html import escape

from realtime.events import EntryDict, EntryFrames
from rooms.models import Entry

JSON_SUBPROTOCOL = "calcrooms.v1.json"
PROTOCOL_VERSION = 1


def entry_as_dict(entry: Entry) -> EntryDict:
    return entry_row_as_dict(
        (
            entry.seq,
            entry.client_id,
            entry.expression,
            entry.result,
            entry.error,
            entry.created,
            entry.refs,
            entry.defines,
            entry.rounded,
            entry.author.username,
        )
    )


def entry_row_as_dict(row: tuple[Any, ...]) -> EntryDict:
    """An entry's wire shape from its columns in `selectors.ENTRY_FIELDS` order (a page of
    entries is read as rows: no model instance is made for each one)."""
    seq, client_id, expression, result, error, created, refs, defines, rounded, author = row
    return {
        "seq": seq,
        "author": author,
        "expression": expression,
        "result": result,
        "error": error,
        "client_id": str(client_id) if client_id else None,
        "created": (
            created  # already as the wire writes it (a page read in plain SQL)
            if isinstance(created, str)
            else created.astimezone(UTC).isoformat().replace("+00:00", "Z")
        ),
        "refs": [int(ref) for ref in refs or ()],
        "defines": defines,
        "rounded": bool(rounded),
    }


_REFERENCE = re.compile(r"#([0-9]+)")


def _expression_html(expression: str, seq: int) -> str:
    """The expression, escaped, each `#N` that names an earlier entry a link to it."""
    if "#" not in expression:
        return escape(expression)
    parts = []
    done = 0
    for match in _REFERENCE.finditer(expression):
        named = int(match.group(1))
        if not 1 <= named < seq:  # seqs have no gaps: every earlier one exists
            continue
        parts.append(escape(expression[done : match.start()]))
        parts.append(
            f'<a class="ref" href="#entry-{named}" data-ref="{named}">{escape(match.group())}</a>'
        )
        done = match.end()
    parts.append(escape(expression[done:]))
    return "".join(parts)


def entry_html(entry: EntryDict, *, mine: bool = False) -> str:
    """The entry as the page shows it (`#entry-<seq>` with `data-seq`).

    Built here rather than in a template: this is the one markup of an entry (pages use it through
    the `entry_html` filter), and a catch-up page renders hundreds of them (500 entries: 32 ms
    through the template engine, a few ms this way).

    A result is a control (`button.use`, which static/js/results.js turns into inserting `#<seq>`
    at the input's cursor) holding the `output.result`, whose text is exactly the stored result;
    `button.copy` copies that text. A rounded result is preceded by `≈` instead of `=`. A `#N` in
    the expression links to entry N. `mine` (the viewer wrote it) adds `data-mine`; fragments
    broadcast to everyone go without it, and the page's script adds it to the viewer's own.
    """
    seq = int(entry["seq"])
    failed = entry["error"] is not None
    rounded = bool(entry.get("rounded"))
    attributes = f' data-client-id="{escape(entry["client_id"])}"' if entry["client_id"] else ""
    if rounded:
        attributes += ' data-rounded="true"'
    if mine:
        attributes += " data-mine"
    if entry.get("defines"):
        attributes += f' data-defines="{escape(entry["defines"])}"'
    if failed:
        outcome = f'<span class="error-text">{escape(entry["error"])}</span>'
    else:
        result = escape(entry["result"])
        equals = (
            '<span class="equals approx" title="Rounded to 28 significant digits">≈</span>'
            if rounded
            else '<span class="equals">=</span>'
        )
        outcome = (
            f'{equals} <button type="button" class="use" title="Insert #{seq} at the cursor">'
            f'<output class="result">{result}</output></button> '
            f'<button type="button" class="copy" aria-label="Copy the result of #{seq}">'
            "Copy</button>"
        )
    created = escape(entry["created"])
    return (
        f'<article class="entry{" failed" if failed else ""}" id="entry-{seq}" '
        f'data-seq="{seq}" data-author="{escape(entry["author"])}"{attributes}>\n'
        f'  <span class="seq">#{seq}</span>\n'
        f'  <span class="author">{escape(entry["author"])}</span>\n'
        f'  <code class="expression">{_expression_html(entry["expression"], seq)}</code>\n'
        f"  {outcome}\n"
        f'  <time datetime="{created}">{created[11:19]}</time>\n'
        "</article>\n"
    )


def entries_html(entries: Iterable[EntryDict]) -> str:
    return "".join(entry_html(entry) for entry in entries)


# --- WebSocket frames -----------------------------------------------------------------------------


def json_frame(type_: str, **fields: Any) -> str:
    return json.dumps({"v": PROTOCOL_VERSION, "type": type_, **fields}, separators=(",", ":"))


def html_entry_frame(html: str) -> str:
    return f'<div id="entries" hx-swap-oob="beforeend">{html}</div>'


def entry_frames(entry: EntryDict) -> EntryFrames:
    """The entry's frame in both wire modes, built once for a whole broadcast."""
    return {"json": json_frame("entry", entry=entry), "html": html_entry_frame(entry_html(entry))}


def html_sync_frame(last_seq: int) -> str:
    return f'<div id="sync" hx-swap-oob="true" data-last-seq="{last_seq}"></div>'


def html_error_frame(code: str, message: str, client_id: str | None) -> str:
    client = f' data-client-id="{escape(client_id)}"' if client_id else ""
    return (
        f'<div id="errors" hx-swap-oob="innerHTML"><p class="error" data-code="{escape(code)}"'
        f"{client}>{escape(message)}</p></div>"
    )


def typing_text(usernames: list[str]) -> str:
    """`alice is typing…`, `alice and bob are typing…`, `several people are typing…`, or ''."""
    if not usernames:
        return ""
    if len(usernames) == 1:
        return f"{usernames[0]} is typing…"
    if len(usernames) == 2:
        return f"{usernames[0]} and {usernames[1]} are typing…"
    return "several people are typing…"


def presence_html(online: list[dict[str, Any]], viewer: str) -> str:
    """The `#online` list and the `#typing` line, as seen by `viewer` (never their own typing)."""
    return render_to_string(
        "rooms/partials/presence.html",
        {
            "online": online,
            "count": len(online),
            "typing_text": typing_text(
                [o["username"] for o in online if o["typing"] and o["username"] != viewer]
            ),
            "oob": True,
        },
    )
