"""A store file removed or replaced under the running relay: found at the next commit, never acknowledged into.

SQLite keeps writing into a file that was unlinked (or into the old inode when another file took its path), and
those commits look fine; after a restart they are gone. The store compares the path with the file it opened after
each group COMMIT: from the first miss on, every write fails ``StoreUnavailable`` and the API answers 503.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from relay.errors import StoreUnavailable
from relay.models import EVERYTHING
from relay.store import NewEvent
from relay.store.sqlite import SqliteStore as Store
from tests.support.relay_harness import running_relay
from tests.support.sqlite_raw import in_writer

T0 = 1_700_000_000.0
SUFFIXES = ("", "-wal", "-shm")


def event(event_id: str) -> NewEvent:
    return NewEvent(event_id, "t", "2024-01-15T10:35:00Z", b'{"n":1}', ("hook",))


def remove(db: Path, suffixes: tuple[str, ...] = SUFFIXES) -> None:
    """What ``rm var/relay.db var/relay.db-wal var/relay.db-shm`` does."""
    for suffix in suffixes:
        Path(f"{db}{suffix}").unlink()


def replace_with_fresh(db: Path) -> None:
    """The files removed and a new, valid store file created at the same path (another inode)."""
    remove(db)
    with contextlib.closing(sqlite3.connect(db)) as fresh:
        fresh.execute("CREATE TABLE other (x)")
        fresh.commit()


def copy_over(db: Path) -> None:
    """The database file swapped for a copy of itself (``cp relay.db x && mv x relay.db``): same bytes, new inode."""
    copy = db.with_name("copy.db")
    copy.write_bytes(db.read_bytes())
    os.replace(copy, db)


FAULTS: dict[str, Callable[[Path], None]] = {
    "all files removed": remove,
    "database file removed": lambda db: remove(db, ("",)),
    "WAL file removed": lambda db: remove(db, ("-wal",)),
    "replaced by a fresh store": replace_with_fresh,
    "replaced by a copy": copy_over,
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "relay.db")
    await store.open()
    yield store
    await store.close()


def lost_logs(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == "store_lost"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_removed_or_replaced_file_fails_every_later_write(store: Store, fault: str) -> None:
    [first] = await store.ingest([event("before")], T0)
    assert first.created
    FAULTS[fault](store.path)
    with capture_logs() as logs:
        with pytest.raises(StoreUnavailable, match=re.escape(f"store file was removed or replaced: {store.path}")):
            await store.ingest([event("after")], T0)
        with pytest.raises(StoreUnavailable, match="store file was removed or replaced"):
            await store.ingest([event("later")], T0)  # lost for good, even if the path names a store again
        with pytest.raises(StoreUnavailable, match="store file was removed or replaced"):
            await store.check_writable()
    [lost] = lost_logs(logs)  # once, not once per write
    assert lost["log_level"] == "error" and "store file was removed or replaced" in str(lost["reason"])


async def test_check_writable_finds_the_loss_with_no_ingest(store: Store) -> None:
    remove(store.path)
    with capture_logs() as logs, pytest.raises(StoreUnavailable, match="store file was removed or replaced"):
        await store.check_writable()
    assert len(lost_logs(logs)) == 1


@pytest.mark.parametrize("bounded", [True, False], ids=["statements on the loop", "group on the writer thread"])
async def test_a_commit_in_flight_when_the_file_goes_is_not_answered(store: Store, bounded: bool) -> None:
    def insert_while_the_file_goes(conn: sqlite3.Connection) -> str:
        conn.execute("CREATE TABLE IF NOT EXISTS heartbeat (at REAL)")
        conn.execute("INSERT INTO heartbeat (at) VALUES (1)")
        remove(store.path)  # inside the transaction: its COMMIT goes into the unlinked file
        return "committed"

    with pytest.raises(StoreUnavailable, match="store file was removed or replaced"):
        await in_writer(store, insert_while_the_file_goes, bounded=bounded)


async def test_a_store_whose_files_stay_put_keeps_committing(store: Store) -> None:
    for n in range(3):
        await store.ingest([event(f"e{n}")], T0)
    await store.check_writable()
    assert await store.get_event("e2", scope=EVERYTHING) is not None


async def test_the_api_answers_503_and_readyz_says_why(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, _ = await relay.post({"type": "t", "data": {}, "id": "before"})
        assert status == 202
        remove(relay.db_path)
        with capture_logs() as logs:
            for event_id in ("after", "again"):
                status, answer = await relay.post({"type": "t", "data": {}, "id": event_id})
                assert status == 503
                assert answer["success"] is False and answer["error"]["code"] == "unavailable"
            async with relay.http.get(f"{relay.url}/readyz") as response:
                assert response.status == 503
                body = await response.json()
        assert body["status"] == "unavailable"
        assert f"store file was removed or replaced: {relay.db_path}" in body["reason"]
        [lost] = lost_logs(logs)
        assert lost["log_level"] == "error" and lost["path"] == str(relay.db_path)
        async with relay.http.get(f"{relay.url}/healthz") as response:
            assert response.status == 200  # the process runs; it is not ready
    assert not relay.db_path.exists()  # nothing was acknowledged into a file at the path either
