"""The SQLite backend: the store contract on a real file, and what only SQLite has (the file's permissions and
lock, the group commit and its writer, durability)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.config import StorageConfig
from relay.errors import StoreError, StoreUnavailable
from relay.models import EVERYTHING, Durability
from relay.store import NewEvent, Store, open_store, sqlite_reads, sqlite_syncer
from relay.store import sqlite_writer as writer_module
from relay.store.sqlite import SqliteStore
from relay.store.sqlite_schema import MIGRATIONS
from tests.integration.store_contract import T0, StoreContract, event
from tests.support.sqlite_raw import checkpointer, in_writer, sqlite_store, wal_syncer, writer_alive


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
            assert await again.get_event("e1", scope=EVERYTHING) is not None
        finally:
            await again.close()

    async def test_a_full_disk_is_unavailable_and_nothing_is_acknowledged(self, store: Store) -> None:
        def shrink(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA max_page_count = 1")

        await in_writer(store, shrink)
        big = NewEvent("big", "t", "2024-01-15T10:35:00Z", b'"' + b"x" * 200_000 + b'"', ("a",))
        committed: list[object] = []
        with pytest.raises(StoreUnavailable):
            await store.submit_ingest([big], T0, None, committed.append)
        assert committed == [None]  # the commit hook hears of the failure too: the lanes get their room back
        assert await store.get_event("big", scope=EVERYTHING) is None
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
        assert await store.get_event("e1", scope=EVERYTHING) is None
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
        found = await store.get_event("e1", scope=EVERYTHING)
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


@pytest.mark.parametrize("durability", list(Durability))
async def test_durability_sets_sqlite_synchronous(tmp_path: Path, durability: Durability) -> None:
    """Both run the writer's COMMITs with ``synchronous = NORMAL`` (1: the WAL written, not fsynced); "full" adds
    the WAL syncer, which answers a group only once an fsync covers it."""
    store = open_store(StorageConfig(path=tmp_path / "relay.db", durability=durability))
    await store.open()
    try:

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await in_writer(store, read) == 1
        syncer = wal_syncer(store)
        assert (syncer is not None) is (durability is Durability.FULL)
        if syncer is not None:
            await store.ingest([event("e1", "a")], T0)
            assert syncer.fsyncs >= 2  # the read's group and the ingest's
    finally:
        await store.close()


async def test_an_ingest_is_answered_only_once_an_fsync_covers_it(tmp_path: Path) -> None:
    """The writer goes on to the next group as soon as a COMMIT returns; the ingest's future and its commit hook
    wait for the WAL fsync the helper process does after it (held here by stopping the process)."""
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    syncer = wal_syncer(store)
    assert syncer is not None and syncer.pid is not None
    os.kill(syncer.pid, signal.SIGSTOP)
    try:
        committed: list[object] = []
        ingest = store.submit_ingest([event("e1", "a")], T0, None, committed.append)
        seen: list[int] = []

        def count(conn: sqlite3.Connection) -> int:
            seen.append(int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]))
            return seen[-1]

        later = asyncio.ensure_future(in_writer(store, count, bounded=True))
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.005)
        assert seen == [1]  # a later group's statements ran, on top of the ingest's commit
        await asyncio.sleep(0.05)
        assert not ingest.done() and committed == []  # but the ingest is not answered: no fsync has returned
        assert not later.done()
        os.kill(syncer.pid, signal.SIGCONT)
        assert [r.created for r in await ingest] == [True]
        assert len(committed) == 1 and committed[0] is not None
        assert await later == 1  # the same or the next fsync covers the later group
    finally:
        os.kill(syncer.pid, signal.SIGCONT)
        await store.close()


async def test_a_failed_fsync_fails_the_groups_it_covered_and_every_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = sqlite_syncer.HELPER.replace("os.fsync(wal)", "raise OSError(5, 'Input/output error')")
    assert failing != sqlite_syncer.HELPER
    monkeypatch.setattr(sqlite_syncer, "HELPER", failing)
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    try:
        committed: list[object] = []
        with capture_logs() as logs, pytest.raises(StoreUnavailable, match="fsync of the store's WAL failed"):
            await store.submit_ingest([event("e1", "a")], T0, None, committed.append)
        assert committed == [None]  # the commit hook hears of the failure too
        errors = [entry for entry in logs if entry["log_level"] == "error"]
        assert [entry["event"] for entry in errors] == ["store_sync_failed"]
        assert "Input/output error" in errors[0]["error"]
        with pytest.raises(StoreUnavailable, match="fsync"):
            await store.ingest([event("e2", "a")], T0)
        with pytest.raises(StoreUnavailable, match="fsync"):
            await store.check_writable()
        syncer = wal_syncer(store)
        assert syncer is not None and syncer.pid is not None
        with capture_logs() as later:  # the helper exits after the failed fsync: its end is no second failure
            await asyncio.wait_for(asyncio.to_thread(os.waitpid, syncer.pid, 0), 10)
            await asyncio.sleep(0.05)  # its pipe's end, readable by now, has been seen
        assert [entry["event"] for entry in later if entry["log_level"] == "error"] == []
    finally:
        await store.close()


async def test_the_syncer_process_gone_makes_the_store_lost_and_it_ends_with_the_store(tmp_path: Path) -> None:
    """Nothing the helper did not answer counts as durable: killed, it fails what waits and every later write.
    And a store that closes ends its helper (as the relay's end does: the helper reads the end of its pipe)."""
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    try:
        syncer = wal_syncer(store)
        assert syncer is not None and syncer.pid is not None
        await store.ingest([event("e1", "a")], T0)
        os.kill(syncer.pid, signal.SIGKILL)
        with capture_logs() as logs, pytest.raises(StoreUnavailable, match="syncer process is gone"):
            for _ in range(100):  # the first answers may still come from before the kill
                await store.ingest([event(f"later{_}", "a")], T0)
        assert [entry["event"] for entry in logs if entry["log_level"] == "error"][:1] == ["store_sync_failed"]
        with pytest.raises(StoreUnavailable):
            await store.ingest([event("e3", "a")], T0)
    finally:
        await store.close()

    store = SqliteStore(tmp_path / "second.db")
    await store.open()
    try:
        syncer = wal_syncer(store)
        assert syncer is not None and syncer.pid is not None
        pid = syncer.pid
        await store.ingest([event("e0", "a")], T0)  # answered: the helper is past its start, signals set aside
        for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a stop by systemd reaches it too
            os.kill(pid, stop)
        await asyncio.sleep(0.1)
        assert [r.created for r in await store.ingest([event("e1", "a")], T0)] == [True]  # it lives on, until:
    finally:
        await store.close()
    with pytest.raises(ProcessLookupError):  # exited, and reaped
        os.kill(pid, 0)


def thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the name of each function the writer hands to its thread."""
    hops: list[str] = []
    on_thread = writer_module.GroupWriter.on_thread

    async def counted(self: writer_module.GroupWriter, fn: Callable[[], Any]) -> Any:
        hops.append(getattr(fn, "__name__", "?"))
        return await on_thread(self, fn)

    monkeypatch.setattr(writer_module.GroupWriter, "on_thread", counted)
    return hops


async def test_small_groups_commit_on_the_loop_and_large_ones_on_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    try:
        hops = thread_hops(monkeypatch)
        await store.ingest([event("e1", "a")], T0)
        assert hops == []  # statements and COMMIT on the loop: no hand-off to the thread
        big = [event(f"b{i}", "a") for i in range(writer_module.LOOP_COMMIT_ROWS + 1)]
        await store.ingest(big, T0)
        assert hops == ["<lambda>"]  # only the COMMIT went to the thread
    finally:
        await store.close()


async def test_the_writer_never_checkpoints_the_checkpointer_does_on_its_own_connection(tmp_path: Path) -> None:
    """A COMMIT on the loop must not run SQLite's automatic checkpoint (it syncs and copies for milliseconds):
    the writer's connection has it off, and the checkpointer moves the frames once the WAL passes its limit."""
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    try:
        assert await in_writer(store, lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        found = checkpointer(store)
        assert found is not None
        await store.ingest([event("first", "a")], T0)
        frames, moved = found.frames()
        assert frames > moved  # the WAL-index header counts the frames the ingest wrote, none moved yet
        found.limit = 16  # frames, so that this test's writes pass it
        before = path.stat().st_size
        for start in range(0, 400, 100):
            await store.ingest([event(f"e{i}", "a") for i in range(start, start + 100)], T0)
        for _ in range(500):
            if found.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert found.checkpoints >= 1
        for _ in range(500):  # the checkpoint under way has copied the WAL's pages into the database file
            if path.stat().st_size > before:
                break
            await asyncio.sleep(0.01)
        assert path.stat().st_size > before
        assert [r.created for r in await store.ingest([event("after", "a")], T0)] == [True]
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # nothing was lost on the way
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 402


async def test_the_wal_starts_over_once_it_holds_restart_at_frames(tmp_path: Path) -> None:
    """Passive checkpoints alone never let a busy WAL start over; past ``restart_at`` frames one restarts it, so
    the WAL file stays bounded while the writes go on."""
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    try:
        found = checkpointer(store)
        assert found is not None
        found.limit, found.restart_at = 16, 64
        most = 0
        for i in range(300):
            await store.ingest([event(f"e{i}", "a")], T0)
            most = max(most, found.frames()[0])
        await found.finished()
        assert found.checkpoints >= 2
        # The WAL went back to its start each time it passed 64 frames (give or take the commits made while the
        # checkpoint ran): never near the 3,700 frames these 300 commits write without a restart.
        assert most < 400
        assert os.stat(f"{path}-wal").st_size < 400 * (4096 + 24) + 32
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 300


async def test_a_group_waits_on_the_loop_for_a_restarting_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the checkpointer holds the write lock, the next group waits for it on the loop and then runs there,
    not on the writer thread (whose busy handler would sleep between tries)."""
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    try:
        found = checkpointer(store)
        assert found is not None
        holding = threading.Event()

        def hold_the_lock(restart: bool) -> None:  # what a RESTART checkpoint does to writers, for 0.2 s
            with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                holding.set()
                threading.Event().wait(0.2)
                conn.execute("COMMIT")

        monkeypatch.setattr(found, "_checkpoint", hold_the_lock)
        found.limit = 0
        await store.ingest([event("e0", "a")], T0)  # its commit starts the "checkpoint"
        assert await asyncio.to_thread(holding.wait, 5)
        hops = thread_hops(monkeypatch)
        found.limit = 1_000_000
        assert [r.created for r in await store.ingest([event("e1", "a")], T0)] == [True]
        assert hops == []
    finally:
        await store.close()


async def test_a_failed_checkpoint_is_logged_and_the_writes_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    try:
        found = checkpointer(store)
        assert found is not None
        found.limit = 0  # every commit asks for one

        def broken(restart: bool) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(found, "_checkpoint", broken)
        with capture_logs() as logs:
            await store.ingest([event("e1", "a")], T0)
            for _ in range(500):
                if found.checkpoints:
                    break
                await asyncio.sleep(0.01)
            await store.ingest([event("e2", "a")], T0)
        assert found.checkpoints >= 1
        failed = [entry for entry in logs if entry["event"] == "store_checkpoint_failed"]
        assert failed and failed[0]["log_level"] == "warning" and "disk I/O error" in failed[0]["error"]
        assert writer_alive(store)
    finally:
        await store.close()


async def test_the_lists_read_a_store_made_before_them(tmp_path: Path) -> None:
    """Migration 3 adds ``created_us`` as a virtual column: the events already stored are listed by time at once."""
    path = tmp_path / "relay.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(MIGRATIONS[0] + MIGRATIONS[1])
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (2)")
        conn.execute(
            "INSERT INTO events (seq, id, type, created_at, data, ingested_at, delivery_count)"
            " VALUES (1, 'old', 't', '2024-01-15T10:35:00.5Z', '{}', ?, 1)",
            (T0,),
        )
        conn.execute(
            "INSERT INTO deliveries (seq, id, event_seq, webhook_id, status, created_at, updated_at)"
            " VALUES (1, 'dlv_old', 1, 'a', 'failed', ?, ?)",
            (T0, T0),
        )
    store = SqliteStore(path)
    await store.open()
    try:
        half = datetime(2024, 1, 15, 10, 35, 0, 500_000, tzinfo=UTC)
        found = await store.list_events(event_type="t", since=half, until=None, cursor=None, limit=10, scope=EVERYTHING)
        assert [(e.id, e.deliveries) for e in found.events] == [("old", 1)]
        found = await store.list_events(
            event_type=None, since=None, until=half, cursor=None, limit=10, scope=EVERYTHING
        )
        assert found.events == []
        page = await store.list_deliveries(
            webhook_id=None, status="failed", since=T0, until=None, cursor=None, limit=10, scope=EVERYTHING
        )
        assert [d.id for d in page.deliveries] == ["dlv_old"]
    finally:
        await store.close()


async def test_every_statement_of_the_lists_reads_through_an_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's cost must not grow with the store: each statement a list runs walks the primary key or a filter's
    index newest first and stops at its LIMIT, or reads a time range in the index made for it, or fetches rows by
    seq. Checked on SQLite's query plans, for every filter and their combinations."""
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    statements: list[tuple[str, list[Any]]] = []
    read = store._read

    async def recording(sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        statements.append((sql, list(params)))
        return await read(sql, params)

    try:
        await store.ingest([event(f"e{n}", "a", "b", event_type="t" if n % 2 else "u") for n in range(10)], T0)
        monkeypatch.setattr(sqlite_reads, "PROBE_ROWS", 2)  # a time window turns to the time index at once
        monkeypatch.setattr(store, "_read", recording)
        since, until = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
        for event_type in (None, "t"):
            for window in ((None, None), (since, None), (None, until), (since, until)):
                page = await store.list_events(
                    event_type=event_type, since=window[0], until=window[1], cursor=None, limit=2, scope=EVERYTHING
                )
                await store.list_events(
                    event_type=event_type,
                    since=window[0],
                    until=window[1],
                    cursor=page.next_cursor,
                    limit=2,
                    scope=EVERYTHING,
                )
        for webhook_id in (None, "a"):
            for status in (None, "pending", "succeeded"):
                for times in ((None, None), (T0, None), (None, T0 + 1), (T0, T0 + 1)):
                    await store.list_deliveries(
                        webhook_id=webhook_id,
                        status=status,
                        since=times[0],
                        until=times[1],
                        cursor="99",
                        limit=2,
                        scope=EVERYTHING,
                    )
    finally:
        await store.close()

    assert any("INDEXED BY events_created" in sql for sql, _ in statements)
    assert any("INDEXED BY deliveries_created" in sql for sql, _ in statements)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for sql, params in statements:
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            table = "events" if " FROM events" in sql else "deliveries"
            if "json_each" in sql:  # the page's rows, by seq
                assert "USING INTEGER PRIMARY KEY (rowid=?)" in plan, (sql, plan)
            elif " FROM attempts " in sql:  # their attempts
                assert plan == "SEARCH attempts USING PRIMARY KEY (delivery_seq=?)", plan
            elif "INDEXED BY" in sql:  # a time range, newest first
                assert f"INDEX {table}_created ({'created_us' if table == 'events' else 'created_at'}" in plan
            else:  # a walk newest first: no sort, and the filter's index when there is a filter
                assert "TEMP B-TREE" not in plan, (sql, plan)
                if "type = ?" in sql:
                    assert "INDEX events_type (type=?" in plan, (sql, plan)
                elif "status != 'succeeded'" in sql:
                    assert "INDEX deliveries_status (status=?" in plan or "deliveries_webhook" in plan, (sql, plan)
                elif "webhook_id = ?" in sql:
                    assert "INDEX deliveries_webhook (webhook_id=?" in plan, (sql, plan)
                else:
                    assert plan in (f"SCAN {table}", f"SEARCH {table} USING INTEGER PRIMARY KEY (rowid<?)"), plan
