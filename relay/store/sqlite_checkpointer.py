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

Most checkpoints are ``PASSIVE``: they take no lock a writer or reader waits for (the writer goes on committing)
and move what was committed when they began. They keep the frames waiting few, but never let the WAL start over: a
writer that commits every millisecond always has frames beyond the last one moved, and the WAL file grew without
end (121 MB in ten seconds at 1,000 events/s). So once the WAL holds ``RESTART_FRAMES`` frames (about 40 MB with
4 KiB pages), the checkpoint is a ``PASSIVE`` one and then a ``RESTART`` one, which holds writers off while it moves
the few frames written meanwhile and syncs the database file, and waits (``RESTART_WAIT_MS`` at most) for readers
to leave the WAL, so that the next write starts the WAL over from its beginning. Each restart holds the writer for
a millisecond or two (the writer waits for it on the loop and tries again: ``sqlite_writer``). Restarting at every
1,000 frames held about 100 groups in ten seconds at 1,000 events/s and its checkpoints took 400-450 ms; restarting
at 10,000, 2 groups and 185 ms. A reader still in the WAL after ``RESTART_WAIT_MS`` only delays the restart to a
later checkpoint. Durability is unchanged: with ``synchronous = NORMAL`` a checkpoint syncs the WAL before it copies
and the database file after, before it counts any frame as moved (see ``sqlite_syncer``). A checkpoint that fails
(the disk is full, the file went away) loses nothing: the frames stay in the WAL, which grows until the next one
succeeds; it is logged, and tried again after a later commit.
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

CHECKPOINT_FRAMES = 1000  # frames waiting to be moved that start a checkpoint: SQLite's own wal_autocheckpoint
RESTART_FRAMES = 10_000  # frames in the WAL that make the checkpoint restart it (groups held: ~100 -> 2, see above)
RESTART_WAIT_MS = 20  # how long the restarting checkpoint waits for the writer's group and for readers
# The WAL-index header (native byte order): mxFrame, the last valid frame, at offset 16 of its first copy; the
# checkpoint info follows the header's two 48-byte copies, nBackfill, the frames already moved, first (offset 96).
_MX_FRAME, _N_BACKFILL, _READ = struct.Struct("=I"), struct.Struct("=I"), 100


class Checkpointer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.limit = CHECKPOINT_FRAMES  # frames waiting in the WAL past which a commit asks for a checkpoint
        self.restart_at = RESTART_FRAMES  # frames in the WAL past which the checkpoint restarts it
        self.checkpoints = 0  # checkpoints run (whether or not they could move every frame)
        self._shm = os.open(f"{path}-shm", os.O_RDONLY | os.O_CLOEXEC)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-store-checkpointer")
        self._conn: sqlite3.Connection | None = None  # opened and used on the thread only
        self._running: asyncio.Future[None] | None = None

    def frames(self) -> tuple[int, int]:
        """Frames in the WAL, and of them those already moved into the database file."""
        header = os.pread(self._shm, _READ, 0)
        if len(header) < _READ:
            return 0, 0  # not set up yet
        return int(_MX_FRAME.unpack_from(header, 16)[0]), int(_N_BACKFILL.unpack_from(header, 96)[0])

    def after_commit(self) -> None:
        """On the loop, after a commit: start a checkpoint when the WAL holds ``limit`` frames or more not yet moved,
        or ``restart_at`` in all, and none is running."""
        if self._running is not None:
            return
        frames, moved = self.frames()
        restart = frames >= self.restart_at
        if frames - moved < self.limit and not restart:
            return
        self._running = asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint, restart)
        self._running.add_done_callback(self._done)

    async def finished(self) -> bool:
        """Wait for the checkpoint under way, if one is; whether there was one."""
        if (running := self._running) is None:
            return False
        with contextlib.suppress(Exception):
            await asyncio.shield(running)
        return True

    def _checkpoint(self, restart: bool) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if restart:
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
        await self.finished()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_connection)
        self._thread.shutdown(wait=False)
        os.close(self._shm)

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
