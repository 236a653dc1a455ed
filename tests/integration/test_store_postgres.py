"""The PostgreSQL backend: the store contract on a real database, and what only PostgreSQL has: several relays on
one outbox (claims that skip each other, fencing and duplicates across relays, migrations at once, leases of live
relays left alone), an outage the pool heals from, and the configuration that picks it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from relay.config import StorageConfig
from relay.errors import StoreError, StoreUnavailable
from relay.models import EVERYTHING, Claim, Secret
from relay.store import NewEvent, Store, migrate_store, open_store, postgres
from relay.store import postgres_outbox as outbox
from relay.store.postgres import PostgresStore
from relay.store.postgres_schema import MIGRATIONS
from tests.integration.store_contract import (
    T0,
    S,
    StoreContract,
    attempt,
    event,
    result,
    status_of,
    tenant_event,
)
from tests.support.postgres import PostgresServer, database_name


def config(url: str, pool_size: int = 4) -> StorageConfig:
    return StorageConfig(url=Secret(url), pool_size=pool_size)


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def make_store(self, postgres_url: str) -> Callable[[], Store]:
        return lambda: open_store(config(postgres_url))

    async def test_a_url_opens_the_postgres_backend(self, store: Store) -> None:
        assert isinstance(store, PostgresStore) and store.pool_size == 4


async def wait_for_lock_waits(conn: Any, count: int) -> None:
    """Until ``count`` sessions of this database wait on a lock (what makes a race certain, not likely)."""
    for _ in range(500):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} sessions never waited on a lock")


# -- several relays on one outbox ------------------------------------------------------------------------


async def test_two_relays_claiming_at_once_never_take_one_delivery_twice(
    store_pair: list[PostgresStore], postgres_url: str
) -> None:
    a, b = store_pair
    await a.ingest([event(f"e{n}", "hook") for n in range(200)], T0)

    async def drain(store: PostgresStore) -> list[Claim]:
        taken: list[Claim] = []
        while claims := (await store.claim("hook", 7, T0, T0 + 60))[0]:
            taken.extend(claims)
        return taken

    claimers = [a, b, a, b]  # two claim loops per relay, all at once
    found = await asyncio.gather(*(drain(store) for store in claimers))
    taken = [claim.delivery_id for claimed in found for claim in claimed]
    assert len(taken) == len(set(taken)) == 200, "each delivery claimed once, every one claimed"
    conn = await asyncpg.connect(postgres_url)
    try:
        held = dict(await conn.fetch("SELECT lease_owner, count(*) FROM deliveries GROUP BY lease_owner"))
    finally:
        await conn.close()
    counted = {store.owner: 0 for store in store_pair}
    for store, claimed in zip(claimers, found, strict=True):
        assert {claim.lease.owner for claim in claimed} == {store.owner}
        counted[store.owner] += len(claimed)
    assert held == counted, "each lease is held, in the store, by the relay that claimed it"
    # Both relays claimed: neither waited for the other to finish (a claim skips rows another holds: the next test).
    # Per relay, not per claim loop: on a loaded machine one loop of a relay may find the queue drained.
    assert all(counted.values()), counted


async def test_a_claim_skips_rows_another_transaction_holds_without_waiting(
    store_pair: list[PostgresStore], postgres_url: str
) -> None:
    a, _ = store_pair
    await a.ingest([event(f"e{n}", "hook") for n in range(20)], T0)
    conn = await asyncpg.connect(postgres_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT seq FROM deliveries ORDER BY seq LIMIT 5 FOR UPDATE")  # another relay's claim
            claims, _ = await asyncio.wait_for(a.claim("hook", 100, T0, T0 + 60), 5)
            assert sorted(c.event.id for c in claims) == sorted(f"e{n}" for n in range(5, 20))
        claims, _ = await a.claim("hook", 100, T0, T0 + 60)
        assert sorted(c.event.id for c in claims) == sorted(f"e{n}" for n in range(5))
    finally:
        await conn.close()


async def test_a_claim_reads_the_due_index_in_due_order(postgres_url: str) -> None:
    """A claim costs its LIMIT, not the backlog: the due rows of one webhook come from ``deliveries_due`` in its
    own order, with nothing to sort (checked on the plan, sequential scans ruled out as a small table invites)."""
    store = PostgresStore(postgres_url)
    await store.open()
    conn = await asyncpg.connect(postgres_url)
    try:
        await store.ingest([event(f"e{n}", "a", "b") for n in range(200)], T0)
        await conn.execute("ANALYZE; SET enable_seqscan = off")
        [found] = await conn.fetchrow(f"EXPLAIN (FORMAT JSON) {outbox._CLAIM}", "a", T0, 10, T0 + 60, store.owner)
        plan = json.loads(found)[0]["Plan"]
    finally:
        await conn.close()
        await store.close()

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    [due] = [n for n in nodes(plan) if n.get("Subplan Name") == "CTE due"]
    inside = nodes(due)
    assert any(n.get("Index Name") == "deliveries_due" and n["Node Type"] == "Index Scan" for n in inside), inside
    assert not any(n["Node Type"] == "Sort" for n in inside), inside


async def test_a_stale_lease_is_fenced_out_once_another_relay_claimed(store_pair: list[PostgresStore]) -> None:
    a, b = store_pair
    await a.ingest([event("e1", "hook")], T0)
    [stale], _ = await a.claim("hook", 1, T0, T0 + 60)
    [fresh], _ = await b.claim("hook", 1, T0 + 61, T0 + 120)  # a stalled past its lease; b took the delivery
    assert (fresh.delivery_id, fresh.lease.owner) == (stale.delivery_id, b.owner)
    await a.record([result(stale, attempt(1, T0 + 1, ok=True), S.SUCCEEDED)])
    await a.release([stale], T0 + 62)
    found = await b.get_event("e1", scope=EVERYTHING)
    assert found is not None
    [delivery] = found[1]
    assert (delivery.status, delivery.attempt_count) == (S.DELIVERING, 0)
    await b.record([result(fresh, attempt(1, T0 + 61, ok=False, next_at=T0 + 500), S.PENDING)])
    assert await status_of(a, "e1") == {"hook": S.PENDING}

    # The same lease end on two relays (their clocks apart): the owner still tells the leases apart.
    await a.ingest([event("e2", "hook")], T0)
    [early], _ = await a.claim("hook", 1, T0, T0 + 100)  # e2
    [late], _ = await b.claim("hook", 1, T0 + 100, T0 + 100)
    assert late.delivery_id == early.delivery_id and late.lease.until == early.lease.until
    await a.record([result(early, attempt(1, T0, ok=True), S.SUCCEEDED)])
    await a.release([early], T0 + 101)
    assert await status_of(b, "e2") == {"hook": S.DELIVERING}
    await b.release([late], T0 + 101)
    assert await status_of(b, "e2") == {"hook": S.PENDING}


async def test_two_relays_ingesting_one_producer_id_at_once_store_it_once(
    store_pair: list[PostgresStore], postgres_url: str
) -> None:
    a, b = store_pair
    conn = await asyncpg.connect(postgres_url)
    try:
        for round_ in range(3):
            event_id = f"same{round_}"
            async with conn.transaction():  # holds both inserts back until both are waiting: a race for certain
                await conn.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
                ingests = asyncio.gather(
                    a.ingest([event(event_id, "x", "y")], T0), b.ingest([event(event_id, "x")], T0)
                )
                await wait_for_lock_waits(conn, 2)
            first, second = await ingests
            assert sorted([first[0].created, second[0].created]) == [False, True]
            assert first[0].deliveries == second[0].deliveries, "both answer as the one stored"
            found = await a.get_event(event_id, scope=EVERYTHING)
            assert found is not None and len(found[1]) == first[0].deliveries
        page = await b.list_events(event_type=None, since=None, until=None, cursor=None, limit=10, scope=EVERYTHING)
        assert sorted(e.id for e in page.events) == ["same0", "same1", "same2"]
    finally:
        await conn.close()


async def test_two_relays_racing_for_one_id_for_two_tenants_store_one_and_refuse_the_other(
    store_pair: list[PostgresStore], postgres_url: str
) -> None:
    """Both look the id up before either stores it; the one that loses the insert runs its group again, finds the
    other tenant's event, and refuses its request (``taken``), storing nothing of it."""
    a, b = store_pair
    conn = await asyncpg.connect(postgres_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
            ingests = asyncio.gather(
                a.ingest([tenant_event("race", "ta", "x"), tenant_event("a-only", "ta", "x")], T0),
                b.ingest([tenant_event("race", "tb", "y"), tenant_event("b-only", "tb", "y")], T0),
            )
            await wait_for_lock_waits(conn, 2)
        answers = await ingests
    finally:
        await conn.close()
    won = [i for i, answer in enumerate(answers) if answer[0].created]
    assert len(won) == 1, answers
    lost = answers[1 - won[0]]
    assert [r.taken for r in lost] == [True, False] and not any(r.created for r in lost)
    found = await a.get_event("race", scope=EVERYTHING)
    assert found is not None and found[0].tenant == ("ta", "tb")[won[0]]
    loser_only = ("b-only", "a-only")[won[0]]
    assert await a.get_event(loser_only, scope=EVERYTHING) is None


async def test_crossed_batches_of_the_same_ids_are_stored_once_even_through_a_deadlock(postgres_url: str) -> None:
    """Relay a stores x then y while relay b stores y then x. When each holds one and waits for the other,
    PostgreSQL breaks the deadlock by rolling one group back, and that group is tried again: either way, the answers
    agree and each event is stored once."""
    conn = await asyncpg.connect(postgres_url)
    await conn.execute(f"ALTER DATABASE \"{database_name(postgres_url)}\" SET deadlock_timeout = '20ms'")
    a, b = PostgresStore(postgres_url, pool_size=2), PostgresStore(postgres_url, pool_size=2)
    try:
        await a.open()
        await b.open()
        async with conn.transaction():
            await conn.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
            ingests = asyncio.gather(
                a.ingest([event("x", "h"), event("y", "h")], T0), b.ingest([event("y", "h"), event("x", "h")], T0)
            )
            await wait_for_lock_waits(conn, 2)
        first, second = await ingests
        answers = {r.id: r.created for r in first}, {r.id: r.created for r in second}
        assert sorted([answers[0]["x"], answers[1]["x"]]) == [False, True]
        assert sorted([answers[0]["y"], answers[1]["y"]]) == [False, True]
        assert await a.status_totals() == {"pending": 2}
    finally:
        await conn.close()
        await a.close()
        await b.close()


async def test_a_generated_id_another_relay_stored_meanwhile_gets_another(store_pair: list[PostgresStore]) -> None:
    a, b = store_pair
    await b.ingest([event("evt_foreseen", "h")], T0)  # not yet stored when a's group looked: found at insert
    made = NewEvent("evt_foreseen", "t", "2024-01-15T10:35:00Z", b"{}", ("h", "i"), generated=True)
    [answer] = await a.ingest([made], T0)
    assert answer.created and answer.id != "evt_foreseen" and answer.deliveries == 2
    assert await status_of(a, "evt_foreseen") == {"h": S.PENDING}


async def test_reclaim_leaves_the_leases_of_live_relays_alone(store_pair: list[PostgresStore]) -> None:
    a, b = store_pair
    await a.ingest([event("e1", "hook")], T0)
    await a.claim("hook", 1, T0, T0 + 600)
    assert await b.reclaim_abandoned(T0 + 1) == 0, "a is alive: its lease is its own"
    await a.close()
    assert await b.reclaim_abandoned(T0 + 2) == 1, "a closed: its lease is abandoned"
    assert await b.due_by_webhook() == {"hook": T0 + 2}


async def test_reclaim_takes_the_leases_of_a_relay_that_died(
    store_pair: list[PostgresStore], postgres_url: str
) -> None:
    """A relay killed without closing stays registered, but its heartbeat stops: once it has not been seen for
    ``ALIVE_WITHIN`` seconds (the database's clock), its leases are abandoned."""
    a, b = store_pair
    await a.ingest([event("e1", "hook"), event("e2", "hook")], T0)
    await a.claim("hook", 1, T0, T0 + 600)
    await b.claim("hook", 1, T0, T0 + 600)
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "UPDATE relays SET seen_at = seen_at - $1 - 1 WHERE owner = $2", postgres.ALIVE_WITHIN, a.owner
        )
    finally:
        await conn.close()
    assert await b.reclaim_abandoned(T0 + 1) == 1, "a's lease only: b is alive"
    assert await status_of(b, "e1") == {"hook": S.PENDING} and await status_of(b, "e2") == {"hook": S.DELIVERING}
    await a.check_writable()  # a was only slow: it is seen again (its stale result is fenced out, see above)
    assert await b.reclaim_abandoned(T0 + 2) == 0


