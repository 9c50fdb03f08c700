"""`freeze_startup_heap`: what start-up left alive leaves the collector's walks, its garbage is collected
first, and what comes later is collected as before."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from trimtab.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> _Node:
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    return first


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test run collects as usual


@pytest.mark.usefixtures("unfrozen")
def test_freezing_exempts_the_living_and_collects_the_dead_first() -> None:
    living = _cycle()
    dead = weakref.ref(_cycle())  # start-up garbage: a cycle only the collector can free
    freeze_startup_heap()
    assert dead() is None
    assert gc.get_freeze_count() > 0
    assert not any(obj is living for obj in gc.get_objects())  # no collection walks it any more


@pytest.mark.usefixtures("unfrozen")
def test_garbage_made_after_freezing_is_still_collected() -> None:
    freeze_startup_heap()
    later = weakref.ref(_cycle())
    gc.collect()
    assert later() is None
