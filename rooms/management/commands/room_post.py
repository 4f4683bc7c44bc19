"""`manage.py room_post <room> "<expression>" --as <username>`: post into a room from a script.

For cron jobs and task queues: the expression goes through the one way in a person's expression
takes (`services.entry_submit_sync`): the author's rate limit, the length and character rules, the
access rule under the room's lock, then stored with the next seq and broadcast to the room after
commit (live on every process when REDIS_URL is set). A refusal is printed as an error and exits
non-zero with nothing stored. An expression whose evaluation fails is stored, as a person's is,
with its error. `--client-id` makes retries idempotent: the same author and client id return the
entry stored the first time.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from realtime import metrics
from rooms import services
from rooms.models import Room
from rooms.payloads import entry_as_dict


class Command(BaseCommand):
    help = "Store an expression in a room as one of its members, and broadcast it live."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("room", help="the room's slug (its address: /rooms/<slug>/)")
        parser.add_argument("expression", help="the expression, as a person would type it")
        parser.add_argument(
            "--as", dest="username", required=True, help="the member it is posted as"
        )
        parser.add_argument(
            "--client-id",
            help="a UUID: running the command again with it stores nothing new (safe retries)",
        )
        parser.add_argument("--json", action="store_true", help="print the entry as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        room = Room.objects.filter(slug=options["room"]).first()
        if room is None:
            raise CommandError(f"No room {options['room']!r}.")
        author = User.objects.filter(username=options["username"]).first()
        if author is None:
            raise CommandError(f"No user {options['username']!r}.")
        if not author.is_active:
            raise CommandError(f"User {author.username!r} is deactivated.")
        client_id = options["client_id"]
        if client_id is not None:
            try:
                client_id = uuid.UUID(client_id)
            except ValueError:
                raise CommandError(f"--client-id must be a UUID, not {client_id!r}.") from None
        try:
            submission = services.entry_submit_sync(
                room_id=room.pk,
                author=author,
                expression=options["expression"],
                client_id=client_id,
                transport="command",
            )
        except services.Refused as refused:
            metrics.refusal(refused.code, "command")
            if refused.code == "forbidden":
                raise CommandError(
                    f"Refused (forbidden): {author.username} is not a member of {room.slug}."
                ) from None
            raise CommandError(f"Refused ({refused.code}): {refused.message}") from None
        entry = entry_as_dict(submission.entry)
        if options["json"]:
            self.stdout.write(json.dumps({"room": room.slug, "entry": entry}))
            return
        outcome = f"= {entry['result']}" if entry["error"] is None else f"error: {entry['error']}"
        again = "" if submission.created else " (stored before: same client id)"
        self.stdout.write(
            f"{room.slug} #{entry['seq']} {entry['author']}: {entry['expression']} {outcome}{again}"
        )
