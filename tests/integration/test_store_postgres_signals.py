"""The PostgreSQL backend's signals between relays (NOTIFY at commit, LISTEN on a connection of each relay's own) and
its jobs claimed once per group, store against store (the daemons' side is in test_postgres_group.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from relay.errors import StoreError
from relay.models import EVERYTHING
from relay.store import Room
from relay.store.postgres import PostgresStore
from relay.store.postgres_signals import PAYLOAD_BYTES, due_payloads
from tests.integration.store_contract import T0, event
from tests.support.postgres import PostgresServer
from tests.support.relay_harness import poll_until


class Heard:
    """What one store's callbacks were told."""

    def __init__(self, store: PostgresStore) -> None:
        self.due: list[list[str]] = []
        self.webhooks_changed = 0
        self.rescans = 0
        store.on_signals(self.due.append, self._changed, self._rescan)

    def _changed(self) -> None:
        self.webhooks_changed += 1

    def _rescan(self) -> None:
        self.rescans += 1

    def due_ids(self) -> set[str]:
        return {webhook_id for ids in self.due for webhook_id in ids}


@pytest.fixture
async def relays(postgres_url: str) -> AsyncIterator[list[PostgresStore]]:
    """Three relays on one outbox, each listening."""
    opened = [PostgresStore(postgres_url, pool_size=4) for _ in range(3)]
    await asyncio.gather(*(store.open() for store in opened))
    try:
        await asyncio.gather(*(asyncio.wait_for(store.listener.listening.wait(), 5.0) for store in opened))
        yield opened
    finally:
        for store in opened:
            await store.close()


async def test_an_ingest_tells_the_other_relays_which_webhooks_have_queued_deliveries(
    relays: list[PostgresStore],
) -> None:
    a, b, c = relays
    heard = [Heard(store) for store in relays]
    # One delivery of "leased" is committed leased to A (its scheduler attempts it): nobody else needs to hear.
    await a.ingest([event("e1", "queued", "leased"), event("e2", "also")], T0, {"leased": Room(1, T0 + 60)})
    for other in heard[1:]:
        await poll_until(lambda other=other: other.due_ids() == {"queued", "also"})
    await b.ingest([event("e1", "queued", "leased")], T0)  # a duplicate: nothing new, nothing to tell
    await c.ingest([event("e3", "third")], T0)
    await poll_until(lambda: heard[0].due_ids() == {"third"} and heard[1].due_ids() == {"queued", "also", "third"})
    assert heard[2].due_ids() == {"queued", "also"}  # a relay does not hear itself
    assert [h.webhooks_changed for h in heard] == [0, 0, 0]


async def test_replay_redrive_and_release_tell_the_other_relays(relays: list[PostgresStore]) -> None:
    a, b, _ = relays
    heard = Heard(b)
    await a.ingest([event("e1", "one")], T0)
    await poll_until(lambda: heard.due_ids() == {"one"})
    heard.due.clear()
    await a.replay("e1", ["two"], T0, scope=EVERYTHING)
    await poll_until(lambda: heard.due_ids() == {"two"})
    heard.due.clear()
    claims, _ = await a.claim("one", 1, T0, T0 + 60)
    await a.release(claims, T0)
    await poll_until(lambda: heard.due_ids() == {"one"})
    heard.due.clear()
    await a.redrive(T0, ["one", "two"], include_dead=False)  # nothing parked: nothing to tell
    await a.ingest([event("e2", "three")], T0)
    await poll_until(lambda: heard.due_ids() == {"three"})


async def test_webhook_changes_through_the_api_tell_the_other_relays(relays: list[PostgresStore]) -> None:
    a, b, c = relays
    heard = [Heard(store) for store in relays]
    assert await a.insert_api_webhook("w", b'{"url": "https://x.test"}', T0)
    assert not await b.insert_api_webhook("w", b"{}", T0)  # taken: no change
    assert await b.update_api_webhook("w", b'{"url": "https://y.test"}', T0)
    assert await c.delete_api_webhook("w", T0) == 0
    assert await c.delete_api_webhook("w", T0) is None  # gone: no change
    await poll_until(lambda: [h.webhooks_changed for h in heard] == [2, 2, 2])
    assert all(h.due == [] for h in heard)


async def test_many_webhooks_go_in_payloads_under_the_limit() -> None:
    ids = [f"whk_{n:04d}_" + "x" * 90 for n in range(300)]  # ~30 kB of ids
    payloads = due_payloads("host:1:abcd", ids)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= PAYLOAD_BYTES + 200 for p in payloads)
    assert [webhook_id for p in payloads for webhook_id in orjson.loads(p)[1]] == sorted(ids)


async def test_many_webhooks_reach_the_other_relays(relays: list[PostgresStore]) -> None:
    a, b, _ = relays
    heard = Heard(b)
    ids = [f"whk_{n:04d}_" + "x" * 90 for n in range(300)]
    await a.ingest([event(f"e{n}", webhook_id) for n, webhook_id in enumerate(ids)], T0)
    await poll_until(lambda: heard.due_ids() == set(ids))
    assert len(heard.due) > 1


async def test_a_job_runs_on_one_relay_per_interval(relays: list[PostgresStore]) -> None:
    async def claims(now: float) -> list[bool]:
        return list(await asyncio.gather(*(store.claim_job("prune", now, 60.0) for store in relays)))

    assert sorted(await claims(T0)) == [False, False, True]
    assert await claims(T0 + 59) == [False, False, False]
    assert sorted(await claims(T0 + 60)) == [False, False, True]
    assert await relays[0].claim_job("redrive", T0 + 60, 60.0)  # another job has a row of its own


async def test_the_listener_comes_back_after_the_database_restarts_and_asks_for_a_rescan(
    relays: list[PostgresStore], postgres_server: PostgresServer
) -> None:
    a, b, _ = relays
    heard = Heard(b)
    await postgres_server.stop_async()
    await poll_until(lambda: not b.listener.listening.is_set())
    await postgres_server.start_async()
    await poll_until(lambda: heard.rescans == 1)

    async def ingested() -> bool:
        try:
            await a.ingest([event("after", "hook")], T0)
        except StoreError:
            return False
        return True

    await poll_until(ingested)
    await poll_until(lambda: heard.due_ids() == {"hook"})
