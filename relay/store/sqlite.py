"""The SQLite backend: the outbox on one file that one relay owns (CONTRACT §8, the embedded default).

Writes go through one writer connection and its group commit (``sqlite_writer``), the hot-path statements are in
``sqlite_outbox``, reads on a second connection in ``sqlite_reads``, the schema in ``sqlite_schema``. Driver
errors become ``StoreUnavailable`` / ``StoreError`` at this boundary.

One relay owns the file: ``open`` takes an exclusive ``flock`` on ``<path>.lock`` (released by the kernel when
the process dies, so ``kill -9`` never leaves it held) and a second relay on the same file stops with the
holder's pid. Owning it is also why every lease found at startup is abandoned: no live relay can hold one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import socket
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Any, TypeVar

import aiosqlite
import structlog

from relay.errors import StoreError, StoreUnavailable
from relay.models import Claim, Delivery, Durability, Scope
from relay.store import sqlite_outbox as outbox
from relay.store.activity import HOUR
from relay.store.base import (
    AttemptResult,
    IngestResult,
    NewEvent,
    RefreshTokenSession,
    Room,
    local_refresh_session,
)
from relay.store.rows import check_cancellable, check_quota, spec_tenant
from relay.store.sqlite_reads import chunks, delivery_scope, event_scope
from relay.store.sqlite_schema import migrate, translate
from relay.store.sqlite_tenants import SqliteTenants
from relay.store.sqlite_writer import GROUP_ROWS, GroupWriter, Job

log = structlog.get_logger()
T = TypeVar("T")


class SqliteStore(SqliteTenants):
    """The outbox on one SQLite file. ``open()`` locks, creates and migrates it; ``close()`` drains the writer."""

    def __init__(self, path: Path, durability: Durability = Durability.FULL) -> None:
        self.path = path
        self.durability = durability
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"  # whose leases these are
        # "full": the writer's COMMITs go without an fsync, and its WAL syncer answers a group once one covers it
        self._writer = GroupWriter(path, self._connect_writer, sync_wal=durability is Durability.FULL)
        self._reader: aiosqlite.Connection | None = None
        self._lock: IO[str] | None = None

    @property
    def commits(self) -> int:
        return self._writer.commits

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._writer.run(fn)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._make_file()
        try:
            await self._writer.open()
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            for pragma in self._pragmas():
                await self._reader.execute(pragma)
        except sqlite3.Error as exc:
            await self.close()
            raise translate(exc) from exc
        except BaseException:
            await self.close()
            raise

    # -- the group: one relay owns the file, so there is no other relay to hear from or share jobs with ------

    @property
    def rescan_interval(self) -> float | None:
        return None

    def on_signals(
        self,
        due: Callable[[list[str]], None],
        webhooks_changed: Callable[[], None],
        rescan: Callable[[], None],
    ) -> None:
        pass

    async def claim_job(self, name: str, now: float, interval: float) -> bool:
        return True

    def clock_offset(self) -> float | None:
        return None

    async def take_starts(self, webhook_id: str, want: int, now: float, rate: float) -> tuple[int, float]:
        return want, now  # never asked: one relay, and its own window is the group's

    async def give_back_starts(self, webhook_id: str, count: int, now: float) -> None:
        pass

    def _make_file(self) -> None:
        """Create the file (0600) and its folder (0700) if they are missing, and take the file's lock."""
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        self._take_lock()
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))

    async def migrate_only(self) -> tuple[int, int]:
        """``relay migrate``: create and lock the file as ``open`` does, bring its schema up to date, let go; the
        schema versions before and after. A relay running on the file holds its lock: this then fails."""
        self._make_file()
        try:

            def run() -> tuple[int, int]:
                with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
                    return migrate(conn, self.path)

            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        finally:
            await self.close()

    def _take_lock(self) -> None:
        self._lock = take_lock(self.path)

    def _pragmas(self) -> list[str]:
        synchronous = "FULL" if self.durability is Durability.FULL else "NORMAL"
        return [
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {synchronous}",
            f"PRAGMA busy_timeout = {int(self._writer.busy_timeout * 1000)}",
            "PRAGMA temp_store = MEMORY",
            "PRAGMA cache_size = -16000",
        ]

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in self._pragmas():
                conn.execute(pragma)
            migrate(conn, self.path)
            conn.execute("PRAGMA busy_timeout = 0")  # waits for the lock only in a thread-side group
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        await self._writer.close()
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._reader.close()
            self._reader = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    async def stopped(self) -> None:
        await self._writer.stopped()

    async def check_writable(self, min_free_bytes: int = 1024 * 1024) -> None:
        """Raise ``StoreUnavailable`` unless a write commits now, into the store's file, and there is room for more.

        The heartbeat goes through the group commit, so a store file removed or replaced is found here too, with
        no ingest. A nearly full store can still commit a tiny heartbeat, so capacity is checked too: the pages
        in use against ``max_page_count``, and the free space on the file system.
        """

        def run(conn: sqlite3.Connection) -> None:
            pages = {}
            for pragma in ("page_count", "freelist_count", "max_page_count"):
                rows = conn.execute(f"PRAGMA {pragma}").fetchall()
                pages[pragma] = int(rows[0][0])
            if pages["page_count"] - pages["freelist_count"] >= pages["max_page_count"] - 2:
                raise sqlite3.OperationalError("database or disk is full (max_page_count reached)")
            conn.execute("CREATE TABLE IF NOT EXISTS heartbeat (at REAL)")
            conn.execute("DELETE FROM heartbeat")
            conn.execute("INSERT INTO heartbeat (at) VALUES (unixepoch())")

        await self._writer.run(run)
        try:
            free = os.statvfs(self.path.parent)
        except OSError as exc:
            raise StoreUnavailable(f"cannot stat the store's folder: {exc}") from exc
        if free.f_bavail * free.f_frsize < min_free_bytes:
            raise StoreUnavailable(f"the disk holding {self.path} has less than {min_free_bytes} bytes free")

    # -- the outbox --------------------------------------------------------------------------------------

    async def ingest(
        self, events: Sequence[NewEvent], now: float, rooms: Mapping[str, Room] | None = None
    ) -> list[IngestResult]:
        return await self.submit_ingest(events, now, rooms)

    def submit_ingest(
        self,
        events: Sequence[NewEvent],
        now: float,
        rooms: Mapping[str, Room] | None = None,
        on_commit: Callable[[list[IngestResult] | None], None] | None = None,
    ) -> asyncio.Future[list[IngestResult]]:
        rows = len(events) + sum([len(e.webhook_ids) for e in events])
        payload = outbox.Ingest(list(events), rooms, self.owner)
        return self._writer.submit(Job(outbox.apply_ingest, payload, now=now, rows=rows, on_commit=on_commit))

    async def claim(
        self, webhook_id: str, limit: int, now: float, lease_until: float
    ) -> tuple[list[Claim], float | None]:
        owner = self.owner
        return await self._writer.run(
            lambda conn: outbox.claim(conn, owner, webhook_id, limit, now, lease_until), bounded=True
        )

    async def record(
        self, results: Sequence[AttemptResult], on_leased: Callable[[list[Claim]], None] | None = None
    ) -> list[Claim]:
        job = Job(outbox.apply_results, list(results), rows=2 * len(results), on_applied=on_leased)
        leased: list[Claim] = await self._writer.submit(job)
        return leased

    async def release(self, claims: Sequence[Claim], now: float) -> None:
        await self._writer.run(lambda conn: outbox.release(conn, claims, now), bounded=len(claims) <= GROUP_ROWS)

    async def renew(self, claims: Sequence[Claim], now: float, until: float) -> list[Claim]:
        if not claims:
            return []
        return await self._writer.run(
            lambda conn: outbox.renew(conn, claims, now, until), bounded=len(claims) <= GROUP_ROWS
        )

    async def reclaim_abandoned(self, now: float) -> int:
        """Every lease in the file is abandoned at startup: this relay holds the file's lock, so no other relay
        is alive to hold one, and this one has claimed nothing yet."""

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE deliveries SET status = 'pending', due_at = ?, updated_at = ? WHERE status = 'delivering'",
                (now, now),
            )
            return cursor.rowcount

        return await self._writer.run(run)

    async def take_over(self, now: float) -> list[str]:
        return []  # one relay owns the file: its leases are its own, and reclaimed at its startup

    async def replay(
        self,
        event_id: str,
        webhook_ids: Sequence[str],
        now: float,
        *,
        scope: Scope,
        orderings: Sequence[str] = (),
    ) -> list[Delivery] | None:
        def run(conn: sqlite3.Connection) -> list[int] | None:
            terms, params = event_scope(scope)
            where = " AND ".join(["id = ?", *terms])
            rows = conn.execute(f"SELECT seq, ordering_key FROM events WHERE {where}", (event_id, *params)).fetchall()
            if not rows:
                return None
            return outbox.replay(conn, int(rows[0][0]), rows[0][1], webhook_ids, orderings, now)

        seqs = await self._writer.run(run)
        return None if seqs is None else await self._deliveries_by_seq(seqs)

    async def cancel(self, delivery_id: str, now: float, *, scope: Scope) -> Delivery | None:
        terms, params = delivery_scope(scope)
        rows = await self._read(
            f"SELECT seq FROM deliveries WHERE {' AND '.join(['id = ?', *terms])}", (delivery_id, *params)
        )
        if not rows:
            return None
        seq = int(rows[0][0])
        before = await self._writer.run(lambda conn: outbox.cancel(conn, seq, now))
        if before == "missing":
            return None
        check_cancellable(delivery_id, before)
        found = await self._deliveries_by_seq([seq])
        return found[0] if found else None

    async def redrive(self, now: float, webhook_ids: Sequence[str], *, include_dead: bool) -> dict[str, int]:
        statuses = "('failed', 'dead')" if include_dead else "('failed')"

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            counts: dict[str, int] = {}
            for chunk in chunks(list(webhook_ids), 500):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"UPDATE deliveries SET status = 'pending', due_at = ?, updated_at = ?"
                    f" WHERE status IN {statuses} AND webhook_id IN ({marks})"
                    " AND (ordering_key IS NULL OR status = 'failed') RETURNING webhook_id",
                    (now, now, *chunk),
                ).fetchall()
                if include_dead:  # a dead delivery of an ordering key goes back into its key's queue
                    rows += outbox.redrive_dead_keyed(conn, chunk, now)
                for r in rows:
                    counts[r[0]] = counts.get(r[0], 0) + 1
            return counts

        return await self._writer.run(run)

    async def prune(self, cutoff: float, batch: int = 1000) -> int:
        def run(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                """SELECT seq FROM events e WHERE ingested_at < ? AND NOT EXISTS (
                       SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq
                       AND d.status NOT IN ('succeeded', 'cancelled', 'superseded'))
                   LIMIT ?""",
                (cutoff, batch),
            ).fetchall()
            seqs = [int(r[0]) for r in rows]
            if not seqs:
                return 0
            marks = ",".join("?" * len(seqs))
            conn.execute(
                f"DELETE FROM attempts WHERE delivery_seq IN (SELECT seq FROM deliveries WHERE event_seq IN ({marks}))",
                seqs,
            )
            conn.execute(f"DELETE FROM deliveries WHERE event_seq IN ({marks})", seqs)
            conn.execute(f"DELETE FROM events WHERE seq IN ({marks})", seqs)
            return len(seqs)

        def drop_hours(conn: sqlite3.Connection) -> None:
            """Hourly counts of hours that ended by ``cutoff``: a scan of ``attempt_hours`` (at most webhooks x hours
            kept x nodes rows), not an index on ``hour`` that every record's upsert would pay for."""
            conn.execute("DELETE FROM attempt_hours WHERE hour <= ?", (cutoff - HOUR,))

        await self._writer.run(drop_hours)
        total = 0
        while (count := await self._writer.run(run)) > 0:
            total += count
            if count < batch:
                break
        return total

    # -- webhooks ----------------------------------------------------------------------------------------
    # An API webhook's whole definition lives in ``spec`` (secrets included, so the relay can sign after a
    # restart). Every API statement is guarded by ``source = 'api'``: a config-declared webhook is never changed
    # through them.

    async def sync_config_webhooks(self, specs: Mapping[str, bytes], now: float) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT id FROM webhooks WHERE source = 'config'").fetchall()
            removed = [r[0] for r in rows if r[0] not in specs]
            for webhook_id in removed:
                conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
                outbox.cancel_queued(conn, webhook_id, now)
            conn.executemany(
                "INSERT INTO webhooks (id, source, spec, created_at, updated_at, tenant)"
                " VALUES (?, 'config', ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at,"
                " tenant = excluded.tenant WHERE webhooks.source = 'config'",
                [(webhook_id, spec, now, now, spec_tenant(spec)) for webhook_id, spec in specs.items()],
            )
            return removed

        return await self._writer.run(run)

    async def insert_api_webhook(
        self, webhook_id: str, spec: bytes, now: float, *, max_per_tenant: int | None = None
    ) -> bool:
        tenant = spec_tenant(spec)

        def run(conn: sqlite3.Connection) -> bool:
            if tenant is not None and max_per_tenant is not None:
                held = conn.execute("SELECT COUNT(*) FROM webhooks WHERE tenant = ?", (tenant,)).fetchone()[0]
                check_quota(tenant, int(held), max_per_tenant)
            cursor = conn.execute(
                "INSERT INTO webhooks (id, source, spec, created_at, updated_at, tenant) VALUES (?, 'api', ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (webhook_id, spec, now, now, tenant),
            )
            return cursor.rowcount == 1

        return await self._writer.run(run)

    async def update_api_webhook(
        self, webhook_id: str, spec: bytes, now: float, *, rotation: tuple[str | None, float | None] | None = None
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            sql, params = "UPDATE webhooks SET spec = ?, updated_at = ?", list[Any]([spec, now])
            if rotation is not None:
                sql, params = f"{sql}, previous_secret = ?, previous_secret_until = ?", [*params, *rotation]
            cursor = conn.execute(f"{sql} WHERE id = ? AND source = 'api'", (*params, webhook_id))
            return cursor.rowcount == 1

        return await self._writer.run(run)

    async def delete_api_webhook(self, webhook_id: str, now: float) -> int | None:
        def run(conn: sqlite3.Connection) -> int | None:
            cursor = conn.execute("DELETE FROM webhooks WHERE id = ? AND source = 'api'", (webhook_id,))
            if cursor.rowcount != 1:
                return None
            conn.execute("DELETE FROM oauth_tokens WHERE webhook_id = ?", (webhook_id,))
            return outbox.cancel_queued(conn, webhook_id, now)

        return await self._writer.run(run)

    def refresh_token_session(self, webhook_id: str) -> AbstractAsyncContextManager[RefreshTokenSession]:
        return local_refresh_session(self, webhook_id)  # one relay owns the file

    async def save_refresh_token(self, webhook_id: str, token: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO oauth_tokens (webhook_id, refresh_token, updated_at) VALUES (?, ?, unixepoch())"
                " ON CONFLICT (webhook_id) DO UPDATE SET refresh_token = excluded.refresh_token,"
                " updated_at = excluded.updated_at",
                (webhook_id, token),
            )

        await self._writer.run(run)


def take_lock(path: Path) -> IO[str]:
    """Take the exclusive ``flock`` on ``<path>.lock`` that a relay holds while it owns the store at ``path``, and
    write this process's pid into it; the open lock file (closing it lets go). Raises ``StoreError`` naming the
    holder's pid when another process holds it: ``SqliteStore.open`` and ``relay store copy`` both take it."""
    handle = os.fdopen(os.open(Path(f"{path}.lock"), os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreError(f"the store {path} is in use by another relay (pid {holder})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
