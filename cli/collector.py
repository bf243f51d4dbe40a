"""Python's cyclic garbage collector around a command line: paused while a listing runs, and no last walk at exit.

A listing's start-up is mostly imports (pydantic, SQLAlchemy, SQLModel, the tables): about 90,000 objects that live
until the process ends, which the collector walks again and again as they pile up, and once more as the interpreter
exits. Two measures, both from https://docs.python.org/3/library/gc.html:

- :data:`QUICK` commands (they read one page and end) run with the collector paused (``gc.disable``): memory is
  bounded by the page, and reference counting still frees everything that is not in a cycle.
- However the command line ends (a command, ``--help``, a usage error), :func:`freeze_for_exit` moves every object
  left to the permanent generation, which no collection walks, the interpreter's last one at exit included.
  ``atexit`` handlers, flushing and module teardown still run as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

QUICK = frozenset({"projects", "servers", "threads"})
"""Read-only listings of one page (``threads`` at most 500 rows): the collector stays paused while they run."""


def pause_for(command: str | None) -> Callable[[], None]:
    """Pause the collector if ``command`` is :data:`QUICK`; return the function that turns it back on after it."""
    paused = command in QUICK and gc.isenabled()
    if paused:
        gc.disable()

    def resume() -> None:
        if paused:
            gc.enable()

    return resume


def freeze_for_exit() -> None:
    """The command line is over: no collection walks what is left (``gc.freeze``); the collector stays as it is."""
    gc.freeze()
