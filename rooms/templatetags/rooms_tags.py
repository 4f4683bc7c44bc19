"""Template filters for room pages."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from realtime.events import EntryDict
from rooms import payloads

register = template.Library()


@register.filter
def entry_html(entry: EntryDict) -> SafeString:
    """An entry's markup, the same as live and catch-up fragments (escaped inside)."""
    return mark_safe(payloads.entry_html(entry))


@register.filter
def entry_for(entry: EntryDict, viewer: str) -> SafeString:
    """An entry's markup as `viewer` sees it: their own entries carry `data-mine`."""
    return mark_safe(payloads.entry_html(entry, mine=entry["author"] == viewer))
