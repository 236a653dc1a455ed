"""The PostgreSQL backend's group commit: concurrent calls queue jobs, and one writer task drains whatever is queued
at that moment into one group, committed as one transaction on one connection (one WAL flush for all of them). The
store runs one writer for ingests (``submit_ingest``, jobs of ``Job``) and one for attempt results (``record``,
jobs of ``ResultJob``), so a result never waits behind a large ingest batch. The group's statements are set-based
(``postgres_outbox.apply_ingest``, ``postgres_outbox.record``): a handful per group whatever its size. Groups stop
growing at ``GROUP_ROWS``; one job is never split.

A job is answered only once its group committed: its ``on_commit`` runs on the loop first (with the answers, or
None when the group failed), then its future resolves. A caller that stops waiting (its request went away) cancels
only its future: the group commits, and ``on_commit`` runs, all the same.

Every other write of the backend takes a pooled connection and a transaction of its own: they are bounded and rare
next to ingests and results, and claims must not queue behind a large batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog

from relay.errors import StoreError, StoreUnavailable
from relay.store.base import AttemptResult, IngestResult, NewEvent, Room

log = structlog.get_logger()

GROUP_ROWS = 4096  # a group stops growing at about this many rows (one job is never split)

OnCommit = Callable[[list[IngestResult] | None], None]


@dataclass(slots=True)
class Job:
    """One ``submit_ingest`` call."""

    events: list[NewEvent]
    now: float
    rooms: Mapping[str, Room] | None
    rows: int  # events and deliveries it writes: what a group's size is counted in
    on_commit: OnCommit | None = None
    future: asyncio.Future[list[IngestResult]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class ResultJob:
    """One ``record`` call: its results are recorded with the group's, in the order the calls came."""

    results: list[AttemptResult]
    rows: int
    on_commit: Callable[[None], None] | None = None
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


Out = TypeVar("Out")


class Queued(Protocol[Out]):
    """What the writer needs of a job: its size, its answer, and what runs once its group committed."""

    rows: int
    on_commit: Callable[[Out | None], None] | None
    future: asyncio.Future[Out]


J = TypeVar("J", bound=Queued[Any])

# Commits one group in one transaction: one answer per job, in order; raises when nothing was committed.
CommitGroup = Callable[[list[J]], Awaitable[Sequence[Any]]]


class GroupWriter(Generic[J]):
    def __init__(self, commit: CommitGroup[J], name: str = "store-writer") -> None:
        self._commit = commit
        self._name = name
        self._queue: asyncio.Queue[J] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        self._task = asyncio.create_task(self._write_loop(), name=self._name)

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        if not self._task.done():
            await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def stopped(self) -> None:
        """Return when the writer task ends (it should not, before ``close``)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    def submit(self, job: J) -> None:
        if self._task is None or self._task.done():
            raise StoreUnavailable("the store is closed")
        self._queue.put_nowait(job)

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            jobs, rows = [first], first.rows
            while rows < GROUP_ROWS and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                rows += job.rows
            try:
                await self._commit_group(jobs)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _commit_group(self, jobs: list[J]) -> None:
        try:
            outcomes = await self._commit(jobs)
        except StoreError as exc:
            log.error("store_write_failed", error=str(exc), jobs=len(jobs), writer=self._name)
            _fail(jobs, exc)
            return
        except asyncio.CancelledError:
            _fail(jobs, StoreUnavailable("the store is closing"))
            raise
        except Exception as exc:  # a fault of relay's own: the group is rolled back, the writer goes on
            log.exception("store_job_failed", jobs=len(jobs), writer=self._name)
            _fail(jobs, exc)
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            _committed(job, outcome)
            if not job.future.done():
                job.future.set_result(outcome)


def _committed(job: Queued[Any], outcome: Any) -> None:
    """Run the job's ``on_commit``; its fault is logged, never the writer's or the other jobs'."""
    if job.on_commit is not None:
        try:
            job.on_commit(outcome)
        except Exception:
            log.exception("store_commit_hook_failed")


def _fail(jobs: Sequence[Queued[Any]], error: BaseException) -> None:
    for job in jobs:
        _committed(job, None)
        if not job.future.done():
            job.future.set_exception(error)
