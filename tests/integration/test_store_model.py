"""A stateful model of the outbox: hypothesis drives the real Store (and the pure retry decision) through random
sequences of ingest, claim, succeed, fail, release, crash-and-recover, re-drive, replay, cancel, prune and clock
advances, and checks it step by step against a small reference model kept in plain dicts.

Invariants, after every step:
- the store holds exactly what the model holds: each delivery's status, attempt count, due time, webhook, event;
- no acknowledged event without its deliveries (one per webhook it matched when first acknowledged);
- no delivery in two states: one row per delivery, its status one of the six;
- a lease always expires: a ``delivering`` row has a finite lease end, and a claim after it takes the row again;
- statuses only move along the allowed edges (``ALLOWED``), checked on the rows themselves between steps.

Each machine runs its own event loop (an ``asyncio.Runner`` it holds) and its own SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from relay.models import Attempt, Claim, DeliveryStatus, Durability
from relay.retry import Outcome, RetryPolicy, decide
from relay.store import AttemptResult, IngestResult, Lease, NewEvent, Store

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


@dataclass
class ModelDelivery:
    seq: int
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
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.folder = Path(tempfile.mkdtemp(prefix="relay-model-"))
        self.path = self.folder / "relay.db"
        self.store = Store(self.path, Durability.NORMAL)
        self.now = 1_700_000_000.0
        self.events: dict[str, tuple[str, ...]] = {}  # acknowledged id -> webhooks matched at first ingest
        self.ingested_at: dict[str, float] = {}
        self.deliveries: dict[int, ModelDelivery] = {}
        self.leased: list[Leased] = []
        self.last_seen: dict[int, S] = {}
        self.born_leased: set[int] = set()  # committed already leased by an ingest (``Store.ingest`` leases)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one store operation on the machine's loop, then check the edges its rows moved along."""
        result = self.runner.run(coro)
        self.check_edges()
        return result

    def check_edges(self) -> None:
        for seq, status in self.db("SELECT seq, status FROM deliveries"):
            before = self.last_seen.get(seq)
            now = S(status)
            if before is None:
                born = S.DELIVERING if seq in self.born_leased else S.PENDING
                assert now is born, f"delivery {seq} was born {now}"
            elif before is not now:
                assert (before, now) in ALLOWED, f"delivery {seq}: {before} -> {now}"
            self.last_seen[seq] = now

    def db(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return list(conn.execute(query, params))

    @initialize(
        batch=st.lists(
            st.tuples(st.sampled_from(EVENT_IDS), st.sets(st.sampled_from(WEBHOOKS), min_size=1).map(sorted)),
            min_size=1,
            max_size=6,
        )
    )
    def open_store(self, batch: list[tuple[str, list[str]]]) -> None:
        """Open the store and acknowledge a first batch, so that every run has deliveries to move."""
        self.runner.run(self.store.open())
        self.ingest(batch)

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.store.close())
        self.runner.close()
        shutil.rmtree(self.folder, ignore_errors=True)

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
        leases = {w: Lease(n, self.now + lease) for w, n in (leased or {}).items()}
        budget = {w: n for w, n in (leased or {}).items()}
        results = self.run_ingest(events, leases)
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
            rows = self.db(
                "SELECT d.seq, d.id, d.webhook_id FROM deliveries d JOIN events e ON e.seq = d.event_seq"
                " WHERE e.id = ?",
                event_id,
            )
            assert sorted(r[2] for r in rows) == sorted(matched)
            handed = {c.delivery_seq: c for r in results if r.id == event_id for c in r.leased}
            for seq, delivery_id, webhook_id in sorted(rows):
                if budget.get(webhook_id, 0) > 0:  # the first new deliveries of each webhook, up to its count
                    budget[webhook_id] -= 1
                    claim = handed.pop(seq)
                    assert (claim.delivery_id, claim.webhook_id, claim.event.id) == (delivery_id, webhook_id, event_id)
                    assert (claim.attempt_number, claim.created_at) == (1, self.now)
                    until = self.now + lease
                    self.born(ModelDelivery(seq, delivery_id, event_id, webhook_id, S.DELIVERING, 0, until, self.now))
                    self.leased.append(Leased(claim, until))
                else:
                    self.born(ModelDelivery(seq, delivery_id, event_id, webhook_id, S.PENDING, 0, self.now, self.now))
            assert not handed, f"leased beyond the counts: {handed}"

    def run_ingest(self, events: list[NewEvent], leases: dict[str, Lease]) -> list[IngestResult]:
        """Ingest; the deliveries it commits leased are known before the edges are checked."""
        results = self.runner.run(self.store.ingest(events, self.now, leases))
        self.born_leased.update(c.delivery_seq for r in results for c in r.leased)
        self.check_edges()
        return results

    @rule(webhook=st.sampled_from(WEBHOOKS), limit=st.integers(1, 4), lease=st.sampled_from([1.0, 5.0, MAX_LEASE]))
    def claim(self, webhook: str, limit: int, lease: float) -> None:
        lease_until = self.now + lease
        claims, next_due = self.run(self.store.claim(webhook, limit, self.now, lease_until))
        eligible = {
            d.seq: d
            for d in self.deliveries.values()
            if d.webhook_id == webhook and d.status in QUEUED and d.due_at is not None and d.due_at <= self.now
        }
        taken = [c.delivery_seq for c in claims]
        assert len(set(taken)) == len(taken), "a delivery claimed twice in one claim"
        assert set(taken) <= set(eligible), f"claimed what was not due: {set(taken) - set(eligible)}"
        assert len(taken) == min(limit, len(eligible)), (taken, sorted(eligible))
        if taken:  # oldest due first
            latest = max(eligible[s].due_at or 0.0 for s in taken)
            assert all((d.due_at or 0.0) >= latest for s, d in eligible.items() if s not in taken)
        for c in claims:
            d = eligible[c.delivery_seq]
            assert (c.webhook_id, c.event.id, c.created_at) == (webhook, d.event_id, d.created_at)
            assert c.attempt_number == d.attempt_count + 1
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
                        claim.delivery_seq, claim.delivery_id, attempt, decision.status, decision.next_attempt_at
                    )
                ]
            )
        )
        rows = self.db(
            "SELECT status_code, next_attempt_at FROM attempts WHERE delivery_seq = ? AND number = ?",
            claim.delivery_seq,
            claim.attempt_number,
        )
        d = self.deliveries.get(claim.delivery_seq)
        if d is None:  # pruned (cancelled, then old enough) while its attempt was in flight: nothing is left of it
            assert rows == [], "an attempt of a pruned delivery left an orphan row"
            return
        assert d.id == claim.delivery_id
        if d.status is S.DELIVERING:  # a delivery cancelled or reclaimed meanwhile stays as it is
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
        self.run(self.store.release([leased.claim.delivery_seq for leased in given_back], self.now))
        for leased in given_back:
            d = self.deliveries[leased.claim.delivery_seq]
            if d.status is S.DELIVERING:
                d.status, d.due_at = S.PENDING, self.now

    @rule()
    def crash_and_recover(self) -> None:
        """The process dies: attempts in flight are lost; the next one reclaims what was left delivering."""
        self.run(self.store.close())
        self.leased.clear()
        self.store = Store(self.path, Durability.NORMAL)
        self.run(self.store.open())
        reclaimed = self.run(self.store.reclaim_in_flight(self.now))
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
        seqs = self.run(self.store.add_deliveries(event_id, webhooks, self.now))
        if event_id not in self.events:
            assert seqs is None
            return
        assert seqs is not None and len(seqs) == len(webhooks)
        for seq, webhook_id in zip(seqs, webhooks, strict=True):
            [(delivery_id,)] = self.db("SELECT id FROM deliveries WHERE seq = ?", seq)
            self.born(ModelDelivery(seq, delivery_id, event_id, webhook_id, S.PENDING, 0, self.now, self.now))

    def born(self, delivery: ModelDelivery) -> None:
        assert delivery.seq not in self.deliveries
        # SQLite hands out the seq of a pruned delivery again (no AUTOINCREMENT). Results carry the delivery id,
        # so a stale attempt cannot land on the new one (test_a_stale_attempt_cannot_touch_a_delivery_that_reuses_
        # its_seq); here the stale leases are dropped so that the model run stays deterministic.
        self.leased = [leased for leased in self.leased if leased.claim.delivery_seq != delivery.seq]
        self.deliveries[delivery.seq] = delivery

    @rule(webhook=st.sampled_from(WEBHOOKS), roll=st.integers(0, 5))
    def cancel(self, webhook: str, roll: int) -> None:
        if roll:  # a webhook removed is rare; cancelling often would end most deliveries before they get far
            return
        cancelled = self.run(self.store.cancel_webhook_deliveries(webhook, self.now))
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
            for seq in [s for s, d in self.deliveries.items() if d.event_id == event_id]:
                del self.deliveries[seq]
                self.last_seen.pop(seq, None)

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
        assert {d.seq for d in stuck} <= {leased.claim.delivery_seq for leased in self.leased}

    # -- invariants ------------------------------------------------------------------------------------------

    @invariant()
    def store_matches_the_model(self) -> None:
        rows = self.db("SELECT seq, id, status, attempt_count, due_at, webhook_id, event_seq FROM deliveries")
        assert len({r[1] for r in rows}) == len(rows), "delivery ids are unique"
        stored = {r[0]: r for r in rows}
        assert set(stored) == set(self.deliveries), (sorted(stored), sorted(self.deliveries))
        event_ids = dict(self.db("SELECT seq, id FROM events"))
        orphans = self.db("SELECT COUNT(*) FROM attempts WHERE delivery_seq NOT IN (SELECT seq FROM deliveries)")
        assert orphans == [(0,)], "attempts without their delivery"
        for seq, d in self.deliveries.items():
            _, delivery_id, status, attempt_count, due_at, webhook_id, event_seq = stored[seq]
            assert status in set(S), status
            assert (delivery_id, S(status), attempt_count, due_at, webhook_id, event_ids[event_seq]) == (
                d.id,
                d.status,
                d.attempt_count,
                d.due_at,
                d.webhook_id,
                d.event_id,
            ), (seq, stored[seq], d)

    @invariant()
    def no_acknowledged_event_without_its_deliveries(self) -> None:
        counts = dict(self.db("SELECT id, delivery_count FROM events"))
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


StoreMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreMachine.TestCase


async def test_a_stale_attempt_cannot_touch_a_delivery_that_reuses_its_seq(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db", Durability.NORMAL)
    await store.open()
    try:
        now = 1_700_000_000.0
        old = NewEvent(id="old", type="t", created_at="2024-01-01T00:00:00Z", data=b"{}", webhook_ids=("a",))
        await store.ingest([old], now)
        [stale], _ = await store.claim("a", 1, now, now + MAX_LEASE)  # an attempt starts ...
        await store.cancel_webhook_deliveries("a", now)  # ... its webhook is removed ...
        assert await store.prune(now + 1) == 1  # ... and the event, all its deliveries ended, is pruned
        new = NewEvent(id="new", type="t", created_at="2024-01-01T00:00:00Z", data=b"{}", webhook_ids=("a",))
        await store.ingest([new], now + 2)
        [fresh], _ = await store.claim("a", 1, now + 2, now + 2 + MAX_LEASE)
        attempt = Attempt(1, now, 5.0, 200, None, None, "", None)
        await store.record(
            [AttemptResult(stale.delivery_seq, stale.delivery_id, attempt, S.SUCCEEDED, None)]
        )  # the stale one ends
        found = await store.get_event("new")
        assert found is not None
        [delivery] = found[1]
        assert delivery.id == fresh.delivery_id
        assert (delivery.status, delivery.attempts) == (S.DELIVERING, ()), "never attempted, yet marked done"
    finally:
        await store.close()
