"""Load fixtures/demo.json into an empty database, and print the demo logins.

The demo accounts have a published password, so they are loaded only when asked: with DEBUG on
(what `make run` does by default) or with `--force`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.models import User

DEMO_USERS = ["alice", "bob", "carol"]
DEMO_PASSWORD = "calcrooms-demo"


class Command(BaseCommand):
    help = "Load the demo users and rooms when the database has no users yet."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="load the demo accounts even with DEBUG off (their password is public)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not (settings.DEBUG or options["force"]):
            self.stdout.write(
                "DEBUG is off: demo data not loaded (its password is public; use --force)."
            )
            return
        if User.objects.exists():
            self.stdout.write("Database already has users: demo data not loaded.")
        else:
            call_command("loaddata", settings.BASE_DIR / "fixtures" / "demo.json", verbosity=0)
            self.stdout.write(self.style.SUCCESS("Loaded demo users and rooms (lobby, vault)."))
        if User.objects.filter(username__in=DEMO_USERS).exists():
            logins = ", ".join(DEMO_USERS)
            self.stdout.write(f"Demo logins: {logins} (password: {DEMO_PASSWORD})")
