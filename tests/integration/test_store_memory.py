"""The in-memory fake (``tests/support/memory_store.py``) held to the store contract, so that the scheduler's unit
tests run on a store that behaves as SQLite does."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay.errors import StoreUnavailable
from relay.store import Store
from tests.integration.store_contract import T0, StoreContract, event
from tests.support.memory_store import MemoryData, MemoryStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        data = MemoryData()
        return lambda: MemoryStore(data)

    async def test_an_unavailable_store_refuses_writes_until_it_recovers(self, store: Store) -> None:
        assert isinstance(store, MemoryStore)
        store.unavailable = "disk full"
        with pytest.raises(StoreUnavailable, match="disk full"):
            await store.check_writable()
        with pytest.raises(StoreUnavailable, match="disk full"):
            await store.ingest([event("e1", "a")], T0)
        store.unavailable = None
        await store.check_writable()
        assert [r.created for r in await store.ingest([event("e1", "a")], T0)] == [True]
