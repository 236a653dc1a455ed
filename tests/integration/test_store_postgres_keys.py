"""Ordering keys on PostgreSQL across relays (CONTRACT §11, CLUSTERING.md point 8): at most one attempt of a key in
flight in the whole group, even when two relays ingest the same key at once; and unkeyed work pays nothing for it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from relay.models import EVERYTHING
from relay.store import Room
from relay.store import postgres_outbox as outbox
from relay.store.postgres import PostgresStore
from relay.store.postgres_writer import Job
from tests.integration.store_contract import T0, S, attempt, event, keyed, result
from tests.integration.test_store_postgres import wait_for_lock_waits


@pytest.mark.parametrize("mode", ["fifo", "latest"])
async def test_two_relays_ingesting_one_key_at_once_make_one_head(
    store_pair: list[PostgresStore], postgres_url: str, mode: str
) -> None:
    """Both ingests are held back at the same point until both wait (the table lock below, or the key's lock the
    first one took): neither sees the other's rows when it starts, so without the key's lock both would make a
    head."""
    a, b = store_pair
    conn = await asyncpg.connect(postgres_url)
    try:
        for round_, rooms in enumerate([None, {"f": Room(5, T0 + 60)}]):
            key = f"k{round_}"
            async with conn.transaction():
                await conn.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
                ingests = asyncio.gather(
                    a.ingest([keyed(f"a{round_}", key, f=mode)], T0, rooms),
                    b.ingest([keyed(f"b{round_}", key, f=mode)], T0, rooms),
                )
                await wait_for_lock_waits(conn, 2)
            answers = await ingests
            leased = [c for answer in answers for r in answer for c in r.leased]
            rows = await conn.fetch(
                "SELECT status, due_at IS NOT NULL AS due FROM deliveries WHERE ordering_key = $1 ORDER BY seq", key
            )
            heads = [r for r in rows if r["status"] == "delivering" or r["due"]]
            assert len(heads) == 1, rows
            assert len(leased) == (0 if rooms is None else 1)
            if mode == "latest":  # the later one supersedes the earlier, unless that one was leased already
                assert sorted(r["status"] for r in rows) in (
                    ["pending", "superseded"],
                    ["delivering", "pending"],
                )
            claims = (await a.claim("f", 10, T0 + 1, T0 + 30))[0] + (await b.claim("f", 10, T0 + 1, T0 + 30))[0]
            assert len(claims) + len(leased) == 1
            for claim in [*claims, *leased]:
                await a.record([result(claim, attempt(1, T0 + 2, ok=True), S.SUCCEEDED)])
            later = (await b.claim("f", 10, T0 + 3, T0 + 30))[0]
            assert len(later) == (1 if mode == "fifo" or rows[0]["status"] == "delivering" else 0)
            for claim in later:
                await b.record([result(claim, attempt(1, T0 + 3, ok=True), S.SUCCEEDED)])
    finally:
        await conn.close()


async def test_two_relays_claiming_at_once_never_take_two_of_one_key(store_pair: list[PostgresStore]) -> None:
    a, b = store_pair
    await a.ingest([keyed(f"e{k}-{n}", f"k{k}", f="fifo") for n in range(3) for k in range(20)], T0)
    for round_ in range(3):
        now = T0 + round_
        found = await asyncio.gather(*(store.claim("f", 7, now, now + 60) for store in (a, b, a, b)))
        claims = [c for claims, _ in found for c in claims]
        assert sorted(c.event.id.split("-")[0] for c in claims) == [f"e{k}" for k in sorted(range(20), key=str)]
        assert {c.event.id.split("-")[1] for c in claims} == {str(round_)}, "in each key's order"
        await a.record([result(c, attempt(1, now, ok=True), S.SUCCEEDED) for c in claims])


async def test_a_cancel_and_a_result_of_one_key_at_once_promote_one(store_pair: list[PostgresStore]) -> None:
    """The head's attempt ends on one relay while the waiting one behind it is cancelled on the other: the key
    moves on once, to the third."""
    a, b = store_pair
    await a.ingest([keyed(f"e{n}", "k", f="fifo") for n in range(3)], T0)
    [head], _ = await a.claim("f", 10, T0, T0 + 60)
    found = await a.get_event("e1", scope=EVERYTHING)
    assert found is not None
    await asyncio.gather(
        a.record([result(head, attempt(1, T0, ok=True), S.SUCCEEDED)]),
        b.cancel(found[1][0].id, T0, scope=EVERYTHING),
    )
    claims = (await b.claim("f", 10, T0 + 1, T0 + 60))[0]
    assert [c.event.id for c in claims] == ["e2"]


class _Recording:
    """A connection that notes every statement it runs."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.conn, name)
        if name not in ("execute", "fetch", "fetchval", "fetchrow"):
            return method

        async def run(sql: str, *args: Any) -> Any:
            self.statements.append(sql)
            return await method(sql, *args)

        return run


async def test_unkeyed_ingest_and_results_run_no_statement_more(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()  # migrated
    conn = await asyncpg.connect(postgres_url)
    try:
        recording = _Recording(conn)
        events = [event("e1", "a", "b"), event("e2", "a")]
        events[1].generated = True
        async with conn.transaction():
            [answers] = await outbox.apply_ingest(recording, [Job(events, T0, {"a": Room(1, T0 + 60)}, 5)], "me")
        assert len(recording.statements) == 3  # the producers' ids looked up, the events, the deliveries
        recording.statements.clear()
        [claim] = answers[0].leased
        async with conn.transaction():
            await outbox.record(recording, [result(claim, attempt(1, T0, ok=True), S.SUCCEEDED)])
        assert len(recording.statements) == 2  # the attempts, the decisions
        assert not any("advisory" in sql or "ordering_key IS NOT NULL" in sql for sql in recording.statements)
    finally:
        await conn.close()
