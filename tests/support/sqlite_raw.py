"""Raw SQL inside the SQLite backend's group transaction, for tests that must reach under the storage seam (fill
the disk, hold the write lock, break a job). Tests only: the store itself offers no connection to anyone."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from relay.store.sqlite import SqliteStore
from relay.store.sqlite_checkpointer import Checkpointer
from relay.store.sqlite_syncer import WalSyncer

T = TypeVar("T")


def sqlite_store(store: Any) -> SqliteStore:
    assert isinstance(store, SqliteStore), "this test needs the SQLite backend"
    return store


async def in_writer(store: Any, fn: Callable[[sqlite3.Connection], T], *, bounded: bool = False) -> T:
    """Run ``fn`` inside the store's next group transaction (on the event loop when ``bounded``)."""
    return await sqlite_store(store)._writer.run(fn, bounded=bounded)


def set_busy_timeout(store: Any, seconds: float) -> None:
    """How long a thread-side group waits for a write lock another connection holds."""
    sqlite_store(store)._writer.busy_timeout = seconds


def writer_alive(store: Any) -> bool:
    task = sqlite_store(store)._writer._task
    return task is not None and not task.done()


def wal_syncer(store: Any) -> WalSyncer | None:
    """The thread that fsyncs the store's WAL and answers the groups it covers (``durability = "full"``)."""
    return sqlite_store(store)._writer._syncer


def checkpointer(store: Any) -> Checkpointer | None:
    """What moves the WAL's frames into the database file, on a connection of its own (WAL mode)."""
    return sqlite_store(store)._writer._checkpointer
