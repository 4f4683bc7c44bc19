"""B1's settings: the Channels tutorial chat on the product's channel layer, nothing else.

No database, no sessions, no auth, no middleware: the consumer in `bench/b1_asgi.py` and
channels-redis's core layer (`channels_redis.core.RedisChannelLayer`, as the product's
`realtime.layer` subclasses it) under a key prefix of its own. `bench/live.py` sets
`B1_REDIS_URL` and `B1_REDIS_PREFIX`.
"""

from __future__ import annotations

import os

SECRET_KEY = "calcrooms-bench-b1"  # nothing is signed: no sessions, no cookies
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "b1_asgi.application"
LOGGING_CONFIG = None

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # The same host options as the product's layer (project/settings.py): redis-py 8's
            # 5 s socket timeout would end the layer's idle blocking receives.
            "hosts": [
                {
                    "address": os.environ.get("B1_REDIS_URL", "redis://127.0.0.1:6379/0"),
                    "socket_timeout": None,
                }
            ],
            "prefix": os.environ.get("B1_REDIS_PREFIX", "calcrooms-bench-b1") + ":asgi",
            # The product's CHANNEL_LAYER_CAPACITY default.
            "capacity": int(os.environ.get("B1_CHANNEL_CAPACITY", "100")),
        },
    }
}
