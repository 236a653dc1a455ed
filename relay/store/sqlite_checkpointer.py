"""WAL checkpoints off the writer connection: the checkpointer.

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past ``wal_autocheckpoint`` pages: that
COMMIT then syncs the WAL, copies its pages into the database file and syncs that, for milliseconds. The writer runs
small groups' COMMITs on the event loop (see ``sqlite_writer``), where that would stall every request, so its
connection turns the automatic checkpoint off and this checkpointer runs one instead, on a thread and a connection
of its own, once a commit leaves ``limit`` frames in the WAL not yet moved into the database file (SQLite's own
default: 1,000). It reads that count where every SQLite connection to the file reads it, the WAL-index header at the
start of the ``-shm`` file (``mxFrame`` - ``nBackfill``, https://www.sqlite.org/walformat.html §2.2; a layout every
SQLite version since 3.7.0 shares, since connections of different versions may use one database at once): one
``pread`` a commit. The WAL file's size would not do: SQLite reuses the file from its start after a checkpoint and
never shrinks it, and a checkpoint asked for at every commit past the first limit (2,174 in ten seconds at 1,000
events/s) fought the syncer's fsync for the disk.

Each checkpoint is two: a ``PASSIVE`` one, which takes no lock a writer or reader waits for (the writer goes on
committing) and moves most frames; then a ``RESTART`` one, which holds writers off while it moves the few frames
written meanwhile and waits (``RESTART_WAIT`` at most) for readers to leave the WAL, so that the next write starts
the WAL over from its beginning. A passive one alone never catches up with a writer that commits every millisecond,
and the WAL then grew without end (121 MB in ten seconds at 1,000 events/s); SQLite's automatic checkpoint runs
inside the writer's COMMIT, holding the writer off for the whole copy. A group that finds the write lock held runs
on the writer thread, which waits for it (``sqlite_writer``): the loop never does. A reader still in the WAL after
``RESTART_WAIT`` only delays the restart to a later checkpoint. Durability is unchanged: with ``synchronous =
NORMAL`` a checkpoint syncs the WAL before it copies and the database file after, before it counts any frame as
moved (see ``sqlite_syncer``). A checkpoint that fails (the disk is full, the file went away) loses nothing: the
frames stay in the WAL, which grows until the next one succeeds; it is logged, and tried again after a later commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

log = structlog.get_logger()

CHECKPOINT_FRAMES = 1000  # SQLite's own wal_autocheckpoint default
RESTART_WAIT_MS = 20  # how long the restarting checkpoint waits for the writer's group and for readers
# The WAL-index header (native byte order): mxFrame, the last valid frame, at offset 16 of its first copy; the
# checkpoint info follows the header's two 48-byte copies, nBackfill, the frames already moved, first (offset 96).
_MX_FRAME, _N_BACKFILL, _READ = struct.Struct("=I"), struct.Struct("=I"), 100


class Checkpointer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.limit = CHECKPOINT_FRAMES  # frames waiting in the WAL past which a commit asks for a checkpoint
        self.checkpoints = 0  # checkpoints run (whether or not they could move every frame)
        self._shm = os.open(f"{path}-shm", os.O_RDONLY | os.O_CLOEXEC)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-store-checkpointer")
        self._conn: sqlite3.Connection | None = None  # opened and used on the thread only
        self._running: asyncio.Future[None] | None = None

    def waiting(self) -> int:
        """Frames in the WAL not yet moved into the database file."""
        header = os.pread(self._shm, _READ, 0)
        if len(header) < _READ:
            return 0  # not set up yet
        return int(_MX_FRAME.unpack_from(header, 16)[0]) - int(_N_BACKFILL.unpack_from(header, 96)[0])

    def after_commit(self) -> None:
        """On the loop, after a commit: start a checkpoint when the WAL holds ``limit`` frames or more not yet moved
        and none is running."""
        if self._running is not None or self.waiting() < self.limit:
            return
        self._running = asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)
        self._running.add_done_callback(self._done)

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def _done(self, future: asyncio.Future[None]) -> None:
        self._running = None
        if future.cancelled():
            return
        self.checkpoints += 1
        if (error := future.exception()) is not None:
            log.warning("store_checkpoint_failed", path=str(self.path), error=str(error))

    async def close(self) -> None:
        """Wait for a checkpoint under way, then close the connection on its thread."""
        if self._running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._running)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_connection)
        self._thread.shutdown(wait=False)
        os.close(self._shm)

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
