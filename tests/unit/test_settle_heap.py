"""``relay serve`` freezes its startup heap and collects the young generation less often once it is serving."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from relay.daemon import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the test process goes on collecting what it makes, as before
    gc.set_threshold(*thresholds)


def test_the_startup_heap_is_frozen_and_young_collections_are_rarer(collector: None) -> None:
    startup_object: list[list[str]] = [["made at startup"]]  # a container: the collector tracks it
    assert any(o is startup_object for o in gc.get_objects())
    _, middle, old = gc.get_threshold()
    settle_heap()
    assert not any(o is startup_object for o in gc.get_objects())  # frozen: no collection scans it again
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)  # only the young generation's is raised
