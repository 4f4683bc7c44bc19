"""One backend of a kind per process, on Redis when the settings name one, else in memory.

The hub, the presence store, the throttle and the socket quota are each made on first use from
the settings of that moment, and forgotten by `reset()` (tests; after changing settings).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from realtime.redis import redis_pool_options

T = TypeVar("T")


class ProcessWide(Generic[T]):
    """`get()` the process's one backend: `on_redis(url, prefix=..., **pool options)` when
    ``settings.REDIS_URL`` is set (its pool named ``<prefix>:<pool>``), else `in_memory()`."""

    def __init__(
        self, pool: str, *, on_redis: Callable[..., T], in_memory: Callable[[], T]
    ) -> None:
        self._pool = pool
        self._on_redis = on_redis
        self._in_memory = in_memory
        self._lock = threading.Lock()
        self._backend: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._backend is None:
                self._backend = self._make()
            return self._backend

    def reset(self) -> None:
        with self._lock:
            self._backend = None

    def _make(self) -> T:
        from django.conf import settings

        url: Any = getattr(settings, "REDIS_URL", None)
        if not url:
            return self._in_memory()
        prefix = getattr(settings, "REDIS_KEY_PREFIX", "") or "calcrooms"
        options = redis_pool_options(settings, name=f"{prefix}:{self._pool}")
        return self._on_redis(url, prefix=prefix, **options)
