"""The SQLite outbox: every SQL statement of relay lives here.

One writer connection, fed by one writer task: callers submit write jobs and await them; the writer task drains
whatever is queued at that moment into one group, committed as one transaction (one fsync with
``durability = "full"``, always on the writer's own thread), so concurrent ingest requests, claims and attempt
results share commits. The writes are set-based (multi-row ``VALUES``, one aggregated row per claim): a handful of
statements per group whatever its size.
A second connection (aiosqlite) serves reads. Driver errors are translated here into ``StoreUnavailable`` /
``StoreError``.

A group is answered only if its commit landed in the store: after each COMMIT the writer checks that the path still
names the files it opened (the database and its WAL). A file removed or replaced under the running relay makes the
store lost for good: that group and every later write fail with ``StoreUnavailable`` (the API answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson
import structlog

from relay.errors import StoreError, StoreUnavailable
from relay.models import (
    Attempt,
    Claim,
    DeliveryStatus,
    Durability,
    Event,
    new_event_id,
    new_id,
)
from relay.schema import MIGRATIONS, QUEUED
from relay.store_reads import StoreReads
from relay.store_reads import chunks as _chunks
from relay.store_reads import translate as _translate

log = structlog.get_logger()

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], T]  # runs inside the group transaction (see the writer's comment)


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class NewEvent:
    """An accepted, validated event with the webhooks it fans out to (decided at ingest)."""

    id: str
    type: str
    created_at: str
    data: bytes
    webhook_ids: tuple[str, ...]
    generated: bool = False  # relay made the id up (the producer sent none): it must not match a stored event


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class IngestResult:
    id: str
    deliveries: int
    created: bool  # False: the id existed, this is the first answer again
    leased: tuple[Claim, ...] = ()  # deliveries committed already leased to the caller (see ``Store.ingest``)


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Lease:
    """Up to ``count`` of a webhook's new deliveries are committed leased until ``until``, handed to the caller."""

    count: int
    until: float


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class AttemptResult:
    """One finished attempt and the decision taken after it."""

    delivery_seq: int
    delivery_id: str  # with the seq: a seq freed by a prune can be reused, an id never is
    attempt: Attempt
    status: DeliveryStatus
    due_at: float | None


@dataclass(slots=True)
class _Job:
    fn: WriteFn[Any] | None
    future: asyncio.Future[Any]
    ingest: list[NewEvent] | None = None
    leases: dict[str, Lease] | None = None
    results: list[AttemptResult] | None = None
    now: float = 0.0
    on_loop: bool = True  # its statements may run on the event loop: bounded work (see the writer's comment)
    rows: int = 1  # about how many rows it writes: what a group's size is counted in


