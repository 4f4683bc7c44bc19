"""Plumbing that rooms, presence and accounts share, and that imports none of them.

* `realtime.redis`: Redis connection pools (bounded, waiting instead of failing, trimmed when idle)
  and one asyncio client per event loop.
* `realtime.layer`: the channels-redis layer on those pools.
* `realtime.events`: group names, the typed events, and the one place that sends them.
* `realtime.connection`: a WebSocket connection that owns what it starts and ends it however it
  ends.
* `realtime.tick`: one periodic task per room per process over that room's local connections.
* `realtime.metrics`: the Prometheus metrics and one cheap recording helper for each.
"""
