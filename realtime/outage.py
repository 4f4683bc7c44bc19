"""One log line when a backend goes away, one when it is back: not one per socket or frame.

A Redis outage touches every socket of every room at once; logging each failure would bury the
one line an operator needs under thousands. An `Outage` remembers that its part is down: the first
failure is a warning naming the error, later ones only count, and the first success after them
is one line saying how long it lasted and how many operations failed meanwhile.

The process has one `Outage` per backend: `REDIS` and `DATABASE`. Everything that touches one
reports to it (`failed(exc)` picks the backend from the error), so an outage is one line whether
the live subscription, a room's tick, a frame or a publish noticed it first.
"""

from __future__ import annotations

import logging
import threading
import time

from realtime import metrics

logger = logging.getLogger("realtime.outage")


class Outage:
    def __init__(self, what: str) -> None:
        self.what = what
        self.down_since: float | None = None
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, *, detail: str = "") -> bool:
        """Record a failure; True (and one warning) when it starts an outage."""
        _count(exc)
        with self._lock:
            self.failures += 1
            if self.down_since is not None:
                return False
            self.down_since = time.monotonic()
        extra = f" ({detail})" if detail else ""
        logger.warning(
            "%s failed: %s: %s%s; retrying, further failures are counted until it recovers",
            self.what,
            type(exc).__name__,
            exc,
            extra,
            extra={"event": "backend.down", "backend": self.what},
        )
        return True

    def recovered(self) -> bool:
        """Record a success; True (and one line) when it ends an outage."""
        if self.down_since is None:  # the common case, without the lock
            return False
        with self._lock:
            if self.down_since is None:
                return False
            lasted = time.monotonic() - self.down_since
            failures, self.down_since, self.failures = self.failures, None, 0
        logger.warning(
            "%s recovered after %.1f s (%d failed operations meanwhile)",
            self.what,
            lasted,
            failures,
            extra={"event": "backend.up", "backend": self.what},
        )
        return True


def _count(exc: BaseException) -> None:
    """Count the failure by the part that failed (the module of its exception's class)."""
    module = type(exc).__module__
    if module.startswith("redis"):
        metrics.redis_error()
    elif module.startswith(("django.db", "psycopg")):
        metrics.database_error()


REDIS = Outage("Redis")
DATABASE = Outage("the database")


def backend_of(exc: BaseException) -> Outage | None:
    """The backend an error comes from (None: not a backend's error, a bug)."""
    module = type(exc).__module__
    if module.startswith("redis"):
        return REDIS
    if module.startswith(("django.db", "psycopg")):
        return DATABASE
    if isinstance(exc, OSError | TimeoutError):  # a socket to one of them: Redis is the usual one
        return REDIS
    return None


def failed(exc: BaseException) -> bool:
    """Report a backend's failure to its outage; False when `exc` is no backend's error."""
    outage = backend_of(exc)
    if outage is None:
        return False
    outage.failed(exc)
    return True
