"""The channels-redis core layer, on `realtime.redis.BoundedPool` pools.

channels-redis builds a plain redis-py pool, which raises past ``max_connections`` and never closes
what it opened: closing thousands of sockets at once then failed half their group discards, and
left the process holding a connection (a file descriptor) per socket afterwards. This layer waits
for a connection instead and trims idle ones, and changes nothing else.

Host options besides ``address``: ``max_connections``, ``max_idle`` and ``pool_timeout`` (seconds
to wait for a free connection), plus any redis-py connection option (keep ``socket_timeout: None``:
the layer's blocking receive waits on its connection for as long as it is idle). With the options
of `realtime.redis.sentinel_options` (``sentinels``, ``service_name``...) the pool goes through
those Sentinels to their master, and ``address`` is only a description.
"""

from __future__ import annotations

from typing import Any

from channels_redis.core import RedisChannelLayer

from realtime.redis import bounded_pool


class BoundedRedisChannelLayer(RedisChannelLayer):
    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        address = host.pop("address")
        if "pool_timeout" in host:
            host["timeout"] = host.pop("pool_timeout")
        return bounded_pool(address, **host)

    def open_connections(self) -> int:
        """Redis connections this layer holds open now, over every event loop (for tests); with
        Sentinels, its connections to them too."""
        total = 0
        for loop_layer in self._layers.values():
            for client in loop_layer._connections.values():
                total += client.connection_pool.open_connections()
        return total
