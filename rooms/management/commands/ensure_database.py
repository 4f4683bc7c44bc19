"""Create the PostgreSQL database named by DATABASE_URL when it does not exist yet."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    help = "Create the configured PostgreSQL database if it is missing (SQLite needs nothing)."

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            return
        name = connection.settings_dict["NAME"]
        # Asked of the server's maintenance database: connecting to a missing database would only
        # say so after the connection pool's timeout.
        with connection._nodb_cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone():
                return
            cursor.execute(f'CREATE DATABASE "{name}"')
        self.stdout.write(self.style.SUCCESS(f"Created database {name}."))
