"""A stateful model of the outbox: hypothesis drives a real store (and the pure retry decision) through random
sequences of ingest, claim, succeed, fail, release, crash-and-recover, re-drive, replay, cancel, prune and clock
advances, and checks it step by step against a small reference model kept in plain dicts. The same machine runs
on every backend (``TestSqliteStoreModel``, ``TestPostgresStoreModel``, ``TestMemoryStoreModel``); a backend's
``Probe`` reads what it holds from under the storage seam.

Invariants, after every step:
- the store holds exactly what the model holds: each delivery's status, attempt count, due time, webhook, event;
- no acknowledged event without its deliveries (one per webhook it matched when first acknowledged);
- no delivery in two states: one row per delivery, its status one of the six;
- a lease always expires: a ``delivering`` row has a finite lease end, and a claim after it takes the row again;
- statuses only move along the allowed edges (``ALLOWED``), checked on the rows themselves between steps.

Each machine runs its own event loop (an ``asyncio.Runner`` it holds) and its own storage. Deliveries are known by
their lease ``ref`` (the store's own handle on a delivery: SQLite's and PostgreSQL's seq, the fake's position).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from relay.models import EVERYTHING, Attempt, Claim, DeliveryStatus, Durability
from relay.retry import Outcome, RetryPolicy, decide
from relay.store import AttemptResult, IngestResult, NewEvent, Room, Store
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from tests.support.memory_store import MemoryData, MemoryStore
from tests.support.postgres import PostgresServer, database_name

T = TypeVar("T")
S = DeliveryStatus
WEBHOOKS = ("a", "b", "c")
EVENT_IDS = tuple(f"evt-{n}" for n in range(8))  # a small pool, so the same id is ingested again (idempotency)
POLICY = RetryPolicy(schedule=(0.0, 1.0, 5.0), jitter=0.1, redrive_interval=60.0, redrive_max_age=400.0)
MAX_LEASE = 30.0
QUEUED = {S.PENDING, S.FAILED, S.DELIVERING}
ALLOWED = {
    (S.PENDING, S.DELIVERING),
    (S.FAILED, S.DELIVERING),  # a re-drive on the interval
    (S.DELIVERING, S.DELIVERING),  # a lease that ran out, claimed again
    (S.DELIVERING, S.SUCCEEDED),
    (S.DELIVERING, S.PENDING),  # a retry decision, a reclaim after a crash, a release at shutdown
    (S.DELIVERING, S.FAILED),
    (S.DELIVERING, S.DEAD),
    (S.FAILED, S.PENDING),  # manual re-drive
    (S.DEAD, S.PENDING),  # manual re-drive with include_dead
    (S.PENDING, S.CANCELLED),
    (S.FAILED, S.CANCELLED),
    (S.DELIVERING, S.CANCELLED),
}

# (ref, id, status, attempt_count, due_at, webhook_id, event_id): a delivery as its backend holds it. ``due_at`` is
# the stored one: when a pending or failed delivery is due, when a delivering one's lease ends, None once ended.
Row = tuple[int, str, str, int, float | None, str, str | None]


class Probe(Protocol):
    """What a backend holds, read from under the storage seam."""

    def make(self) -> Store:
        """A new store on the probe's storage (the same file, the same data)."""
        ...

    def deliveries(self) -> list[Row]: ...

    def events(self) -> dict[str, int]:
        """Each stored event's delivery count (what a repeat of its id answers)."""
        ...

    def attempt(self, ref: int, number: int) -> list[tuple[int | None, float | None]]:
        """The (status_code, next_attempt_at) recorded for attempt ``number`` of the delivery ``ref`` names."""
        ...

    def orphan_attempts(self) -> int:
        """Attempts kept without their delivery."""
        ...

    def remove(self) -> None: ...


