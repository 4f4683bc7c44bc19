"""The garbage collector of a server process, set once the application is loaded.

CPython's cyclic collector walks every object of a generation it collects, and an open socket
holds a few hundred tracked objects (its protocol, its consumer, their tasks, futures and timer
handles). At 10,000 idle sockets the full collections that the process's own small allocations
kept triggering were most of its CPU (bench/live.py's idle phase, profiled: `gc_collect_main`
57 % of the process's time). Two settings change that, neither of which frees anything later:

- `GC_FREEZE`: what the process loaded before serving (Django, the app and what they import,
  objects that live as long as the process) is moved out of the collector's sight with
  `gc.freeze()`, so no collection walks it again.
- `GC_THRESHOLDS`: the youngest generation is collected after this many allocations instead of
  700, and the middle one after so many of those. Fewer young collections catch fewer objects
  that are only briefly alive (a frame on its way out, a heartbeat's list), so fewer of them are
  moved to the oldest generation, whose growth is what sets off a full collection.

Reference counting still frees almost everything at once; only garbage in reference cycles
waits for a collection, and it still comes, just later.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("calcrooms")


def tune(thresholds: tuple[int, int, int] | None, *, freeze: bool) -> None:
    """Set the collector's thresholds (None keeps CPython's) and freeze what is loaded now."""
    if thresholds is not None:
        gc.set_threshold(*thresholds)
    if freeze:
        gc.collect()  # what is garbage now is not frozen with the rest
        gc.freeze()
    logger.debug(
        "garbage collector: thresholds %s, %d objects frozen",
        gc.get_threshold(),
        gc.get_freeze_count(),
    )