async def test_take_over_skips_a_delivery_its_relay_is_writing_and_takes_it_next_time(
    store_pair: list[PostgresStore], postgres_url: str
) -> None:
    """A ran-out lease whose row another transaction holds (its relay recording or renewing it right now) is
    skipped, without waiting (no lock wait, no deadlock with that relay); the next take-over frees it if it is
    still abandoned then."""
    a, b = store_pair
    await a.ingest([event("e1", "hook"), event("e2", "hook")], T0)
    held, _ = await b.claim("hook", 2, T0, T0 + 20)
    first = min(c.lease.ref for c in held)
    conn = await asyncpg.connect(postgres_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT seq FROM deliveries WHERE seq = $1 FOR UPDATE", first)
            assert await asyncio.wait_for(a.take_over(T0 + 20), 5) == ["hook"]
            statuses = await status_of(a, "e1"), await status_of(a, "e2")
            assert sorted(s["hook"] for s in statuses) == [S.DELIVERING, S.PENDING]
        assert await a.take_over(T0 + 21) == ["hook"]
    finally:
        await conn.close()
    assert await status_of(a, "e1") == await status_of(a, "e2") == {"hook": S.PENDING}


async def test_take_over_makes_ran_out_leases_due_again_and_tells_the_other_relays(
    store_pair: list[PostgresStore],
) -> None:
    """While relays run: a lease that ran out (its relay stopped renewing it) is due again, announced."""
    a, b = store_pair
    heard: list[list[str]] = []
    a.on_signals(heard.append, lambda: None, lambda: None)
    await a.ingest([event("e1", "hook"), event("e2", "other")], T0)
    [held], _ = await b.claim("hook", 1, T0, T0 + 20)
    await a.claim("other", 1, T0, T0 + 600)
    assert await b.take_over(T0 + 19) == [], "both leases live"
    assert await b.take_over(T0 + 20) == ["hook"], "b's lease ran out, unrenewed"
    assert await status_of(a, "e1") == {"hook": S.PENDING} and await status_of(a, "e2") == {"other": S.DELIVERING}
    assert await b.renew([held], T0 + 21, T0 + 41) == [], "given up: not renewed any more"
    for _ in range(200):
        if heard:
            break
        await asyncio.sleep(0.01)
    assert heard == [["hook"]]


async def test_the_heartbeat_keeps_a_relay_seen(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "HEARTBEAT", 0.01)
    store = PostgresStore(postgres_url)
    await store.open()
    conn = await asyncpg.connect(postgres_url)
    try:
        first = await conn.fetchval("SELECT seen_at FROM relays WHERE owner = $1", store.owner)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if await conn.fetchval("SELECT seen_at FROM relays WHERE owner = $1", store.owner) > first:
                break
        else:
            raise AssertionError("seen_at never moved")
    finally:
        await conn.close()
        await store.close()


async def test_migrations_run_at_once_from_three_relays(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, pool_size=1) for _ in range(3)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        versions = await asyncio.gather(*(migrate_store(config(postgres_url)) for _ in range(3)))
        assert versions == [(len(MIGRATIONS), len(MIGRATIONS))] * 3
        await stores[0].ingest([event("e1", "a")], T0)
        assert await stores[2].get_event("e1", scope=EVERYTHING) is not None
    finally:
        for store in stores:
            await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetch("SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
        assert await conn.fetchval("SELECT count(*) FROM relays") == 0, "each relay left when it closed"
    finally:
        await conn.close()


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "CREATE TABLE schema_version (version integer NOT NULL); INSERT INTO schema_version VALUES (99)"
        )
    finally:
        await conn.close()
    store = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="schema version 99, newer"):
        await store.open()