class SqliteProbe:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="relay-model-"))
        self.path = self.folder / "relay.db"

    def make(self) -> Store:
        return SqliteStore(self.path, Durability.NORMAL)

    def db(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return list(conn.execute(query, params))

    def deliveries(self) -> list[Row]:
        return [
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6])
            for r in self.db(
                "SELECT d.seq, d.id, d.status, d.attempt_count, d.due_at, d.webhook_id, e.id"
                " FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq"
            )
        ]

    def events(self) -> dict[str, int]:
        return dict(self.db("SELECT id, delivery_count FROM events"))

    def attempt(self, ref: int, number: int) -> list[tuple[int | None, float | None]]:
        return [
            (r[0], r[1])
            for r in self.db(
                "SELECT status_code, next_attempt_at FROM attempts WHERE delivery_seq = ? AND number = ?", ref, number
            )
        ]

    def orphan_attempts(self) -> int:
        [(count,)] = self.db("SELECT COUNT(*) FROM attempts WHERE delivery_seq NOT IN (SELECT seq FROM deliveries)")
        return int(count)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class PostgresProbe:
    """A fresh database per machine on the session's server, read through a connection of the probe's own, on an
    event loop of its own in a thread (the machine's loop runs only inside its steps)."""

    server: ClassVar[PostgresServer | None] = None  # set by TestPostgresStoreModel's fixture

    def __init__(self) -> None:
        assert self.server is not None, "TestPostgresStoreModel sets the server"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="postgres-probe", daemon=True)
        self.thread.start()
        self.url = self.call(self.server.create_database("model"))
        self.conn = self.call(asyncpg.connect(self.url))

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def make(self) -> Store:
        return PostgresStore(self.url, pool_size=2)

    def db(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.call(self.conn.fetch(query, *params))]

    def deliveries(self) -> list[Row]:
        return [
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6])
            for r in self.db(
                "SELECT d.seq, d.id, d.status, d.attempt_count, d.due_at, d.webhook_id, e.id"
                " FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq"
            )
        ]

    def events(self) -> dict[str, int]:
        return dict(self.db("SELECT id, delivery_count FROM events"))

    def attempt(self, ref: int, number: int) -> list[tuple[int | None, float | None]]:
        return [
            (r[0], r[1])
            for r in self.db(
                "SELECT status_code, next_attempt_at FROM attempts WHERE delivery_seq = $1 AND number = $2", ref, number
            )
        ]

    def orphan_attempts(self) -> int:
        [(count,)] = self.db("SELECT count(*) FROM attempts WHERE delivery_seq NOT IN (SELECT seq FROM deliveries)")
        return int(count)

    def remove(self) -> None:
        assert self.server is not None
        try:
            self.call(self.conn.close())
            self.call(self.server.drop_database(database_name(self.url)))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


class MemoryProbe:
    def __init__(self) -> None:
        self.data = MemoryData()

    def make(self) -> Store:
        return MemoryStore(self.data)

    def deliveries(self) -> list[Row]:
        return [
            (d.ref, d.id, d.status.value, d.attempt_count, d.due_at, d.webhook_id, d.event_id)
            for d in self.data.deliveries.values()
        ]

    def events(self) -> dict[str, int]:
        return {event_id: stored.delivery_count for event_id, stored in self.data.events.items()}

    def attempt(self, ref: int, number: int) -> list[tuple[int | None, float | None]]:
        d = self.data.deliveries.get(ref)
        tried = None if d is None else d.attempts.get(number)
        return [] if tried is None else [(tried.status_code, tried.next_attempt_at)]

    def orphan_attempts(self) -> int:
        return 0  # attempts live inside their delivery

    def remove(self) -> None:
        pass


@dataclass
class ModelDelivery:
    ref: int
    id: str
    event_id: str
    webhook_id: str
    status: S
    attempt_count: int
    due_at: float | None
    created_at: float


@dataclass
class Leased:
    claim: Claim
    lease_until: float