class Store(StoreReads):
    """The outbox on one SQLite file. ``open()`` creates and migrates it; ``close()`` drains the writer."""

    def __init__(self, path: Path, durability: Durability = Durability.FULL) -> None:
        self.path = path
        self.durability = durability
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self.on_commit: Callable[[], None] | None = None
        self.busy_timeout = 5.0  # seconds the writer waits for a write lock held by another connection
        self.commits = 0  # group transactions committed (tests and metrics read it)
        self._files: dict[str, tuple[int, int]] = {}  # path -> (st_dev, st_ino) of the files the writer opened
        self._lost: str | None = None  # why the store is gone (see _commit); once set, it stays set

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-store-writer")
        try:
            self._writer = await self._on_writer_thread(self._connect_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            for pragma in self._pragmas():
                await self._reader.execute(pragma)
        except sqlite3.Error as exc:
            await self._close_connections()
            raise _translate(exc) from exc
        except BaseException:
            await self._close_connections()
            raise
        self._writer_task = asyncio.create_task(self._write_loop(), name="store-writer")

    def _pragmas(self) -> list[str]:
        synchronous = "FULL" if self.durability is Durability.FULL else "NORMAL"
        return [
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {synchronous}",
            self._busy_pragma(),
            "PRAGMA temp_store = MEMORY",
            "PRAGMA cache_size = -16000",
        ]

    def _busy_pragma(self) -> str:
        return f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}"

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in self._pragmas():
                conn.execute(pragma)
            self._migrate(conn)
            conn.execute("PRAGMA busy_timeout = 0")  # waits for the lock only in _run_group, on the thread
            wal = conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            self._files = _file_ids([str(self.path), f"{self.path}-wal"] if wal else [str(self.path)])
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
        version = int(rows[0][0]) if rows else 0
        if version > len(MIGRATIONS):
            raise StoreError(f"the store {self.path} has schema version {version}, newer than this relay")
        for index in range(version, len(MIGRATIONS)):
            conn.executescript(
                "BEGIN IMMEDIATE;\n"
                + MIGRATIONS[index]
                + "\nDELETE FROM schema_version;"
                + f"\nINSERT INTO schema_version (version) VALUES ({index + 1});\nCOMMIT;"
            )
            log.info("store_migrated", version=index + 1)

    async def close(self) -> None:
        if self._writer_task is not None:
            await self._queue.join()
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        await self._close_connections()

    async def _close_connections(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._reader.close()
        if self._writer is not None:
            writer = self._writer
            with contextlib.suppress(sqlite3.Error):
                await self._on_writer_thread(writer.close)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
        self._reader = self._writer = self._thread = None

    async def _on_writer_thread(self, fn: Callable[[], T]) -> T:
        assert self._thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def writer_stopped(self) -> None:
        """Return when the writer task ends (it should not, before ``close``)."""
        if self._writer_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._writer_task)

    @property
    def writer_alive(self) -> bool:
        return self._writer_task is not None and not self._writer_task.done()

    # -- the writer --------------------------------------------------------------------------------------
    # The writer task gathers what is queued into one group, committed as one transaction. A group of bounded
    # jobs (ingests, attempt results, claims) runs its statements on the event loop and hands only its COMMIT
    # (the WAL write, the fsync, any checkpoint) to the writer thread. A group of open-ended jobs (prunes,
    # re-drives, anything else) runs whole on the thread, in one call, so the loop never waits on it. Either way:
    # one commit and one thread hand-off per group, however many jobs it holds. The GIL is why: a thread that
    # runs the statements gives it up at every statement step and waits to take it back from the busy loop.
    # Groups are of one kind, and stop growing at GROUP_ROWS, which bounds how long the loop runs statements.
    # Job functions are plain synchronous sqlite3 code; futures are settled back on the event loop.

    def _submit(self, job: _Job) -> asyncio.Future[Any]:
        if self._writer_task is None or self._writer_task.done():
            raise StoreUnavailable("the store is closed")
        if self._lost is not None:
            raise StoreUnavailable(self._lost)
        self._queue.put_nowait(job)
        return job.future

    async def write(self, fn: WriteFn[T], *, bounded: bool = False) -> T:
        """Run ``fn`` inside the next group transaction; its result once committed.

        ``fn`` runs on the writer thread, unless ``bounded`` says its work is small whatever the store holds (a
        claim of at most ``limit`` rows): then it may run on the event loop (see the writer's comment).
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        result: T = await self._submit(_Job(fn, future, on_loop=bounded))
        return result

    async def _write_loop(self) -> None:
        held: _Job | None = None  # taken from the queue, but of the other kind than the group it came after
        try:
            while True:
                first = held if held is not None else await self._queue.get()
                held = None
                jobs, rows = [first], first.rows
                while rows < GROUP_ROWS and not self._queue.empty():
                    job = self._queue.get_nowait()
                    if job.on_loop is not first.on_loop:
                        held = job
                        break
                    jobs.append(job)
                    rows += job.rows
                try:
                    await self._commit_group(jobs)
                finally:
                    for _ in jobs:
                        self._queue.task_done()
        finally:
            if held is not None:
                _fail([held], StoreUnavailable("the store is closing"))
                self._queue.task_done()

    async def _commit_group(self, jobs: list[_Job]) -> None:
        if self._lost is not None:  # queued before the loss was found
            _fail(jobs, StoreUnavailable(self._lost))
            return
        try:
            outcomes = await self._run_on_loop(jobs) if jobs[0].on_loop else None
            if outcomes is None:
                outcomes = await self._on_writer_thread(lambda: self._run_group(jobs))
        except sqlite3.Error as exc:
            log.error("store_write_failed", error=str(exc), jobs=len(jobs))
            _fail(jobs, _translate(exc))
            return
        except asyncio.CancelledError:
            _fail(jobs, StoreUnavailable("the store is closing"))
            raise
        except Exception as exc:  # a job's own fault: the group is rolled back, the writer goes on
            log.exception("store_job_failed", jobs=len(jobs))
            _fail(jobs, exc)
            return
        if self._lost is not None:  # this group's COMMIT found it: it went into a file nobody can reopen
            log.error("store_lost", path=str(self.path), reason=self._lost, jobs=len(jobs))
            _fail(jobs, StoreUnavailable(self._lost))
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            if not job.future.done():
                job.future.set_result(outcome)
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit()

    async def _run_on_loop(self, jobs: list[_Job]) -> list[Any] | None:
        """The group's statements on the loop, and only its COMMIT on the writer thread. None when another
        connection holds the write lock: the group then runs on the thread, where waiting for it holds up no one."""
        conn = self._writer
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")  # busy_timeout is 0 outside _run_group: this never waits
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise
        try:
            outcomes = self._statements(conn, jobs)
            await self._on_writer_thread(lambda: self._commit(conn))
        except asyncio.CancelledError:
            raise  # the COMMIT may still be running on the thread: the connection is not ours to touch
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return outcomes

    def _run_group(self, jobs: list[_Job]) -> list[Any]:
        """On the writer thread: every job of the group in one transaction; their outcomes in job order."""
        conn = self._writer
        assert conn is not None
        conn.execute(self._busy_pragma())
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = self._statements(conn, jobs)
                self._commit(conn)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA busy_timeout = 0")
        return outcomes

    def _commit(self, conn: sqlite3.Connection) -> None:
        """On the writer thread: COMMIT the group, then make sure it landed in the store and not in a file that
        was removed or replaced meanwhile (sets ``_lost``; the loop fails the group). One stat per file opened,
        per group: a few microseconds against the commit's fsync, and none on the event loop."""
        conn.execute("COMMIT")
        for path, opened in self._files.items():
            try:
                found = os.stat(path)
            except OSError:
                found = None
            if found is None or (found.st_dev, found.st_ino) != opened:
                self._lost = f"store file was removed or replaced: {path}"
                return

    def _statements(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[Any]:
        """Every job of the group, inside its transaction; their outcomes in job order."""
        outcomes: list[Any] = []
        ingest = [job for job in jobs if job.ingest is not None]
        ingest_answers = iter(self._apply_ingest(conn, ingest) if ingest else [])
        results = [r for job in jobs if job.results is not None for r in job.results]
        if results:
            self._apply_results(conn, results)
        for job in jobs:
            if job.ingest is not None:
                outcomes.append(next(ingest_answers))
            elif job.fn is not None:
                outcomes.append(job.fn(conn))
            else:
                outcomes.append(None)
        return outcomes

    # -- ingest ------------------------------------------------------------------------------------------

    async def ingest(
        self, events: Sequence[NewEvent], now: float, leases: dict[str, Lease] | None = None
    ) -> list[IngestResult]:
        """Commit the events and their deliveries (all or nothing); answers in the order given.

        With ``leases``, the first new deliveries of each webhook named there (up to its count) are committed
        already leased (``delivering``) and come back as claims in ``IngestResult.leased``: the scheduler
        reserved room for them and starts their attempts at once, with no claim of its own.
        """
        return await self.submit_ingest(events, now, leases)

    def submit_ingest(
        self, events: Sequence[NewEvent], now: float, leases: dict[str, Lease] | None = None
    ) -> asyncio.Future[list[IngestResult]]:
        """``ingest`` as a future of the commit, which lands whether or not anybody still awaits it."""
        future: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
        rows = len(events) + sum([len(e.webhook_ids) for e in events])
        job = _Job(None, future, ingest=list(events), leases=dict(leases) if leases else None, now=now, rows=rows)
        self._submit(job)
        return future

    def _apply_ingest(self, conn: sqlite3.Connection, jobs: list[_Job]) -> list[list[IngestResult]]:
        """Insert the group's new events and deliveries; one list of answers per job, in job order.

        An id already stored, or created by an earlier job of this group, answers as that first time did,
        with ``created=False``. Whatever the group's size, this is a handful of statements (see the module
        docstring for why that matters).
        """
        known: dict[str, int] = {}  # id -> delivery count, of events stored before or earlier in this group
        wanted = list({e.id for job in jobs for e in job.ingest or ()})
        sql = "SELECT id, delivery_count FROM events WHERE id IN (SELECT value FROM json_each(?))"
        for row in conn.execute(sql, (orjson.dumps(wanted),)).fetchall():
            known[row[0]] = int(row[1])
        event_seq, delivery_seq = conn.execute(
            "SELECT (SELECT IFNULL(MAX(seq), 0) FROM events), (SELECT IFNULL(MAX(seq), 0) FROM deliveries)"
        ).fetchone()
        event_rows: list[tuple[Any, ...]] = []
        delivery_rows: list[tuple[Any, ...]] = []
        per_job: list[list[IngestResult]] = []
        for job in jobs:
            job_answers = []
            now = job.now
            budget = {webhook_id: lease.count for webhook_id, lease in (job.leases or {}).items()}
            for e in job.ingest or ():
                event_id = e.id
                count = known.get(event_id)
                if count is not None and e.generated:
                    # A producer posted this id before relay made it up (generated ids count up, so they can be
                    # foreseen): this is another event, and it gets another id rather than answering as that one.
                    event_id, count = _unused_event_id(conn, known, now), None
                if count is not None:
                    job_answers.append(IngestResult(event_id, count, False))
                    continue
                count = known[event_id] = len(e.webhook_ids)
                event_seq += 1
                event_rows.append((event_seq, event_id, e.type, e.created_at, e.data, now, count))
                leased: list[Claim] = []
                stored: Event | None = None
                for webhook_id in e.webhook_ids:
                    delivery_seq += 1
                    delivery_id = new_id("dlv", now)
                    if budget.get(webhook_id, 0) > 0:
                        budget[webhook_id] -= 1
                        assert job.leases is not None
                        until = job.leases[webhook_id].until
                        delivery_rows.append(
                            (delivery_seq, delivery_id, event_seq, webhook_id, "delivering", until, now, now)
                        )
                        stored = stored or Event(event_seq, event_id, e.type, e.created_at, e.data, now)
                        leased.append(Claim(delivery_seq, delivery_id, webhook_id, 1, now, stored))
                    else:
                        delivery_rows.append(
                            (delivery_seq, delivery_id, event_seq, webhook_id, "pending", now, now, now)
                        )
                job_answers.append(IngestResult(event_id, count, True, tuple(leased)))
            per_job.append(job_answers)
        _insert_many(
            conn,
            "INSERT INTO events (seq, id, type, created_at, data, ingested_at, delivery_count) VALUES",
            event_rows,
        )
        _insert_many(
            conn,
            "INSERT INTO deliveries (seq, id, event_seq, webhook_id, status, due_at, created_at, updated_at) VALUES",
            delivery_rows,
        )
        return per_job

    # -- scheduling --------------------------------------------------------------------------------------

    async def claim(
        self, webhook_id: str, limit: int, now: float, lease_until: float
    ) -> tuple[list[Claim], float | None]:
        """Lease up to ``limit`` due deliveries of one webhook, oldest due first, with their events.

        Also returns the earliest due time of the webhook's deliveries still queued after the claim (None when
        there are none), so the scheduler knows when to come back without another query.
        """

        def run(conn: sqlite3.Connection) -> tuple[list[Claim], float | None]:
            # One row holding them all (times as exact decimal text), not one statement step per delivery.
            found = conn.execute(
                f"""SELECT json_group_array(json_array(d.seq, d.id, d.attempt_count, printf('%!.17g', d.created_at),
                        e.seq, e.id, e.type, e.created_at, CAST(e.data AS TEXT), printf('%!.17g', e.ingested_at)))
                FROM (
                    SELECT seq, id, event_seq, attempt_count, created_at FROM deliveries
                    WHERE webhook_id = ? AND status IN {QUEUED} AND due_at <= ?
                    ORDER BY due_at LIMIT ?
                ) d JOIN events e ON e.seq = d.event_seq""",
                (webhook_id, now, limit),
            ).fetchone()[0]
            claims = [
                Claim(
                    r[0],
                    r[1],
                    webhook_id,
                    r[2] + 1,
                    float(r[3]),
                    Event(r[4], r[5], r[6], r[7], r[8].encode(), float(r[9])),
                )
                for r in orjson.loads(found)
            ]
            if claims:
                conn.execute(
                    "UPDATE deliveries SET status = 'delivering', due_at = ?, updated_at = ?"
                    " WHERE seq IN (SELECT value FROM json_each(?))",
                    (lease_until, now, orjson.dumps([c.delivery_seq for c in claims])),
                )
            next_due = conn.execute(
                f"SELECT MIN(due_at) FROM deliveries WHERE webhook_id = ? AND status IN {QUEUED}", (webhook_id,)
            ).fetchone()[0]
            claims.sort(key=lambda c: c.delivery_seq)
            return claims, next_due

        return await self.write(run, bounded=True)

    async def record(self, results: Sequence[AttemptResult]) -> None:
        """Record finished attempts and the decisions taken after them, in the next group commit."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._submit(_Job(None, future, results=list(results), rows=2 * len(results)))

    def _apply_results(self, conn: sqlite3.Connection, results: list[AttemptResult]) -> None:
        # A delivery pruned while its attempt was in flight leaves no attempt behind, and its seq, if reused
        # by a newer delivery, is not mistaken for it (column1 is the seq, column10 the delivery id).
        _insert_many(
            conn,
            "INSERT OR REPLACE INTO attempts (delivery_seq, number, started_at, duration_ms, status_code, error,"
            " error_detail, response_body, next_attempt_at) SELECT column1, column2, column3, column4, column5,"
            " column6, column7, column8, column9 FROM (VALUES {rows}) AS v"
            " WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = v.column1 AND d.id = v.column10)",
            [
                (
                    r.delivery_seq,
                    r.attempt.number,
                    r.attempt.started_at,
                    r.attempt.duration_ms,
                    r.attempt.status_code,
                    r.attempt.error,
                    r.attempt.error_detail,
                    r.attempt.response_body,
                    r.attempt.next_attempt_at,
                    r.delivery_id,
                )
                for r in results
            ],
        )
        # Only a delivery still leased moves on: one cancelled meanwhile stays cancelled. Of two results for one
        # delivery in a group (a lease ran out under a live attempt) the first wins, as it would one by one.
        first: dict[int, AttemptResult] = {}
        for r in results:
            first.setdefault(r.delivery_seq, r)
        _insert_many(
            conn,
            "UPDATE deliveries SET status = v.column1, attempt_count = v.column2, due_at = v.column3,"
            " updated_at = v.column4 FROM (VALUES {rows}) AS v"
            " WHERE deliveries.seq = v.column5 AND deliveries.id = v.column6 AND deliveries.status = 'delivering'",
            [
                (
                    r.status,
                    r.attempt.number,
                    r.due_at,
                    r.attempt.started_at + r.attempt.duration_ms / 1000,
                    r.delivery_seq,
                    r.delivery_id,
                )
                for r in first.values()
            ],
        )

    async def reclaim_in_flight(self, now: float) -> int:
        """At startup: deliveries a previous process left ``delivering`` are due again at once."""

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE deliveries SET status = 'pending', due_at = ?, updated_at = ? WHERE status = 'delivering'",
                (now, now),
            )
            return cursor.rowcount

        return await self.write(run)

    async def release(self, delivery_seqs: Sequence[int], now: float) -> None:
        """Give leased deliveries back (shutdown before their attempt started): due again at once."""

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE deliveries SET status = 'pending', due_at = ?, updated_at = ?"
                " WHERE seq = ? AND status = 'delivering'",
                [(now, now, seq) for seq in delivery_seqs],
            )

        await self.write(run, bounded=len(delivery_seqs) <= GROUP_ROWS)

    async def due_by_webhook(self) -> dict[str, float]:
        """The earliest due time of each webhook that has queued deliveries."""
        rows = await self._read(
            f"SELECT webhook_id, MIN(due_at) FROM deliveries WHERE status IN {QUEUED} GROUP BY webhook_id"
        )
        return {r[0]: float(r[1]) for r in rows}

    async def cancel_webhook_deliveries(self, webhook_id: str, now: float) -> int:
        """Cancel every delivery of a webhook that has not ended (kept, as ``cancelled``)."""

        def run(conn: sqlite3.Connection) -> int:
            return _cancel_queued(conn, webhook_id, now)

        return await self.write(run)

    async def prune(self, cutoff: float, batch: int = 1000) -> int:
        """Delete events ingested before ``cutoff`` whose deliveries all ended delivered or cancelled."""

        def run(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                """SELECT seq FROM events e WHERE ingested_at < ? AND NOT EXISTS (
                       SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq
                       AND d.status NOT IN ('succeeded', 'cancelled'))
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

        total = 0
        while (count := await self.write(run)) > 0:
            total += count
            if count < batch:
                break
        return total

    # -- webhooks declared in the config file -----------------------------------------------------------

    async def sync_config_webhooks(self, specs: dict[str, bytes], now: float) -> list[str]:
        """Make the config-declared webhooks in the store exactly ``specs``; cancel what removed ones left.

        Returns the ids of the webhooks removed.
        """

        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT id FROM webhooks WHERE source = 'config'").fetchall()
            removed = [r[0] for r in rows if r[0] not in specs]
            for webhook_id in removed:
                conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
                _cancel_queued(conn, webhook_id, now)
            conn.executemany(
                "INSERT INTO webhooks (id, source, spec, created_at, updated_at) VALUES (?, 'config', ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at"
                " WHERE webhooks.source = 'config'",
                [(webhook_id, spec, now, now) for webhook_id, spec in specs.items()],
            )
            return removed

        return await self.write(run)

    async def webhook_created_at(self) -> dict[str, float]:
        rows = await self._read("SELECT id, created_at FROM webhooks")
        return {r[0]: float(r[1]) for r in rows}

    # -- webhooks created through the management API ----------------------------------------------------
    # Their whole definition lives in ``spec`` (secrets included, so the relay can sign after a restart); the
    # reads are in ``StoreReads.api_webhooks``. Every statement is guarded by ``source = 'api'``: a
    # config-declared webhook is never changed here.

    async def insert_api_webhook(self, webhook_id: str, spec: bytes, now: float) -> bool:
        """Store a new API webhook; False when the id is taken (by any webhook)."""

        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO webhooks (id, source, spec, created_at, updated_at) VALUES (?, 'api', ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (webhook_id, spec, now, now),
            )
            return cursor.rowcount == 1

        return await self.write(run)

    async def update_api_webhook(
        self,
        webhook_id: str,
        spec: bytes,
        now: float,
        *,
        rotation: tuple[str | None, float | None] | None = None,
    ) -> bool:
        """Replace an API webhook's spec (and, given ``rotation``, its previous secret and until when it
        signs); False when there is no such API webhook."""

        def run(conn: sqlite3.Connection) -> bool:
            if rotation is None:
                cursor = conn.execute(
                    "UPDATE webhooks SET spec = ?, updated_at = ? WHERE id = ? AND source = 'api'",
                    (spec, now, webhook_id),
                )
            else:
                cursor = conn.execute(
                    "UPDATE webhooks SET spec = ?, updated_at = ?, previous_secret = ?, previous_secret_until = ?"
                    " WHERE id = ? AND source = 'api'",
                    (spec, now, rotation[0], rotation[1], webhook_id),
                )
            return cursor.rowcount == 1

        return await self.write(run)

    async def delete_api_webhook(self, webhook_id: str, now: float) -> int | None:
        """Delete an API webhook and cancel its unfinished deliveries (kept, as ``cancelled``), in one
        transaction. Returns how many were cancelled, or None when there is no such API webhook."""

        def run(conn: sqlite3.Connection) -> int | None:
            cursor = conn.execute("DELETE FROM webhooks WHERE id = ? AND source = 'api'", (webhook_id,))
            if cursor.rowcount != 1:
                return None
            conn.execute("DELETE FROM oauth_tokens WHERE webhook_id = ?", (webhook_id,))
            return _cancel_queued(conn, webhook_id, now)

        return await self.write(run)

    # -- manual replay and re-drive -----------------------------------------------------------------------

    async def add_deliveries(self, event_id: str, webhook_ids: Sequence[str], now: float) -> list[int] | None:
        """New pending deliveries of a stored event, due now (a replay); their seqs, or None without the event."""

        def run(conn: sqlite3.Connection) -> list[int] | None:
            rows = conn.execute("SELECT seq FROM events WHERE id = ?", (event_id,)).fetchall()
            if not rows:
                return None
            seqs: list[int] = []
            for webhook_id in webhook_ids:
                inserted = conn.execute(
                    "INSERT INTO deliveries (id, event_seq, webhook_id, status, due_at, created_at, updated_at)"
                    " VALUES (?, ?, ?, 'pending', ?, ?, ?) RETURNING seq",
                    (new_id("dlv", now), int(rows[0][0]), webhook_id, now, now, now),
                ).fetchall()
                seqs.extend(int(r[0]) for r in inserted)
            return seqs

        return await self.write(run)

    async def redrive(self, now: float, webhook_ids: Sequence[str], *, include_dead: bool) -> dict[str, int]:
        """Parked (and, with ``include_dead``, dead) deliveries of these webhooks are due again now.

        Returns how many were re-driven per webhook.
        """
        statuses = "('failed', 'dead')" if include_dead else "('failed')"

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            counts: dict[str, int] = {}
            for chunk in _chunks(list(webhook_ids), 500):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"UPDATE deliveries SET status = 'pending', due_at = ?, updated_at = ?"
                    f" WHERE status IN {statuses} AND webhook_id IN ({marks}) RETURNING webhook_id",
                    (now, now, *chunk),
                ).fetchall()
                for r in rows:
                    counts[r[0]] = counts.get(r[0], 0) + 1
            return counts

        return await self.write(run)

    # -- refresh tokens (RefreshTokenStore) -------------------------------------------------------------

    async def load_refresh_token(self, webhook_id: str) -> str | None:
        rows = await self._read("SELECT refresh_token FROM oauth_tokens WHERE webhook_id = ?", (webhook_id,))
        return str(rows[0][0]) if rows else None

    async def save_refresh_token(self, webhook_id: str, token: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO oauth_tokens (webhook_id, refresh_token, updated_at) VALUES (?, ?, unixepoch())"
                " ON CONFLICT (webhook_id) DO UPDATE SET refresh_token = excluded.refresh_token,"
                " updated_at = excluded.updated_at",
                (webhook_id, token),
            )

        await self.write(run)

    # -- health ------------------------------------------------------------------------------------------

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

        await self.write(run)
        try:
            free = os.statvfs(self.path.parent)
        except OSError as exc:
            raise StoreUnavailable(f"cannot stat the store's folder: {exc}") from exc
        if free.f_bavail * free.f_frsize < min_free_bytes:
            raise StoreUnavailable(f"the disk holding {self.path} has less than {min_free_bytes} bytes free")


