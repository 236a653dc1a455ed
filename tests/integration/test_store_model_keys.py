"""A stateful model of ordering keys (CONTRACT §11, ``relay.store.ordering``): hypothesis drives a real store through
random sequences of keyed and unkeyed ingests (to a "fifo", a "latest" and an unordered webhook, some committed
leased), claims, results (success, retry, park, dead), releases, crashes, cancellations, re-drives of parked
deliveries, replays and clock advances, and checks what every backend must keep, whatever the sequence:

- no claim hands out a delivery of a ``(webhook, key)`` while another of that key is being attempted, and no claim
  (nor an ingest's rooms) hands out two of one key;
- after every step each key has at most one head (delivering, or pending or parked with a due time), and a key
  with deliveries waiting (pending, no due time) has a head: it is never stuck;
- ``fifo``: a key's successes come in ingest order (a replay takes a new place at the end: its delivery's);
- ``latest``: no older delivery of a key succeeds after a newer one of that key succeeded.

Deliveries are known by their lease ``ref`` (the store's creation order). Re-drives of dead deliveries are left
out: a dead head lets its key move on, so re-driving it later is an explicit way out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from relay.errors import Conflict
from relay.models import EVERYTHING, Attempt, Claim, Delivery, DeliveryStatus
from relay.store import AttemptResult, NewEvent, Room
from tests.integration.test_store_model import MemoryProbe, PostgresProbe, Probe, SqliteProbe
from tests.support.postgres import PostgresServer

T = TypeVar("T")
S = DeliveryStatus
ORDERINGS = {"f": "fifo", "l": "latest", "n": "none"}
KEYS = ("k1", "k2")
OUTCOMES = (S.SUCCEEDED, S.SUCCEEDED, S.PENDING, S.FAILED, S.DEAD)


class KeyedStoreMachine(RuleBasedStateMachine):
    make_probe: type[Probe]

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.probe = self.make_probe()
        self.store = self.probe.make()
        self.now = 1_700_000_000.0
        self.ids = itertools.count()
        self.keys: dict[str, str | None] = {}  # event id -> its ordering key
        self.leased: list[Claim] = []
        self.succeeded: dict[tuple[str, str], list[int]] = {}  # (webhook, key) -> refs, in the order they succeeded

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    @initialize()
    def open_store(self) -> None:
        self.run(self.store.open())

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.store.close())
        self.runner.close()
        self.probe.remove()

    # -- reading what the store holds ------------------------------------------------------------------------

    def deliveries(self) -> list[tuple[str | None, Delivery]]:
        """Every delivery, with its event's ordering key."""
        found = []
        for event_id, key in self.keys.items():
            stored = self.run(self.store.get_event(event_id, scope=EVERYTHING))
            assert stored is not None
            assert stored[0].ordering_key == key
            found.extend((key, d) for d in stored[1])
        return found

    def in_flight(self) -> dict[tuple[str, str], set[str]]:
        """Each ordered key's deliveries being attempted (their ids)."""
        flying: dict[tuple[str, str], set[str]] = {}
        for key, d in self.deliveries():
            if key is not None and ORDERINGS[d.webhook_id] != "none" and d.status is S.DELIVERING:
                flying.setdefault((d.webhook_id, key), set()).add(d.id)
        return flying

    def check_handed_out(self, claims: list[Claim], flying: dict[tuple[str, str], set[str]]) -> None:
        """Claims handed out while ``flying`` was in flight: none of a key that another delivery holds, none two
        of one key; the lease says whether the delivery holds its key."""
        seen: set[tuple[str, str]] = set()
        for claim in claims:
            key = self.keys[claim.event.id]
            ordered = key is not None and ORDERINGS[claim.webhook_id] != "none"
            assert claim.lease.keyed == ordered, claim
            if key is None or not ordered:
                continue
            held = (claim.webhook_id, key)
            others = flying.get(held, set()) - {claim.delivery_id}
            assert not others, f"{claim.delivery_id} handed out while {others} of {held} is in flight"
            assert held not in seen, f"two deliveries of {held} handed out at once"
            seen.add(held)

    # -- rules -----------------------------------------------------------------------------------------------

    @rule(
        batch=st.lists(
            st.tuples(st.sampled_from([*KEYS, None]), st.sets(st.sampled_from(sorted(ORDERINGS))).map(sorted)),
            min_size=1,
            max_size=4,
        ),
        rooms=st.dictionaries(st.sampled_from(sorted(ORDERINGS)), st.integers(0, 2)),
    )
    def ingest(self, batch: list[tuple[str | None, list[str]]], rooms: dict[str, int]) -> None:
        events = []
        for key, webhooks in batch:
            event_id = f"e{next(self.ids)}"
            orderings = tuple(ORDERINGS[w] for w in webhooks) if key is not None else ()
            events.append(
                NewEvent(event_id, "t", "2024-01-01T00:00:00Z", b"{}", tuple(webhooks), False, None, key, orderings)
            )
        flying = self.in_flight()
        results = self.run(self.store.ingest(events, self.now, {w: Room(n, self.now + 30) for w, n in rooms.items()}))
        self.keys.update((e.id, e.ordering_key) for e in events)
        leased = [c for r in results for c in r.leased]
        self.check_handed_out(leased, flying)
        self.leased.extend(leased)

    @rule(webhook=st.sampled_from(sorted(ORDERINGS)), limit=st.integers(1, 4), lease=st.sampled_from([1.0, 30.0]))
    def claim(self, webhook: str, limit: int, lease: float) -> None:
        flying = self.in_flight()
        claims, _ = self.run(self.store.claim(webhook, limit, self.now, self.now + lease))
        self.check_handed_out(claims, flying)
        taken = {c.delivery_id for c in claims}
        self.leased = [c for c in self.leased if c.delivery_id not in taken]  # a lease that ran out is spent
        self.leased.extend(claims)

    @precondition(lambda self: self.leased)
    @rule(pick=st.integers(0, 1000), outcome=st.sampled_from(OUTCOMES), took=st.sampled_from([0.0, 0.5]))
    def finish(self, pick: int, outcome: S, took: float) -> None:
        claim = self.leased.pop(pick % len(self.leased))
        next_at = self.now + 5 if outcome in (S.PENDING, S.FAILED) else None
        ok = outcome is S.SUCCEEDED
        tried = Attempt(claim.attempt_number, self.now - took, took * 1000, 200 if ok else 500, None, None, "", next_at)
        self.run(
            self.store.record(
                [AttemptResult(claim.lease, claim.delivery_id, claim.webhook_id, tried, outcome, next_at)]
            )
        )
        if not ok:
            return
        found = self.run(self.store.get_event(claim.event.id, scope=EVERYTHING))
        assert found is not None
        [mine] = [d for d in found[1] if d.id == claim.delivery_id]
        key = self.keys[claim.event.id]
        if mine.status is not S.SUCCEEDED or key is None or ORDERINGS[claim.webhook_id] == "none":
            return  # the result did not count (its lease was spent), or the delivery is not ordered
        done = self.succeeded.setdefault((claim.webhook_id, key), [])
        if ORDERINGS[claim.webhook_id] == "fifo":
            assert not done or done[-1] < claim.lease.ref, f"fifo: {claim.lease.ref} succeeded after {done}"
        else:
            assert not done or max(done) < claim.lease.ref, f"latest: {claim.lease.ref} succeeded after {done}"
        done.append(claim.lease.ref)

    @precondition(lambda self: self.leased)
    @rule(count=st.integers(1, 3))
    def release(self, count: int) -> None:
        given_back, self.leased = self.leased[:count], self.leased[count:]
        self.run(self.store.release(given_back, self.now))

    @rule()
    def crash_and_recover(self) -> None:
        self.run(self.store.close())
        self.leased.clear()
        self.store = self.probe.make()
        self.run(self.store.open())
        self.run(self.store.reclaim_abandoned(self.now))

    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        deliveries = self.deliveries()
        if not deliveries:
            return
        _, d = deliveries[pick % len(deliveries)]
        try:
            cancelled = self.run(self.store.cancel(d.id, self.now, scope=EVERYTHING))
        except Conflict:
            assert d.status not in (S.PENDING, S.FAILED), d
            return
        assert d.status in (S.PENDING, S.FAILED) and cancelled is not None and cancelled.status is S.CANCELLED

    @rule()
    def redrive_parked(self) -> None:
        self.run(self.store.redrive(self.now, sorted(ORDERINGS), include_dead=False))

    @rule(pick=st.integers(0, 1000), webhooks=st.sets(st.sampled_from(["f", "n"]), min_size=1).map(sorted))
    def replay(self, pick: int, webhooks: list[str]) -> None:
        if not self.keys:
            return
        event_id = sorted(self.keys)[pick % len(self.keys)]
        orderings = tuple(ORDERINGS[w] for w in webhooks)
        assert self.run(self.store.replay(event_id, webhooks, self.now, scope=EVERYTHING, orderings=orderings))

    @rule(seconds=st.sampled_from([0.5, 2.0, 6.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    # -- invariants ------------------------------------------------------------------------------------------

    @invariant()
    def one_head_per_key_and_no_key_stuck(self) -> None:
        heads: dict[tuple[str, str], list[str]] = {}
        waiting: set[tuple[str, str]] = set()
        for key, d in self.deliveries():
            if key is None or ORDERINGS[d.webhook_id] == "none":
                assert d.status is not S.SUPERSEDED
                continue
            held = (d.webhook_id, key)
            if d.status is S.DELIVERING or (d.status in (S.PENDING, S.FAILED) and d.next_attempt_at is not None):
                heads.setdefault(held, []).append(d.id)
            elif d.status is S.PENDING:
                waiting.add(held)
        assert all(len(ids) == 1 for ids in heads.values()), heads
        assert waiting <= set(heads), f"keys waiting on no head: {waiting - set(heads)}"


class SqliteKeyedMachine(KeyedStoreMachine):
    make_probe = SqliteProbe


class PostgresKeyedMachine(KeyedStoreMachine):
    make_probe = PostgresProbe


class MemoryKeyedMachine(KeyedStoreMachine):
    make_probe = MemoryProbe


KEYED_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SqliteKeyedMachine.TestCase.settings = KEYED_SETTINGS
PostgresKeyedMachine.TestCase.settings = settings(KEYED_SETTINGS, max_examples=15)  # a database round trip a read
MemoryKeyedMachine.TestCase.settings = KEYED_SETTINGS
TestSqliteKeyedModel = SqliteKeyedMachine.TestCase
TestMemoryKeyedModel = MemoryKeyedMachine.TestCase


class TestPostgresKeyedModel(PostgresKeyedMachine.TestCase):
    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: PostgresServer) -> None:
        PostgresProbe.server = postgres_server