# -- outages ---------------------------------------------------------------------------------------------


async def test_an_outage_is_unavailable_and_the_store_comes_back_by_itself(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    store = open_store(config(postgres_url, pool_size=2))
    await store.open()
    try:
        await store.ingest([event("before", "a")], T0)
        await postgres_server.stop_async()
        committed: list[object] = []
        with pytest.raises(StoreUnavailable, match="database"):
            await store.submit_ingest([event("during", "a")], T0, None, committed.append)
        assert committed == [None], "the commit hook hears of the failure: nothing was acknowledged"
        with pytest.raises(StoreUnavailable, match="database") as raised:
            await store.check_writable()
        assert "Connect" in str(raised.value) or "refused" in str(raised.value).lower()
        with pytest.raises(StoreUnavailable):
            await store.get_event("before", scope=EVERYTHING)
        with pytest.raises(StoreUnavailable):
            await store.claim("a", 1, T0, T0 + 60)

        await postgres_server.start_async()
        await store.check_writable()
        [answer] = await store.ingest([event("after", "a")], T0 + 1)
        assert answer.created
        assert (
            await store.get_event("during", scope=EVERYTHING) is None
            and await store.get_event("before", scope=EVERYTHING) is not None
        )
        claims, _ = await store.claim("a", 10, T0 + 1, T0 + 60)
        assert sorted(c.event.id for c in claims) == ["after", "before"]
    finally:
        await postgres_server.start_async()
        await store.close()


async def test_a_database_that_cannot_be_reached_fails_open_as_unavailable(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("postgres").replace(f":{postgres_server.port}/", ":1/")  # nothing listens on port 1
    store = open_store(config(url))
    with pytest.raises(StoreUnavailable, match="cannot reach the database"):
        await asyncio.wait_for(store.open(), 10)
    with pytest.raises(StoreUnavailable):
        await store.ingest([event("e1", "a")], T0)


async def test_a_url_the_driver_cannot_read_fails_open_without_showing_it(postgres_server: PostgresServer) -> None:
    url = postgres_server.url().replace(f":{postgres_server.port}/", ":port/")
    store = open_store(config(url))
    with pytest.raises(StoreError, match=r"storage\.url is not a PostgreSQL URL") as raised:
        await store.open()
    assert postgres_server.password not in str(raised.value)


async def test_a_read_only_database_is_not_writable(postgres_url: str) -> None:
    store = open_store(config(postgres_url))
    await store.open()
    try:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'ALTER DATABASE "{database_name(postgres_url)}" SET default_transaction_read_only = on')
        finally:
            await conn.close()
        assert isinstance(store, PostgresStore)
        pool = store._pool
        await pool.expire_connections()  # new sessions take the database's new default
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.check_writable()
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.ingest([event("e1", "a")], T0)
    finally:
        await store.close()
