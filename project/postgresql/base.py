"""Django's PostgreSQL backend, with the pool check the settings choose.

Django gives psycopg's pool either its own check (an empty query before every hand-out, with
`CONN_HEALTH_CHECKS`) or none, and takes no other. This backend builds the pool as Django does,
with `OPTIONS["pool"]["check"]` when the settings name one (project/dbpool.py); without it, it is
Django's backend unchanged.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> Any:
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not isinstance(options, dict) or "check" not in options:
            return super().pool
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            from psycopg_pool import ConnectionPool

            params = self.get_connection_params()
            params["autocommit"] = True  # as Django's: it sets the mode it wants later on
            pool = ConnectionPool(
                kwargs=params, open=False, configure=self._configure_connection, **options
            )
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]
