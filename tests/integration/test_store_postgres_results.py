"""The PostgreSQL backend's group commit for attempt results: concurrent ``record`` calls share one transaction,
fenced per delivery as one call alone is; a group that fails fails every caller and leaves nothing behind; records
during a database restart are unavailable, and work again after it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay.errors import StoreUnavailable
from relay.models import EVERYTHING, Claim
from relay.store import postgres_outbox as outbox
from relay.store.postgres import PostgresStore
from tests.integration.store_contract import T0, S, attempt, event, result
from tests.support.postgres import PostgresServer


async def deliveries(store: PostgresStore, event_ids: list[str]) -> dict[str, tuple[S, int, int]]:
    """Each event's one delivery: its status, attempt count and attempts stored."""
    found = {}
    for event_id in event_ids:
        got = await store.get_event(event_id, scope=EVERYTHING)
        assert got is not None
        [delivery] = got[1]
        found[event_id] = (delivery.status, delivery.attempt_count, len(delivery.attempts))
    return found


async def test_concurrent_records_share_one_group_and_each_is_fenced(store_pair: list[PostgresStore]) -> None:
    a, b = store_pair
    ids = [f"e{n:02}" for n in range(40)]
    await a.ingest([event(i, "hook") for i in ids], T0)
    mine, _ = await a.claim("hook", 40, T0, T0 + 60)
    taken, _ = await b.claim("hook", 20, T0 + 61, T0 + 120)  # a stalled past its lease: b took the oldest 20
    stale = {c.delivery_id for c in taken}
    assert len(mine) == 40 and len(stale) == 20
    current = [c for c in mine if c.delivery_id not in stale]
    twice = current[0]  # two results for one delivery in the group: the first decides, as one by one

    def ok(claim: Claim) -> Any:
        return a.record([result(claim, attempt(1, T0 + 1, ok=True), S.SUCCEEDED)])

    before = a.commits
    await asyncio.gather(
        *(ok(c) for c in mine),
        a.record([result(twice, attempt(1, T0 + 2, ok=False, next_at=T0 + 500), S.PENDING)]),
    )
    assert a.commits == before + 1, "every record of the burst went into one transaction"

    found = await deliveries(a, ids)
    by_id = {c.delivery_id: c.event.id for c in mine}
    for claim in current:
        assert found[by_id[claim.delivery_id]] == (S.SUCCEEDED, 1, 1)
    for delivery_id in stale:  # b's leases: unchanged, though a's attempts are kept in the log
        assert found[by_id[delivery_id]] == (S.DELIVERING, 0, 1)

    # b's own results for the deliveries it took over count.
    await asyncio.gather(*(b.record([result(c, attempt(1, T0 + 62, ok=True), S.SUCCEEDED)]) for c in taken))
    assert {status for status, _, _ in (await deliveries(b, ids)).values()} == {S.SUCCEEDED}


async def test_a_failed_group_fails_every_caller_and_leaves_nothing_behind(
    store_pair: list[PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = store_pair
    ids = [f"e{n:02}" for n in range(10)]
    await a.ingest([event(i, "hook") for i in ids], T0)
    claims, _ = await a.claim("hook", 10, T0, T0 + 60)
    record = outbox.record
    groups: list[int] = []

    async def record_then_lose_the_connection(conn: Any, results: Any) -> None:
        await record(conn, results)  # every statement of the group ran: only the commit is missing
        groups.append(len(results))
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(outbox, "record", record_then_lose_the_connection)
    answers = await asyncio.gather(
        *(a.record([result(c, attempt(1, T0 + 1, ok=True), S.SUCCEEDED)]) for c in claims),
        return_exceptions=True,
    )
    assert groups == [10]
    assert all(isinstance(answer, StoreUnavailable) for answer in answers), answers
    assert set((await deliveries(a, ids)).values()) == {(S.DELIVERING, 0, 0)}

    monkeypatch.setattr(outbox, "record", record)  # the writer goes on: the same results, again, commit
    await asyncio.gather(*(a.record([result(c, attempt(1, T0 + 1, ok=True), S.SUCCEEDED)]) for c in claims))
    assert set((await deliveries(a, ids)).values()) == {(S.SUCCEEDED, 1, 1)}


async def test_records_during_a_restart_are_unavailable_and_work_again_after(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    store = PostgresStore(postgres_url, pool_size=2)
    await store.open()
    try:
        ids = ["e1", "e2", "e3"]
        await store.ingest([event(i, "hook") for i in ids], T0)
        claims, _ = await store.claim("hook", 3, T0, T0 + 60)
        first, *rest = claims
        await postgres_server.stop_async()
        answers = await asyncio.gather(
            *(store.record([result(c, attempt(1, T0 + 1, ok=True), S.SUCCEEDED)]) for c in claims),
            return_exceptions=True,
        )
        assert all(isinstance(answer, StoreUnavailable) for answer in answers), answers

        await postgres_server.start_async()
        await store.record([result(first, attempt(1, T0 + 2, ok=True), S.SUCCEEDED)])
        await asyncio.gather(*(store.record([result(c, attempt(1, T0 + 2, ok=True), S.SUCCEEDED)]) for c in rest))
        assert set((await deliveries(store, ids)).values()) == {(S.SUCCEEDED, 1, 1)}
    finally:
        await postgres_server.start_async()
        await store.close()
