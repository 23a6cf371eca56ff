"""The cyclic garbage collector of a long-running service, tuned once it started.

A service's heap after startup is mostly its imports (FastAPI's and pydantic's
models, the database drivers, chDB): hundreds of thousands of objects that live
as long as the process. Left in the collector's oldest generation, every full
collection walks them all, and under load full collections come every few
thousand requests: a tenth of the backend's CPU went there. Frozen
(:func:`gc.freeze`), they are never walked again; what requests allocate is
collected as before, the youngest generation less often.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

log = logging.getLogger(__name__)

#: Allocations (net of frees) between two collections of the youngest generation
#: (CPython's default: 700). A request or an event allocates a few hundred
#: objects, nearly all freed by reference counting; cycles wait a little longer.
YOUNG_THRESHOLD = 20_000


def settle_heap() -> None:
    """Collect what startup left over, freeze the rest, and make young collections
    rarer. Called once, when the service is ready to work."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    log.debug("heap settled: %d objects frozen", gc.get_freeze_count())
