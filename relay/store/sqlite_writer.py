"""The SQLite backend's group commit: one writer connection, fed by one writer task.

Callers submit jobs and await them; the writer task drains whatever is queued at that moment into one group,
committed as one transaction, so concurrent ingest requests, claims and attempt results share commits. A job names
the function that applies it; the jobs of a group that share a function are applied together, in one call
(multi-row ``VALUES``): a handful of statements per group whatever its size.

A group of bounded jobs (ingests, attempt results, claims) runs its statements on the event loop; a small one
(``LOOP_COMMIT_ROWS``) its COMMIT too, a larger one hands its COMMIT to the writer thread. A group of open-ended jobs
(prunes, re-drives, anything else) runs whole on the thread, in one call, so the loop never waits on it. Either way:
one commit and at most one thread hand-off per group, however many jobs it holds. The GIL is why: a thread that
runs the statements gives it up at every statement step and waits to take it back from the busy loop, and even one
hand-off to the thread and back cost a small group 0.8 ms at the median while its COMMIT took 0.09 ms. Groups are
of one kind, and stop growing at ``GROUP_ROWS``, which bounds how long the loop runs statements. A COMMIT on the
loop only writes the WAL (``synchronous = NORMAL``, no automatic checkpoint): the fsync is the syncer's, the
checkpoint the checkpointer's (``sqlite_checkpointer``), each on a thread of its own.

With ``durability = "full"`` a group is answered only once its commit is on disk, but the writer does not wait for
that: its COMMIT writes the WAL without an fsync, and the WAL syncer (``sqlite_syncer``, on its own thread) fsyncs
it while the writer commits the next group, then answers every group that committed before the fsync began.

A group is answered only if its commit landed in the store: after each COMMIT the writer checks that the path still
names the files it opened (the database and its WAL). A file removed or replaced under the running relay makes the
store lost for good: that group and every later write fail with ``StoreUnavailable`` (the API answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from relay.errors import StoreUnavailable
from relay.store.sqlite_checkpointer import Checkpointer
from relay.store.sqlite_schema import translate
from relay.store.sqlite_syncer import WalSyncer

log = structlog.get_logger()

T = TypeVar("T")
GROUP_ROWS = 2048  # a group stops growing at about this many rows (one job is never split)
# A bounded group of at most this many rows COMMITs on the loop (a few WAL pages written, ~0.1 ms), skipping the
# hop to the thread and back (0.8 ms at the median under load: ingest→attempt 2.2–2.4 → 1.0–1.3 ms at 1,000/s); a
# larger one on the thread, where its page writes overlap the loop's parsing of the next requests (single ingest's
# groups of ~32: 47–48 % of the bare handler at 256 here, 50 % at 16).
LOOP_COMMIT_ROWS = 16

# Applies every job of a group that names it, inside the group's transaction; one outcome per job, in order.
Apply = Callable[[sqlite3.Connection, list["Job"]], list[Any]]


@dataclass(slots=True)
class Job:
    apply: Apply
    payload: Any
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    now: float = 0.0
    on_loop: bool = True  # its statements may run on the event loop: bounded work (see the module docstring)
    rows: int = 1  # about how many rows it writes: what a group's size is counted in
    # Called on the loop with the outcome the moment the group's commit is durable (None when it failed), before
    # ``future`` resolves, and even when nobody awaits ``future`` any more (its caller was cancelled).
    on_commit: Callable[[Any], None] | None = None
    # Called on the loop with the outcome as soon as the group's statements ran, before its COMMIT is durable (or,
    # for a group run on the writer thread, once it committed); once. For work that may start early because a crash
    # before the commit undoes it harmlessly (a lease the commit would have given: see ``SqliteStore.record``).
    on_applied: Callable[[Any], None] | None = None


def apply_each(conn: sqlite3.Connection, jobs: list[Job]) -> list[Any]:
    """For jobs whose payload is a function of the connection: each runs alone, in order."""
    return [job.payload(conn) for job in jobs]


class GroupWriter:
    """``sync_wal``: answer a group only once an fsync of the WAL covers its commit (``durability = "full"``), done
    by the WAL syncer, not by the COMMIT (see ``sqlite_syncer``). Without it (or out of WAL mode) a group is
    answered when its COMMIT returns, as durable as the connection's ``synchronous`` makes it."""

    def __init__(self, path: Path, connect: Callable[[], sqlite3.Connection], *, sync_wal: bool = False) -> None:
        self.path = path
        self._connect = connect
        self._sync_wal = sync_wal
        self._syncer: WalSyncer | None = None
        self._checkpointer: Checkpointer | None = None  # in WAL mode: the writer's COMMITs never checkpoint
        self._commit_number = 0  # the syncer's number for the last COMMIT (writer thread; read on the loop after)
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.busy_timeout = 5.0  # seconds a thread-side group waits for a write lock held by another connection
        self.commits = 0  # group transactions committed
        self._files: dict[str, tuple[int, int]] = {}  # path -> (st_dev, st_ino) of the files the writer opened
        self._lost: str | None = None  # why the store is gone (see _commit); once set, it stays set

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-store-writer")
        self._conn = await self.on_thread(self._connect)
        conn = self._conn
        wal = await self.on_thread(lambda: conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal")
        self._files = _file_ids([str(self.path), f"{self.path}-wal"] if wal else [str(self.path)])
        wal_file = f"{self.path}-wal" in self._files  # WAL mode, and its file is there to fsync
        if wal_file and _file_ids([f"{self.path}-shm"]):  # and the WAL-index whose header counts the frames
            self._checkpointer = Checkpointer(self.path)
            await self.on_thread(lambda: conn.execute("PRAGMA wal_autocheckpoint = 0"))
        if self._sync_wal and wal_file:
            self._syncer = WalSyncer(f"{self.path}-wal")
            self._syncer.open()  # before the fsync leaves the COMMIT: nothing committed from here on goes unsynced
            await self.on_thread(lambda: conn.execute("PRAGMA synchronous = NORMAL"))
        self._task = asyncio.create_task(self._write_loop(), name="store-writer")

    async def close(self) -> None:
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._syncer is not None:
            await self._syncer.close()  # the groups committed so far are answered once their fsync returns
            self._syncer = None
        if self._checkpointer is not None:
            await self._checkpointer.close()
            self._checkpointer = None
        if self._conn is not None:
            conn = self._conn
            with contextlib.suppress(sqlite3.Error):
                await self.on_thread(conn.close)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
        self._conn = self._thread = None

    async def on_thread(self, fn: Callable[[], T]) -> T:
        assert self._thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def stopped(self) -> None:
        """Return when the writer task ends (it should not, before ``close``)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    # -- submitting --------------------------------------------------------------------------------------

    def submit(self, job: Job) -> asyncio.Future[Any]:
        if self._task is None or self._task.done():
            raise StoreUnavailable("the store is closed")
        if self._lost is not None:
            raise StoreUnavailable(self._lost)
        self._queue.put_nowait(job)
        return job.future

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, bounded: bool = False) -> T:
        """Run ``fn`` inside the next group transaction; its result once committed.

        ``fn`` runs on the writer thread, unless ``bounded`` says its work is small whatever the store holds (a
        claim of at most ``limit`` rows): then it may run on the event loop (see the module docstring).
        """
        result: T = await self.submit(Job(apply_each, fn, on_loop=bounded))
        return result

    # -- the writer --------------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        held: Job | None = None  # taken from the queue, but of the other kind than the group it came after
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

    async def _commit_group(self, jobs: list[Job]) -> None:
        if self._lost is not None:  # queued before the loss was found
            _fail(jobs, StoreUnavailable(self._lost))
            return
        try:
            outcomes = await self._run_on_loop(jobs) if jobs[0].on_loop else None
            if outcomes is None:
                outcomes = await self.on_thread(lambda: self._run_group(jobs))
        except sqlite3.Error as exc:
            log.error("store_write_failed", error=str(exc), jobs=len(jobs))
            _fail(jobs, translate(exc))
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
        self.commits += 1
        if self._checkpointer is not None:
            self._checkpointer.after_commit()
        _applied(jobs, outcomes)  # a group run on the thread: now (each job's hook runs once)
        if self._syncer is None:
            _answer(jobs, outcomes)
            return

        def durable(error: BaseException | None) -> None:
            if error is None:
                _answer(jobs, outcomes)
                return
            if self._lost is None:
                self._lost = f"fsync of the store's WAL failed: {error}"
            _fail(jobs, StoreUnavailable(self._lost))

        self._syncer.when_durable(self._commit_number, durable)

    async def _run_on_loop(self, jobs: list[Job]) -> list[Any] | None:
        """The group's statements on the loop, and its COMMIT too when the group is small and the COMMIT cannot
        checkpoint (else on the writer thread). None when another connection holds the write lock: the group then
        runs on the thread, where waiting for it holds up no one."""
        conn = self._conn
        assert conn is not None
        # Our checkpointer's restarting step holds writers off for a millisecond or two: wait for it here and try
        # again, rather than on the thread, whose busy handler sleeps 1, 2, 5 … ms between tries (latency p99 at
        # 1,000 events/s 6.5-9.3 -> 5.1-5.7 ms in three alternated pairs).
        if not _begin(conn) and (
            self._checkpointer is None or not await self._checkpointer.finished() or not _begin(conn)
        ):
            return None
        try:
            outcomes = _statements(conn, jobs)
            _applied(jobs, outcomes)
            if self._checkpointer is not None and sum(job.rows for job in jobs) <= LOOP_COMMIT_ROWS:
                self._commit(conn)
            else:
                await self.on_thread(lambda: self._commit(conn))
        except asyncio.CancelledError:
            raise  # the COMMIT may still be running on the thread: the connection is not ours to touch
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return outcomes

    def _run_group(self, jobs: list[Job]) -> list[Any]:
        """On the writer thread: every job of the group in one transaction; their outcomes in job order."""
        conn = self._conn
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = _statements(conn, jobs)
                self._commit(conn)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA busy_timeout = 0")
        return outcomes

    def _commit(self, conn: sqlite3.Connection) -> None:
        """COMMIT the group, then make sure it landed in the store and not in a file that was removed or replaced
        meanwhile (sets ``_lost``; the loop fails the group). One stat per file opened, per group: a few
        microseconds against the COMMIT's WAL write."""
        conn.execute("COMMIT")
        if self._syncer is not None:
            self._commit_number = self._syncer.committed()
        for path, opened in self._files.items():
            try:
                found = os.stat(path)
            except OSError:
                found = None
            if found is None or (found.st_dev, found.st_ino) != opened:
                self._lost = f"store file was removed or replaced: {path}"
                return


def _statements(conn: sqlite3.Connection, jobs: list[Job]) -> list[Any]:
    """Every job of the group, inside its transaction, applied together with the jobs that share its function
    (in the order the functions first appear); their outcomes in job order."""
    by_apply: dict[Apply, list[int]] = {}
    for index, job in enumerate(jobs):
        by_apply.setdefault(job.apply, []).append(index)
    outcomes: list[Any] = [None] * len(jobs)
    for apply, indexes in by_apply.items():
        for index, outcome in zip(indexes, apply(conn, [jobs[i] for i in indexes]), strict=True):
            outcomes[index] = outcome
    return outcomes


def _begin(conn: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE without waiting (busy_timeout is 0 outside _run_group): False when another connection holds
    the write lock."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return False
        raise
    return True


def _file_ids(paths: list[str]) -> dict[str, tuple[int, int]]:
    """The (st_dev, st_ino) of each file that exists: what the path must still name for a commit to count."""
    ids: dict[str, tuple[int, int]] = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            found = os.stat(path)
            ids[path] = (found.st_dev, found.st_ino)
    return ids


def _applied(jobs: list[Job], outcomes: list[Any]) -> None:
    """Run each job's ``on_applied`` (once: it is cleared); a fault is logged, never the writer's."""
    for job, outcome in zip(jobs, outcomes, strict=True):
        if (hook := job.on_applied) is not None:
            job.on_applied = None
            try:
                hook(outcome)
            except Exception:
                log.exception("store_applied_hook_failed")


def _committed(job: Job, outcome: Any) -> None:
    """Run the job's ``on_commit``; its fault is logged, never the writer's or the other jobs'."""
    if job.on_commit is not None:
        try:
            job.on_commit(outcome)
        except Exception:
            log.exception("store_commit_hook_failed")


def _answer(jobs: list[Job], outcomes: list[Any]) -> None:
    for job, outcome in zip(jobs, outcomes, strict=True):
        _committed(job, outcome)
        if not job.future.done():
            job.future.set_result(outcome)


def _fail(jobs: list[Job], error: BaseException) -> None:
    for job in jobs:
        _committed(job, None)
        if not job.future.done():
            job.future.set_exception(error)
