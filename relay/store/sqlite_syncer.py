"""Durability ``full`` with the fsync off the writer's path: the WAL syncer.

With ``durability = "full"`` the writer connection runs ``PRAGMA synchronous = NORMAL`` (WAL mode only): a COMMIT
writes the transaction's frames into the ``-wal`` file and returns without an fsync, so the writer starts the next
group at once. The syncer fsyncs the WAL through a descriptor of its own (an fsync on any descriptor of a file
flushes that file) and, when an fsync returns, tells the loop that every commit counted before it began is durable;
only then are those groups answered (their futures, their ``on_commit`` hooks). Commits that pile up during an fsync
share the next one.

The fsyncs run in a helper process (``HELPER``: a few lines of Python without imports beyond ``os``), told over a
pipe which commit to cover and answering over another, which the loop watches like a socket. Not in a thread: a
thread needs the GIL twice an fsync (to wake, and to answer), each time making the busy loop stop and wait until
the thread ran; in the end-to-end profile a tenth of the loop's samples sat in those waits, and at 1,000 events/s
the hand-back alone took 0.3-0.4 ms at the median. The process shares nothing with the loop but two pipes. If it
dies, nothing it did not answer counts as durable: the store is lost (``StoreUnavailable``), as after a failed
fsync; it exits itself when the relay goes (its request pipe ends).

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
import errno
import os
import struct
import subprocess
import sys
from collections.abc import Callable

import structlog

log = structlog.get_logger()

# Told on the loop when a commit is durable (None) or can no longer be (the error).
Durable = Callable[[BaseException | None], None]

# The helper process: argv holds the WAL's descriptor and the two pipes'. For each request (a commit number) it
# fsyncs and answers the number with 0, or with the errno of the failed fsync, and then exits. It ends only when
# its request pipe does: the signals that stop the relay (Ctrl-C reaches the terminal's whole process group,
# systemd's stop every process of the unit) leave it running until the relay has stopped and its last groups are
# answered.
HELPER = """
import os, signal, struct, sys
for name in ("SIGINT", "SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
wal, requests, answers = map(int, sys.argv[1:4])
try:
    while len(request := os.read(requests, 8)) == 8:
        try:
            os.fsync(wal)
        except OSError as exc:
            os.write(answers, request + struct.pack("=i", exc.errno or -1))
            break
        os.write(answers, request + struct.pack("=i", 0))
except BrokenPipeError:
    pass  # the relay is gone
"""
_REQUEST, _ANSWER = struct.Struct("=q"), struct.Struct("=qi")


class WalSyncer:
    """Counts the writer's commits (``committed``) and answers each once an fsync of the WAL that began after it
    returned (``when_durable``, on the loop)."""

    def __init__(self, wal_path: str) -> None:
        self.wal_path = wal_path
        self.fsyncs = 0  # fsyncs that returned; groups per fsync = commits / fsyncs
        self._process: subprocess.Popen[bytes] | None = None
        self._requests = self._answers = -1  # our ends of the two pipes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commits = 0  # commits counted (after each COMMIT returned, by whoever ran it)
        self._asked = 0  # the commit the fsync under way covers (0: none under way)
        self._synced = 0  # the last commit known durable
        self._error: BaseException | None = None  # the fsync that failed, or the helper's end; once set, it stays
        self._waiting: collections.deque[tuple[int, Durable]] = collections.deque()  # ascending commits
        self._drained: asyncio.Future[None] | None = None  # close() waits on it for the last answer

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def open(self) -> None:
        """On the loop: start the helper process on the WAL (it must exist) and watch its answers."""
        self._loop = asyncio.get_running_loop()
        wal = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
        their_requests, self._requests = os.pipe()
        self._answers, their_answers = os.pipe()
        try:
            ends = (wal, their_requests, their_answers)
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", HELPER, *map(str, ends)],
                pass_fds=ends,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal is the relay's to handle, not the helper's
            )
        except BaseException:
            os.close(self._requests)
            os.close(self._answers)
            raise
        finally:
            for fd in (wal, their_requests, their_answers):
                os.close(fd)
        os.set_blocking(self._answers, False)
        self._loop.add_reader(self._answers, self._on_answer)

    async def close(self) -> None:
        """Sync every commit counted so far (answering its group), then end the helper."""
        if self._process is None:
            return
        if self._error is None and self._synced < self._commits:
            self._drained = asyncio.get_running_loop().create_future()
            self._ask()
            await self._drained
        assert self._loop is not None
        self._loop.remove_reader(self._answers)
        os.close(self._requests)  # the helper reads the end of its requests and exits
        os.close(self._answers)
        process, self._process = self._process, None
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)

    # -- the writer's side -------------------------------------------------------------------------------

    def committed(self) -> int:
        """Right after a COMMIT returned (on the loop, or on the writer thread for a group run there; never two at
        once): the commit's number, for ``when_durable``."""
        self._commits += 1
        return self._commits

    def when_durable(self, commit: int, durable: Durable) -> None:
        """On the loop: call ``durable`` once ``commit`` is on disk (None), or with the error that keeps it off."""
        if commit <= self._synced:
            durable(None)
        elif self._error is not None:
            durable(self._error)
        else:
            self._waiting.append((commit, durable))
            self._ask()

    # -- on the loop -------------------------------------------------------------------------------------

    def _ask(self) -> None:
        """Unless an fsync is under way, ask for one covering every commit counted so far."""
        if self._asked or self._error is not None or self._synced >= self._commits:
            return
        self._asked = self._commits
        try:
            os.write(self._requests, _REQUEST.pack(self._asked))  # 8 bytes into an empty pipe: never blocks
        except OSError as exc:
            self._sync_failed(OSError(exc.errno, f"the WAL syncer process is gone: {exc}"))

    def _on_answer(self) -> None:
        try:
            answer = os.read(self._answers, _ANSWER.size)
        except BlockingIOError:
            return
        except OSError as exc:
            answer, failure = b"", str(exc)
        else:
            failure = "it exited"
        if len(answer) != _ANSWER.size:
            self._sync_failed(OSError(errno.EPIPE, f"the WAL syncer process is gone: {failure}"))
            return
        covered, error = _ANSWER.unpack(answer)
        self._asked = 0
        if error:
            self._sync_failed(OSError(error, os.strerror(error)))
            return
        self.fsyncs += 1
        self._synced = covered
        while self._waiting and self._waiting[0][0] <= covered:
            self._waiting.popleft()[1](None)
        self._ask()
        self._wake_close()

    def _sync_failed(self, error: BaseException) -> None:
        """Once: fail what waits, and stop listening to the helper (after a failed fsync it exits, and its end must
        not be reported as a second failure)."""
        if self._error is not None:
            return
        self._error = error
        assert self._loop is not None
        self._loop.remove_reader(self._answers)
        log.error("store_sync_failed", path=self.wal_path, error=str(error), groups=len(self._waiting))
        while self._waiting:
            self._waiting.popleft()[1](error)
        self._wake_close()

    def _wake_close(self) -> None:
        """Let ``close()`` go on once nothing is left to answer: every commit synced, or the syncer failed."""
        done = self._error is not None or self._synced >= self._commits
        if done and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
