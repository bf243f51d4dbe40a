"""core.heap: the cyclic collector paused around imports, what exists frozen after, and turned back on."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from core.heap import collector_paused


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen and the collector on (as the rest of the suite expects)."""
    gc.unfreeze()
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable()


def test_the_block_runs_without_collections_and_what_it_made_is_frozen_after() -> None:
    with collector_paused():
        assert not gc.isenabled()
        made = [[i] for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)


def test_a_block_that_raises_still_freezes_and_turns_the_collector_back_on() -> None:
    with pytest.raises(ImportError), collector_paused():
        raise ImportError("no such module")
    assert gc.isenabled() and gc.get_freeze_count() > 0


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collector_paused(), collector_paused():
        pass
    assert not gc.isenabled()
