"""Durability ``full`` with the fsync off the writer's path: the WAL syncer.

With ``durability = "full"`` the writer connection runs ``PRAGMA synchronous = NORMAL`` (WAL mode only): a COMMIT
writes the transaction's frames into the ``-wal`` file and returns without an fsync, so the writer starts the next
group at once. This syncer, on its own thread, fsyncs the WAL through a descriptor of its own (an fsync on any
descriptor of a file flushes that file) and, when an fsync returns, tells the loop that every commit counted before
it began is durable; only then are those groups answered (their futures, their ``on_commit`` hooks). Commits that
pile up during an fsync share the next one.

Why an answered group is on disk, even after a power loss:
- its frames were written into the WAL file before its COMMIT returned, the fsync began after that, and the fsync
  returned before the answer: the frames, and the commit frame that ends them, are on disk;
- a checkpoint may move frames into the database file and later let the WAL be reused over them, but in WAL mode
  with ``synchronous = NORMAL`` SQLite syncs the WAL before a checkpoint and the database file after it, before it
  counts the frames as moved (``nBackfill``) and so before the WAL can be reset: the frames are in the synced
  database file by then;
- a power loss before the fsync loses only groups not answered yet, and WAL recovery reads up to the last intact
  commit frame in order (checksums chain the frames), so a later group can never survive without an earlier one.
An fsync that fails proves nothing about what it covered, nor (pages left marked clean) about later ones: the
groups waiting on it fail ``StoreUnavailable``, and the writer then treats the store as lost for good.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger()

# Told on the loop when a commit is durable (None) or can no longer be (the error).
Durable = Callable[[BaseException | None], None]


class WalSyncer:
    """Counts the writer's commits (``committed``, on the writer thread) and answers each once an fsync of the WAL
    that began after it returned (``when_durable``, on the loop)."""

    def __init__(self, wal_path: str) -> None:
        self.wal_path = wal_path
        self.fsync: Callable[[int], None] = os.fsync  # a seam for tests: an fsync that blocks or fails
        self.fsyncs = 0  # fsyncs that returned; groups per fsync = commits / fsyncs
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._finished: asyncio.Future[None] | None = None
        self._wake = threading.Condition()
        self._commits = 0  # commits counted (writer thread, under _wake)
        self._closing = False  # under _wake
        self._synced = 0  # the last commit known durable (loop)
        self._error: BaseException | None = None  # the fsync that failed (loop); once set, it stays set
        self._waiting: collections.deque[tuple[int, Durable]] = collections.deque()  # ascending commits (loop)

    def open(self) -> None:
        """On the loop: open the WAL (it must exist) and start the syncer thread."""
        self._loop = asyncio.get_running_loop()
        self._fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
        self._finished = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="relay-store-syncer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Sync every commit counted so far (answering its group), then stop the thread and close the WAL."""
        if self._thread is None:
            return
        with self._wake:
            self._closing = True
            self._wake.notify()
        assert self._finished is not None
        await self._finished
        self._thread = None
        os.close(self._fd)
        self._fd = -1

    # -- the writer thread ---------------------------------------------------------------------------------

    def committed(self) -> int:
        """On the writer thread, right after a COMMIT returned: the commit's number, for ``when_durable``."""
        with self._wake:
            self._commits += 1
            self._wake.notify()
            return self._commits

    # -- the loop ------------------------------------------------------------------------------------------

    def when_durable(self, commit: int, durable: Durable) -> None:
        """Call ``durable`` on the loop once ``commit`` is on disk (None), or with the error that keeps it off."""
        if commit <= self._synced:
            durable(None)
        elif self._error is not None:
            durable(self._error)
        else:
            self._waiting.append((commit, durable))

    def _synced_up_to(self, commit: int) -> None:
        self._synced = commit
        while self._waiting and self._waiting[0][0] <= commit:
            self._waiting.popleft()[1](None)

    def _sync_failed(self, error: BaseException) -> None:
        self._error = error
        log.error("store_sync_failed", path=self.wal_path, error=str(error), groups=len(self._waiting))
        while self._waiting:
            self._waiting.popleft()[1](error)

    def _finish(self) -> None:
        assert self._finished is not None
        if not self._finished.done():
            self._finished.set_result(None)

    # -- the syncer thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        synced = 0
        try:
            while True:
                with self._wake:
                    while self._commits == synced and not self._closing:
                        self._wake.wait()
                    if self._commits == synced:
                        return  # closing, and nothing left to sync
                    covered = self._commits  # every commit counted before this fsync begins
                try:
                    self.fsync(self._fd)
                except Exception as exc:
                    self._post(self._sync_failed, exc)
                    return
                synced = covered
                self.fsyncs += 1
                self._post(self._synced_up_to, covered)
        finally:
            self._post(self._finish)

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to answer
            self._loop.call_soon_threadsafe(fn, *args)
