"""The outbox contract on a real SQLite file. A second backend would run this same class."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay import store as store_module
from relay.errors import StoreUnavailable
from relay.models import Attempt, Claim, DeliveryStatus, Durability, ErrorKind
from relay.store import AttemptResult, Lease, NewEvent, Store

T0 = 1_700_000_000.0


def event(event_id: str, *webhooks: str, event_type: str = "t") -> NewEvent:
    return NewEvent(event_id, event_type, "2024-01-15T10:35:00Z", b'{"n":1}', tuple(webhooks))


def attempt(number: int, at: float, *, ok: bool, next_at: float | None = None) -> Attempt:
    return Attempt(number, at, 12.5, 200 if ok else 500, None if ok else ErrorKind.HTTP_ERROR, None, "body", next_at)


def result(claim: Claim, tried: Attempt, status: DeliveryStatus) -> AttemptResult:
    """The result of the attempt ``tried`` on ``claim``, due again when that attempt says (if at all)."""
    return AttemptResult(claim.delivery_seq, claim.delivery_id, tried, status, tried.next_attempt_at)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "state" / "relay.db")
    await store.open()
    yield store
    await store.close()


class TestOutboxContract:
    async def test_the_file_and_its_folder_are_private(self, store: Store) -> None:
        assert store.path.stat().st_mode & 0o777 == 0o600
        assert store.path.parent.stat().st_mode & 0o777 == 0o700

    async def test_ingest_commits_events_and_one_delivery_per_webhook(self, store: Store) -> None:
        results = await store.ingest([event("e1", "a", "b"), event("e2")], T0)
        assert [(r.id, r.deliveries, r.created) for r in results] == [("e1", 2, True), ("e2", 0, True)]
        found = await store.get_event("e1")
        assert found is not None
        _, deliveries = found
        assert sorted(d.webhook_id for d in deliveries) == ["a", "b"]
        assert all(d.status is DeliveryStatus.PENDING and d.next_attempt_at == T0 for d in deliveries)

    async def test_a_known_id_answers_as_the_first_time(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [again] = await store.ingest([event("e1", "a", "b")], T0 + 1)
        assert (again.deliveries, again.created) == (1, False)

    async def test_a_generated_id_a_producer_already_used_is_replaced(self, store: Store) -> None:
        """Generated ids count up, so a producer can post one before relay makes it: relay's event gets another,
        whether the producer's event is stored already or comes earlier in the same group."""
        await store.ingest([event("evt_taken", "a")], T0)
        foreseen, twin = event("evt_taken", "a", "b"), event("evt_twin", "a")
        foreseen.generated = twin.generated = True
        results = await store.ingest([event("evt_twin"), foreseen, twin], T0 + 1)
        assert [r.created for r in results] == [True, True, True]
        ids = [r.id for r in results]
        assert ids[0] == "evt_twin" and len({"evt_taken", *ids}) == 4
        assert all(i.startswith("evt_") for i in ids)
        found = await store.get_event(ids[1])
        assert found is not None
        assert sorted(d.webhook_id for d in found[1]) == ["a", "b"]
        first = await store.get_event("evt_taken")
        assert first is not None and [d.webhook_id for d in first[1]] == ["a"]

    async def test_concurrent_duplicates_in_one_group_are_stored_once(self, store: Store) -> None:
        first, second = await asyncio.gather(
            store.ingest([event("same", "a")], T0), store.ingest([event("same", "a")], T0)
        )
        assert first[0].created != second[0].created
        assert first[0].deliveries == second[0].deliveries == 1
        found = await store.get_event("same")
        assert found is not None and len(found[1]) == 1

    async def test_claim_leases_due_deliveries_oldest_first(self, store: Store) -> None:
        await store.ingest([event("e1", "a"), event("e2", "a"), event("e3", "b")], T0)
        claims, next_due = await store.claim("a", 10, T0, T0 + 60)
        assert [c.event.id for c in claims] == ["e1", "e2"]
        assert all(c.attempt_number == 1 and c.event.data == b'{"n":1}' for c in claims)
        assert next_due == T0 + 60  # the leases run out then
        assert await store.claim("a", 10, T0, T0 + 60) == ([], T0 + 60)  # leased
        claims, _ = await store.claim("a", 10, T0 + 61, T0 + 120)
        assert [c.event.id for c in claims] == ["e1", "e2"]  # ran out
        assert await store.claim("c", 10, T0, T0 + 60) == ([], None)  # nothing queued

    async def test_ingest_can_commit_new_deliveries_already_leased(self, store: Store) -> None:
        await store.ingest([event("old", "a")], T0)
        leases = {"a": Lease(2, T0 + 70), "b": Lease(5, T0 + 80)}
        results = await store.ingest(
            [event("old", "a"), event("e1", "a", "b"), event("e2", "a", "c"), event("e3", "a")], T0 + 1, leases
        )
        assert [r.created for r in results] == [False, True, True, True]
        assert results[0].leased == ()  # a known id takes no room
        leased = [claim for r in results for claim in r.leased]
        assert [(c.event.id, c.webhook_id) for c in leased] == [("e1", "a"), ("e1", "b"), ("e2", "a")]  # a: 2 only
        first = leased[0]
        assert (first.attempt_number, first.created_at, first.event.data) == (1, T0 + 1, b'{"n":1}')
        assert first.event.ingested_at == T0 + 1 and first.event.created_at == "2024-01-15T10:35:00Z"
        found = await store.get_event("e1")
        assert found is not None
        assert {(d.id, d.status) for d in found[1]} == {(c.delivery_id, DeliveryStatus.DELIVERING) for c in leased[:2]}
        assert found[0].seq == first.event.seq and {d.seq for d in found[1]} == {c.delivery_seq for c in leased[:2]}
        # Not claimable while leased: only what was committed pending is, until the lease runs out.
        claims, next_due = await store.claim("a", 10, T0 + 1, T0 + 300)
        assert sorted(c.event.id for c in claims) == ["e3", "old"] and next_due == T0 + 70
        assert (await store.claim("a", 10, T0 + 69, T0 + 200))[0] == []  # e1 and e2 leased until T0 + 70 ...
        claims, _ = await store.claim("a", 10, T0 + 70, T0 + 200)
        assert sorted(c.event.id for c in claims) == ["e1", "e2"]  # ... then due again
        assert [c.event.id for c in (await store.claim("c", 10, T0 + 1, T0 + 60))[0]] == ["e2"]

    async def test_results_move_deliveries_and_keep_every_attempt(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        await store.record([result(claim, attempt(1, T0, ok=False, next_at=T0 + 60), DeliveryStatus.PENDING)])
        assert await store.claim("a", 1, T0 + 59, T0 + 120) == ([], T0 + 60)
        [claim], _ = await store.claim("a", 1, T0 + 60, T0 + 120)
        assert claim.attempt_number == 2
        await store.record([result(claim, attempt(2, T0 + 60, ok=True), DeliveryStatus.SUCCEEDED)])
        found = await store.get_event("e1")
        assert found is not None
        [delivery] = found[1]
        assert delivery.status is DeliveryStatus.SUCCEEDED and delivery.attempt_count == 2
        assert [a.number for a in delivery.attempts] == [1, 2]
        assert delivery.attempts[0].error is ErrorKind.HTTP_ERROR and delivery.attempts[0].next_attempt_at == T0 + 60
        assert await store.claim("a", 1, T0 + 10_000, T0 + 10_060) == ([], None)  # nothing left queued

    async def test_a_cancelled_delivery_stays_cancelled_when_its_attempt_ends(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        assert await store.cancel_webhook_deliveries("a", T0) == 1
        await store.record([result(claim, attempt(1, T0, ok=True), DeliveryStatus.SUCCEEDED)])
        found = await store.get_event("e1")
        assert found is not None and found[1][0].status is DeliveryStatus.CANCELLED

    async def test_reclaim_and_release_make_leased_deliveries_due_at_once(self, store: Store) -> None:
        await store.ingest([event("e1", "a"), event("e2", "a")], T0)
        claims, _ = await store.claim("a", 2, T0, T0 + 600)
        await store.release([claims[0].delivery_seq], T0 + 1)
        again, _ = await store.claim("a", 5, T0 + 1, T0 + 600)
        assert [c.event.id for c in again] == ["e1"]
        assert await store.reclaim_in_flight(T0 + 2) == 2
        assert await store.due_by_webhook() == {"a": T0 + 2}

    async def test_prune_removes_only_old_events_that_are_done(self, store: Store) -> None:
        await store.ingest([event("done", "a"), event("failing", "b"), event("none")], T0)
        await store.ingest([event("recent", "a")], T0 + 100)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        await store.record([result(claim, attempt(1, T0, ok=True), DeliveryStatus.SUCCEEDED)])
        assert await store.prune(T0 + 50) == 2  # "done" and "none"; "failing" still owes a delivery
        assert await store.get_event("done") is None and await store.get_event("none") is None
        assert await store.get_event("failing") is not None and await store.get_event("recent") is not None

    async def test_config_webhooks_sync_cancels_what_removed_ones_left(self, store: Store) -> None:
        await store.sync_config_webhooks({"a": b"{}", "b": b"{}"}, T0)
        await store.ingest([event("e1", "a", "b")], T0)
        assert await store.sync_config_webhooks({"b": b"{}"}, T0 + 1) == ["a"]
        found = await store.get_event("e1")
        assert found is not None
        assert {d.webhook_id: d.status for d in found[1]} == {"a": "cancelled", "b": "pending"}

    async def test_refresh_tokens_survive_a_reopen(self, store: Store, tmp_path: Path) -> None:
        await store.save_refresh_token("w", "rt-1")
        await store.save_refresh_token("w", "rt-2")
        again = Store(store.path)
        await again.open()
        try:
            assert await again.load_refresh_token("w") == "rt-2"
            assert await again.load_refresh_token("other") is None
        finally:
            await again.close()

    async def test_a_full_disk_is_unavailable_and_nothing_is_acknowledged(self, store: Store) -> None:
        def shrink(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA max_page_count = 1")

        await store.write(shrink)
        big = NewEvent("big", "t", "2024-01-15T10:35:00Z", b'"' + b"x" * 200_000 + b'"', ("a",))
        with pytest.raises(StoreUnavailable):
            await store.ingest([big], T0)
        assert await store.get_event("big") is None
        assert store.writer_alive

    async def test_a_failing_job_rolls_its_group_back_and_the_writer_goes_on(self, store: Store) -> None:
        def broken(conn: sqlite3.Connection) -> None:
            raise ValueError("a bug in a write job")

        # A bounded job shares the group of the ingest queued before it (statements on the loop).
        ingest = asyncio.ensure_future(store.ingest([event("e1", "a")], T0))
        with pytest.raises(ValueError, match="a bug"):
            await store.write(broken, bounded=True)
        with pytest.raises(ValueError):  # it shared the group, so it was rolled back with it
            await ingest
        assert store.writer_alive
        assert await store.get_event("e1") is None
        assert [r.created for r in await store.ingest([event("e1", "a")], T0)] == [True]

        # An open-ended job shares the group of the open-ended job before it (all on the writer thread).
        def mark(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE events SET type = 'marked' WHERE id = 'e1'")

        marking = asyncio.ensure_future(store.write(mark))
        with pytest.raises(ValueError, match="a bug"):
            await store.write(broken)
        with pytest.raises(ValueError):
            await marking
        assert store.writer_alive
        found = await store.get_event("e1")
        assert found is not None and found[0].type == "t"

    async def test_groups_are_of_one_kind_in_queue_order_and_stop_growing_at_group_rows(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def count(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

        commits = store.commits
        first = asyncio.ensure_future(store.ingest([event("e1", "a")], T0))
        counted = asyncio.ensure_future(store.write(count))  # open-ended: its own group, on the thread
        second = asyncio.ensure_future(store.ingest([event("e2", "a")], T0))
        assert await counted == 1  # after the first ingest, before the second
        await asyncio.gather(first, second)
        assert store.commits == commits + 3

        monkeypatch.setattr(store_module, "GROUP_ROWS", 4)  # an ingest of one event and one webhook is 2 rows
        commits = store.commits
        await asyncio.gather(*(store.ingest([event(f"g{n}", "a")], T0) for n in range(5)))
        assert store.commits == commits + 3  # 2 + 2 + 1 jobs

    async def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "new.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (999)")
        from relay.errors import StoreError

        with pytest.raises(StoreError, match="newer"):
            await Store(path).open()


@pytest.mark.parametrize(("durability", "synchronous"), [(Durability.FULL, 2), (Durability.NORMAL, 1)])
async def test_durability_sets_sqlite_synchronous(tmp_path: Path, durability: Durability, synchronous: int) -> None:
    store = Store(tmp_path / "relay.db", durability)
    await store.open()
    try:

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await store.write(read) == synchronous  # FULL = 2: fsync at every commit; NORMAL = 1
    finally:
        await store.close()