class StoreMachine(RuleBasedStateMachine):
    make_probe: type[Probe]

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.probe = self.make_probe()
        self.store = self.probe.make()
        self.now = 1_700_000_000.0
        self.events: dict[str, tuple[str, ...]] = {}  # acknowledged id -> webhooks matched at first ingest
        self.ingested_at: dict[str, float] = {}
        self.deliveries: dict[int, ModelDelivery] = {}
        self.leased: list[Leased] = []
        self.last_seen: dict[int, S] = {}
        self.born_leased: set[int] = set()  # committed already leased by an ingest (``Room``s)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one store operation on the machine's loop, then check the edges its rows moved along."""
        result = self.runner.run(coro)
        self.check_edges()
        return result

    def check_edges(self) -> None:
        for ref, _, status, *_ in self.probe.deliveries():
            before = self.last_seen.get(ref)
            now = S(status)
            if before is None:
                born = S.DELIVERING if ref in self.born_leased else S.PENDING
                assert now is born, f"delivery {ref} was born {now}"
            elif before is not now:
                assert (before, now) in ALLOWED, f"delivery {ref}: {before} -> {now}"
            self.last_seen[ref] = now

    @initialize(
        batch=st.lists(
            st.tuples(st.sampled_from(EVENT_IDS), st.sets(st.sampled_from(WEBHOOKS), min_size=1).map(sorted)),
            min_size=1,
            max_size=6,
        )
    )
    def open_store(self, batch: list[tuple[str, list[str]]]) -> None:
        """Open the store and acknowledge a first batch, so that every run has deliveries to move. The webhooks
        are API ones, so that deleting one cancels its deliveries (``cancel``)."""
        self.runner.run(self.store.open())
        for webhook in WEBHOOKS:
            assert self.runner.run(self.store.insert_api_webhook(webhook, b"{}", self.now))
        self.ingest(batch)

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.store.close())
        self.runner.close()
        self.probe.remove()

    # -- rules -----------------------------------------------------------------------------------------------

    @rule(
        batch=st.lists(
            st.tuples(st.sampled_from(EVENT_IDS), st.sets(st.sampled_from(WEBHOOKS)).map(sorted)),
            min_size=1,
            max_size=4,
        ),
        leased=st.dictionaries(st.sampled_from(WEBHOOKS), st.integers(0, 2)),
        lease=st.sampled_from([1.0, MAX_LEASE]),
    )
    def ingest(
        self, batch: list[tuple[str, list[str]]], leased: dict[str, int] | None = None, lease: float = 1.0
    ) -> None:
        events = [
            NewEvent(id=i, type="t", created_at="2024-01-01T00:00:00Z", data=b"{}", webhook_ids=tuple(w))
            for i, w in batch
        ]
        rooms = {w: Room(n, self.now + lease) for w, n in (leased or {}).items()}
        budget = {w: n for w, n in (leased or {}).items()}
        results = self.run_ingest(events, rooms)
        first: dict[str, tuple[str, ...]] = {}
        for (event_id, webhooks), result in zip(batch, results, strict=True):
            known = self.events.get(event_id, first.get(event_id))
            assert result.id == event_id
            if known is None:
                first[event_id] = tuple(webhooks)
                assert result.created and result.deliveries == len(webhooks)
            else:
                assert not result.created and result.deliveries == len(known), (result, known)
        for event_id, matched in first.items():
            self.events[event_id] = matched
            self.ingested_at[event_id] = self.now
            rows = [(r[0], r[1], r[5]) for r in self.probe.deliveries() if r[6] == event_id]
            assert sorted(r[2] for r in rows) == sorted(matched)
            handed = {c.lease.ref: c for r in results if r.id == event_id for c in r.leased}
            for ref, delivery_id, webhook_id in sorted(rows):
                if budget.get(webhook_id, 0) > 0:  # the first new deliveries of each webhook, up to its count
                    budget[webhook_id] -= 1
                    claim = handed.pop(ref)
                    assert (claim.delivery_id, claim.webhook_id, claim.event.id) == (delivery_id, webhook_id, event_id)
                    assert (claim.attempt_number, claim.created_at) == (1, self.now)
                    until = self.now + lease
                    self.born(ModelDelivery(ref, delivery_id, event_id, webhook_id, S.DELIVERING, 0, until, self.now))
                    self.leased.append(Leased(claim, until))
                else:
                    self.born(ModelDelivery(ref, delivery_id, event_id, webhook_id, S.PENDING, 0, self.now, self.now))
            assert not handed, f"leased beyond the counts: {handed}"

    def run_ingest(self, events: list[NewEvent], rooms: dict[str, Room]) -> list[IngestResult]:
        """Ingest; the deliveries it commits leased are known before the edges are checked."""
        results = self.runner.run(self.store.ingest(events, self.now, rooms))
        self.born_leased.update(c.lease.ref for r in results for c in r.leased)
        self.check_edges()
        return results

    @rule(webhook=st.sampled_from(WEBHOOKS), limit=st.integers(1, 4), lease=st.sampled_from([1.0, 5.0, MAX_LEASE]))
    def claim(self, webhook: str, limit: int, lease: float) -> None:
        lease_until = self.now + lease
        claims, next_due = self.run(self.store.claim(webhook, limit, self.now, lease_until))
        eligible = {
            d.ref: d
            for d in self.deliveries.values()
            if d.webhook_id == webhook and d.status in QUEUED and d.due_at is not None and d.due_at <= self.now
        }
        taken = [c.lease.ref for c in claims]
        assert len(set(taken)) == len(taken), "a delivery claimed twice in one claim"
        assert set(taken) <= set(eligible), f"claimed what was not due: {set(taken) - set(eligible)}"
        assert len(taken) == min(limit, len(eligible)), (taken, sorted(eligible))
        if taken:  # oldest due first
            latest = max(eligible[s].due_at or 0.0 for s in taken)
            assert all((d.due_at or 0.0) >= latest for s, d in eligible.items() if s not in taken)
        for c in claims:
            d = eligible[c.lease.ref]
            assert (c.webhook_id, c.event.id, c.created_at) == (webhook, d.event_id, d.created_at)
            assert c.attempt_number == d.attempt_count + 1
            assert c.lease.until == lease_until
            d.status, d.due_at = S.DELIVERING, lease_until
            self.leased.append(Leased(c, lease_until))
        queued = [d.due_at for d in self.deliveries.values() if d.webhook_id == webhook and d.status in QUEUED]
        assert next_due == min((due for due in queued if due is not None), default=None), "next due time"

    @precondition(lambda self: self.leased)
    @rule(
        pick=st.integers(0, 1000),
        succeeded=st.booleans(),
        retry_after=st.none() | st.sampled_from([0.5, 3.0, 100.0]),
        rand=st.floats(0.0, 1.0, exclude_max=True),
        took=st.sampled_from([0.0, 0.25]),
    )
    def finish(self, pick: int, succeeded: bool, retry_after: float | None, rand: float, took: float) -> None:
        """An attempt ends (success or failure) and its result is recorded with the retry decision."""
        leased = self.leased.pop(pick % len(self.leased))
        claim = leased.claim
        decision = decide(
            POLICY,
            attempt_number=claim.attempt_number,
            outcome=Outcome(succeeded, None if succeeded else retry_after),
            now=self.now,
            created_at=claim.created_at,
            rand=rand,
        )
        attempt = Attempt(
            number=claim.attempt_number,
            started_at=self.now - took,
            duration_ms=took * 1000,
            status_code=200 if succeeded else 500,
            error=None,
            error_detail=None,
            response_body="",
            next_attempt_at=decision.next_attempt_at,
        )
        self.run(
            self.store.record(
                [
                    AttemptResult(
                        claim.lease,
                        claim.delivery_id,
                        claim.webhook_id,
                        attempt,
                        decision.status,
                        decision.next_attempt_at,
                    )
                ]
            )
        )
        rows = self.probe.attempt(claim.lease.ref, claim.attempt_number)
        d = self.deliveries.get(claim.lease.ref)
        if d is None:  # pruned (cancelled, then old enough) while its attempt was in flight: nothing is left of it
            assert rows == [], "an attempt of a pruned delivery left an orphan row"
            return
        assert d.id == claim.delivery_id
        # A delivery cancelled, reclaimed or claimed again meanwhile stays as it is: the result's lease is not the
        # one it holds (fencing).
        if d.status is S.DELIVERING and d.due_at == leased.lease_until:
            d.status, d.attempt_count, d.due_at = decision.status, claim.attempt_number, decision.next_attempt_at
        assert rows == [(attempt.status_code, attempt.next_attempt_at)], "every attempt is recorded"

    @rule(
        webhook=st.sampled_from(WEBHOOKS),
        outcomes=st.lists(st.sampled_from([False, False, True]), min_size=1, max_size=4),
        rand=st.floats(0.0, 1.0, exclude_max=True),
        then=st.sampled_from([0.0, 2.0, 6.0, 61.0, 700.0]),
    )
    def attempt_round(self, webhook: str, outcomes: list[bool], rand: float, then: float) -> None:
        """A scheduler tick in one step: claim what is due, finish each attempt, let some time pass."""
        self.claim(webhook, limit=len(outcomes), lease=MAX_LEASE)
        mine = [leased for leased in self.leased if leased.claim.webhook_id == webhook]
        for leased, succeeded in zip(mine, outcomes, strict=False):
            self.finish(self.leased.index(leased), succeeded, None, rand, 0.0)
        self.now += then

    @rule(webhook=st.sampled_from(WEBHOOKS), rand=st.floats(0.0, 1.0, exclude_max=True))
    def fail_to_the_end(self, webhook: str, rand: float) -> None:
        """A receiver down for good: every due attempt fails, time jumps to the next due one, until the
        webhook's deliveries are dead (a bounded number of rounds): the whole schedule, parking and re-drives."""
        for _ in range(10):
            due = [
                d.due_at
                for d in self.deliveries.values()
                if d.webhook_id == webhook and d.status in (S.PENDING, S.FAILED) and d.due_at is not None
            ]
            if not due:
                return
            self.now = max(self.now, min(due))
            self.attempt_round(webhook, [False] * 1000, rand, 0.0)

    @precondition(lambda self: self.leased)
    @rule(count=st.integers(1, 3))
    def release(self, count: int) -> None:
        """Shutdown gives back leases whose attempts had not started."""
        given_back, self.leased = self.leased[:count], self.leased[count:]
        self.run(self.store.release([leased.claim for leased in given_back], self.now))
        for leased in given_back:
            d = self.deliveries.get(leased.claim.lease.ref)
            if d is not None and d.status is S.DELIVERING and d.due_at == leased.lease_until:  # still its lease
                d.status, d.due_at = S.PENDING, self.now

    @rule()
    def crash_and_recover(self) -> None:
        """The process dies: attempts in flight are lost; the next one reclaims what was left delivering."""
        self.run(self.store.close())
        self.leased.clear()
        self.store = self.probe.make()
        self.run(self.store.open())
        reclaimed = self.run(self.store.reclaim_abandoned(self.now))
        delivering = [d for d in self.deliveries.values() if d.status is S.DELIVERING]
        assert reclaimed == len(delivering)
        for d in delivering:
            d.status, d.due_at = S.PENDING, self.now

    @rule(webhooks=st.sets(st.sampled_from(WEBHOOKS), min_size=1).map(sorted), include_dead=st.booleans())
    def redrive(self, webhooks: list[str], include_dead: bool) -> None:
        counts = self.run(self.store.redrive(self.now, webhooks, include_dead=include_dead))
        wanted = {S.FAILED, S.DEAD} if include_dead else {S.FAILED}
        expected: dict[str, int] = {}
        for d in self.deliveries.values():
            if d.webhook_id in webhooks and d.status in wanted:
                d.status, d.due_at = S.PENDING, self.now
                expected[d.webhook_id] = expected.get(d.webhook_id, 0) + 1
        assert counts == expected

    @rule(event_id=st.sampled_from(EVENT_IDS), webhooks=st.sets(st.sampled_from(WEBHOOKS)).map(sorted))
    def replay(self, event_id: str, webhooks: list[str]) -> None:
        replayed = self.run(self.store.replay(event_id, webhooks, self.now, scope=EVERYTHING))
        if event_id not in self.events:
            assert replayed is None
            return
        assert replayed is not None and len(replayed) == len(webhooks)
        refs = {r[1]: r[0] for r in self.probe.deliveries()}
        for delivery, webhook_id in zip(replayed, webhooks, strict=True):
            assert (delivery.webhook_id, delivery.event_id, delivery.status) == (webhook_id, event_id, S.PENDING)
            ref = refs[delivery.id]
            self.born(ModelDelivery(ref, delivery.id, event_id, webhook_id, S.PENDING, 0, self.now, self.now))

    def born(self, delivery: ModelDelivery) -> None:
        assert delivery.ref not in self.deliveries
        # SQLite hands out the seq (the ref) of a pruned delivery again (no AUTOINCREMENT). Results carry the
        # delivery id, so a stale attempt cannot land on the new one (the contract's test_a_stale_attempt_cannot_
        # touch_a_delivery_made_after_its_own_was_pruned); here the stale leases are dropped so that the model run
        # stays deterministic.
        self.leased = [leased for leased in self.leased if leased.claim.lease.ref != delivery.ref]
        self.deliveries[delivery.ref] = delivery

    @rule(webhook=st.sampled_from(WEBHOOKS), roll=st.integers(0, 5))
    def cancel(self, webhook: str, roll: int) -> None:
        if roll:  # a webhook removed is rare; cancelling often would end most deliveries before they get far
            return
        cancelled = self.run(self.store.delete_api_webhook(webhook, self.now))
        assert self.run(self.store.insert_api_webhook(webhook, b"{}", self.now))  # back, for later events
        mine = [d for d in self.deliveries.values() if d.webhook_id == webhook and d.status in QUEUED]
        assert cancelled == len(mine)
        for d in mine:
            d.status, d.due_at = S.CANCELLED, None

    @rule(age=st.sampled_from([0.0, 10.0, 3600.0]))
    def prune(self, age: float) -> None:
        cutoff = self.now - age
        pruned = self.run(self.store.prune(cutoff))
        gone = [
            event_id
            for event_id, at in self.ingested_at.items()
            if at < cutoff
            and all(d.status in (S.SUCCEEDED, S.CANCELLED) for d in self.deliveries.values() if d.event_id == event_id)
        ]
        assert pruned == len(gone)
        for event_id in gone:
            del self.events[event_id], self.ingested_at[event_id]
            for ref in [s for s, d in self.deliveries.items() if d.event_id == event_id]:
                del self.deliveries[ref]
                self.last_seen.pop(ref, None)

    @rule(seconds=st.sampled_from([0.5, 1.0, 5.0, 31.0, 61.0, 700.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def every_lease_expires(self) -> None:
        """Past every lease, claims take every delivering row again: none is stuck."""
        stuck = [d for d in self.deliveries.values() if d.status is S.DELIVERING]
        if not stuck:
            return
        self.now = max(d.due_at or 0.0 for d in stuck) + 0.001
        for webhook in WEBHOOKS:
            self.claim(webhook, limit=1000, lease=MAX_LEASE)
        assert {d.ref for d in stuck} <= {leased.claim.lease.ref for leased in self.leased}

    # -- invariants ------------------------------------------------------------------------------------------

    @invariant()
    def store_matches_the_model(self) -> None:
        rows = self.probe.deliveries()
        assert len({r[1] for r in rows}) == len(rows), "delivery ids are unique"
        stored = {r[0]: r for r in rows}
        assert set(stored) == set(self.deliveries), (sorted(stored), sorted(self.deliveries))
        assert self.probe.orphan_attempts() == 0, "attempts without their delivery"
        for ref, d in self.deliveries.items():
            _, delivery_id, status, attempt_count, due_at, webhook_id, event_id = stored[ref]
            assert status in set(S), status
            assert (delivery_id, S(status), attempt_count, due_at, webhook_id, event_id) == (
                d.id,
                d.status,
                d.attempt_count,
                d.due_at,
                d.webhook_id,
                d.event_id,
            ), (ref, stored[ref], d)

    @invariant()
    def no_acknowledged_event_without_its_deliveries(self) -> None:
        counts = self.probe.events()
        assert set(counts) == set(self.events)
        for event_id, webhooks in self.events.items():
            assert counts[event_id] == len(webhooks)
            first = {d.webhook_id for d in self.deliveries.values() if d.event_id == event_id}
            assert set(webhooks) <= first, (event_id, webhooks, first)

    @invariant()
    def leases_are_finite_and_queued_rows_are_due(self) -> None:
        for d in self.deliveries.values():
            if d.status is S.DELIVERING:
                assert d.due_at is not None and d.due_at <= self.now + MAX_LEASE
            elif d.status in (S.PENDING, S.FAILED):
                assert d.due_at is not None
            else:
                assert d.due_at is None

    @invariant()
    def statuses_move_along_allowed_edges(self) -> None:
        self.check_edges()  # also after every single store operation, inside the steps that make several


class SqliteStoreMachine(StoreMachine):
    make_probe = SqliteProbe


class PostgresStoreMachine(StoreMachine):
    make_probe = PostgresProbe


class MemoryStoreMachine(StoreMachine):
    make_probe = MemoryProbe


MODEL_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SqliteStoreMachine.TestCase.settings = MODEL_SETTINGS
PostgresStoreMachine.TestCase.settings = MODEL_SETTINGS
MemoryStoreMachine.TestCase.settings = MODEL_SETTINGS
TestSqliteStoreModel = SqliteStoreMachine.TestCase
TestMemoryStoreModel = MemoryStoreMachine.TestCase


class TestPostgresStoreModel(PostgresStoreMachine.TestCase):
    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: PostgresServer) -> None:
        PostgresProbe.server = postgres_server
