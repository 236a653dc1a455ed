"""The SQLite backend: the store contract on a real file, and what only SQLite has (the file's permissions and
lock, the group commit and its writer, durability)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.config import StorageConfig
from relay.errors import StoreError, StoreUnavailable
from relay.models import Durability
from relay.store import NewEvent, Store, open_store
from relay.store import sqlite_writer as writer_module
from relay.store.sqlite import SqliteStore
from tests.integration.store_contract import T0, StoreContract, event
from tests.support.sqlite_raw import in_writer, sqlite_store, writer_alive


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], Store]:
        config = StorageConfig(path=tmp_path / "state" / "relay.db")
        return lambda: open_store(config)

    async def test_the_file_and_its_folder_are_private(self, store: Store) -> None:
        path = sqlite_store(store).path
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700

    async def test_one_relay_owns_the_file(self, store: Store) -> None:
        path = sqlite_store(store).path
        second = SqliteStore(path)
        with pytest.raises(StoreError, match=f"{path}.*pid {os.getpid()}"):
            await second.open()
        await second.close()
        await store.ingest([event("e1", "a")], T0)  # the owner is untouched
        await store.close()
        again = SqliteStore(path)
        await again.open()
        try:
            assert await again.get_event("e1") is not None
        finally:
            await again.close()

    async def test_a_full_disk_is_unavailable_and_nothing_is_acknowledged(self, store: Store) -> None:
        def shrink(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA max_page_count = 1")

        await in_writer(store, shrink)
        big = NewEvent("big", "t", "2024-01-15T10:35:00Z", b'"' + b"x" * 200_000 + b'"', ("a",))
        with pytest.raises(StoreUnavailable):
            await store.ingest([big], T0)
        assert await store.get_event("big") is None
        assert writer_alive(store)

    async def test_a_failing_job_rolls_its_group_back_and_the_writer_goes_on(self, store: Store) -> None:
        def broken(conn: sqlite3.Connection) -> None:
            raise ValueError("a bug in a write job")

        # A bounded job shares the group of the ingest queued before it (statements on the loop).
        ingest = asyncio.ensure_future(store.ingest([event("e1", "a")], T0))
        with pytest.raises(ValueError, match="a bug"):
            await in_writer(store, broken, bounded=True)
        with pytest.raises(ValueError):  # it shared the group, so it was rolled back with it
            await ingest
        assert writer_alive(store)
        assert await store.get_event("e1") is None
        assert [r.created for r in await store.ingest([event("e1", "a")], T0)] == [True]

        # An open-ended job shares the group of the open-ended job before it (all on the writer thread).
        def mark(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE events SET type = 'marked' WHERE id = 'e1'")

        marking = asyncio.ensure_future(in_writer(store, mark))
        with pytest.raises(ValueError, match="a bug"):
            await in_writer(store, broken)
        with pytest.raises(ValueError):
            await marking
        assert writer_alive(store)
        found = await store.get_event("e1")
        assert found is not None and found[0].type == "t"

    async def test_groups_are_of_one_kind_in_queue_order_and_stop_growing_at_group_rows(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def count(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

        commits = store.commits
        first = asyncio.ensure_future(store.ingest([event("e1", "a")], T0))
        counted = asyncio.ensure_future(in_writer(store, count))  # open-ended: its own group, on the thread
        second = asyncio.ensure_future(store.ingest([event("e2", "a")], T0))
        assert await counted == 1  # after the first ingest, before the second
        await asyncio.gather(first, second)
        assert store.commits == commits + 3

        monkeypatch.setattr(writer_module, "GROUP_ROWS", 4)  # an ingest of one event and one webhook is 2 rows
        commits = store.commits
        await asyncio.gather(*(store.ingest([event(f"g{n}", "a")], T0) for n in range(5)))
        assert store.commits == commits + 3  # 2 + 2 + 1 jobs

    async def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "new.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (999)")
        with pytest.raises(StoreError, match="newer"):
            await SqliteStore(path).open()


@pytest.mark.parametrize(("durability", "synchronous"), [(Durability.FULL, 2), (Durability.NORMAL, 1)])
async def test_durability_sets_sqlite_synchronous(tmp_path: Path, durability: Durability, synchronous: int) -> None:
    store = open_store(StorageConfig(path=tmp_path / "relay.db", durability=durability))
    await store.open()
    try:

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await in_writer(store, read) == synchronous  # FULL = 2: fsync at every commit; NORMAL = 1
    finally:
        await store.close()
