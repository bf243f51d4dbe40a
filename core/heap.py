"""Python's cyclic garbage collector kept out of the way while a process imports its stack.

Imports make long-lived objects by the hundred thousand (modules, classes, pydantic schemas, a compiled graph). The
collector's full collections walk every one of them again, each in one call that holds the GIL: 50-90 ms apiece on
this stack, a stall for every other thread (an API's event loop) and some 0.3 s of a CLI run. ``gc.freeze``
(https://docs.python.org/3/library/gc.html#gc.freeze) moves what exists to the permanent generation, which no later
collection walks.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block, then freeze what exists (``gc.freeze``) and turn it back on.

    Reference counting still frees everything that is not in a cycle; the few cycles made meanwhile wait for the
    next collection. Frozen objects are never collected: right for modules, classes and a compiled graph; a request
    in flight at that moment keeps its few cycles for good. A collector that was off before stays off, and a block
    that raises still freezes and turns it back on.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
