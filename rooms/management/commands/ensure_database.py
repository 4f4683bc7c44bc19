"""Create the PostgreSQL database named by DATABASE_URL when it does not exist yet."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection
from django.db.utils import OperationalError


class Command(BaseCommand):
    help = "Create the configured PostgreSQL database if it is missing (SQLite needs nothing)."

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            return
        try:
            connection.ensure_connection()
            return
        except OperationalError as exc:
            if "does not exist" not in str(exc):
                raise
        name = connection.settings_dict["NAME"]
        # Connect to the server's maintenance database to create ours.
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        self.stdout.write(self.style.SUCCESS(f"Created database {name}."))