def _cancel_queued(conn: sqlite3.Connection, webhook_id: str, now: float) -> int:
    """Cancel a webhook's deliveries that have not ended (kept, as ``cancelled``); returns how many."""
    cursor = conn.execute(
        f"UPDATE deliveries SET status = 'cancelled', due_at = NULL, updated_at = ?"
        f" WHERE webhook_id = ? AND status IN {QUEUED}",
        (now, webhook_id),
    )
    return cursor.rowcount


GROUP_ROWS = 2048  # a group stops growing at about this many rows (one job is never split)


def _unused_event_id(conn: sqlite3.Connection, known: dict[str, int], now: float) -> str:
    """A generated event id that no stored event and no event of this group has."""
    while True:
        candidate = new_event_id(now)
        if (
            candidate not in known
            and conn.execute("SELECT 1 FROM events WHERE id = ?", (candidate,)).fetchone() is None
        ):
            return candidate


def _file_ids(paths: list[str]) -> dict[str, tuple[int, int]]:
    """The (st_dev, st_ino) of each file that exists: what the path must still name for a commit to count."""
    ids: dict[str, tuple[int, int]] = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            found = os.stat(path)
            ids[path] = (found.st_dev, found.st_ino)
    return ids


def _fail(jobs: list[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)


@functools.lru_cache(maxsize=64)
def _values_sql(statement: str, width: int, count: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    values = ",".join([row] * count)
    return statement.replace("{rows}", values) if "{rows}" in statement else f"{statement} {values}"


def _insert_many(conn: sqlite3.Connection, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Run ``statement`` with ``rows`` as a multi-row VALUES list (at ``{rows}``, else at the end).

    One statement step per chunk instead of one per row. Chunk sizes are powers of two (512, 256, ... 1), so a
    handful of distinct statements are prepared once and then come from the statement cache.
    """
    start = 0
    while start < len(rows):
        size = min(_CHUNK, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        width = len(chunk[0])
        conn.execute(_values_sql(statement, width, size), [value for row in chunk for value in row])
        start += size


_CHUNK = 512  # rows per statement: 512 x 10 columns stays far below SQLite's 32766 bound parameters
