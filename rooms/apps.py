from __future__ import annotations

from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "rooms"
    verbose_name = "Rooms"

    def ready(self) -> None:
        from django.conf import settings

        from realtime import dbpool

        dbpool.install(lambda: settings.DATABASE_POOL_CHECK_SECONDS)
