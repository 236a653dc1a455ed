"""Several relays on one PostgreSQL outbox (CONTRACT §8, CLUSTERING points 4 and 5), each an in-process daemon:
relays wake each other through NOTIFY/LISTEN, follow each other's webhook changes, survive a database restart,
and run the group's periodic work once per interval, not once per relay."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog
from structlog.testing import capture_logs

from relay.clock import Clock, FakeClock
from relay.config import Config, StorageConfig
from relay.models import Secret, Webhook
from relay.store.postgres import PostgresStore
from tests.support.management import call, create_webhook
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver
from tests.support.relay_harness import RunningRelay, make_config, poll_until, running_relay, webhook

log = structlog.get_logger()

WAKE_LIMIT = 1.0  # seconds from A's ingest to B's attempt; the safety scan (30 s) would be far slower
FOLLOW_LIMIT = 2.0  # seconds for a webhook change to reach every relay (CONTRACT §8)


def group_config(tmp_path: Path, url: str, webhooks: list[Webhook], **delivery: Any) -> Config:
    config = make_config(tmp_path, webhooks, **delivery)
    return replace(config, storage=StorageConfig(url=Secret(url), pool_size=4, retention=4.0))


@contextlib.asynccontextmanager
async def relays(
    count: int, tmp_path: Path, url: str, webhooks: list[Webhook], *, clock: Clock | None = None, **delivery: Any
) -> AsyncIterator[list[RunningRelay]]:
    config = group_config(tmp_path, url, webhooks, **delivery)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(running_relay(tmp_path, [], config=config, clock=clock))
            for _ in range(count)
        ]


def store_of(relay: RunningRelay) -> PostgresStore:
    store = relay.daemon.store
    assert isinstance(store, PostgresStore)
    return store


def unable_to_deliver(relay: RunningRelay) -> None:
    """The relay takes events but attempts none: its scheduler stops claiming (as at shutdown), so every delivery
    it ingests is committed queued, for another relay to take."""
    assert relay.daemon.scheduler is not None
    relay.daemon.scheduler.stop_claiming()


async def test_an_event_ingested_on_one_relay_is_attempted_at_once_by_another(
    tmp_path: Path, postgres_url: str, receiver: Receiver
) -> None:
    async with relays(2, tmp_path, postgres_url, [webhook(receiver.url())]) as (a, b):
        unable_to_deliver(a)
        latencies = []
        for n in range(20):
            sent = time.time()
            status, body = await a.post({"id": f"evt_{n}", "type": "consent.created", "data": {}})
            assert status == 202, body
            [request] = (await receiver.wait_for(n + 1, timeout=WAKE_LIMIT))[n:]
            assert request.headers["x-event-id"] == f"evt_{n}"
            latencies.append(request.received_at - sent)
        p50 = statistics.median(latencies)
        log.info("wake_up_latency", p50_ms=round(p50 * 1000, 1), max_ms=round(max(latencies) * 1000, 1))
        assert max(latencies) < WAKE_LIMIT

        async def all_delivered() -> bool:
            _, body = await b.get("/v1/deliveries?status=succeeded&limit=100")
            return len(body["data"]) == 20

        await poll_until(all_delivered)


async def test_a_webhook_changed_through_one_relay_takes_effect_on_the_others(
    tmp_path: Path, postgres_url: str, receiver: Receiver
) -> None:
    async with relays(3, tmp_path, postgres_url, []) as (a, b, c):
        created = await create_webhook(a, url=receiver.url(), events=["consent.created"])
        hook = created["id"]
        for other in (b, c):
            await poll_until(lambda other=other: other.daemon.registry.get(hook) is not None, FOLLOW_LIMIT)

        status, _ = await call(c, "PATCH", f"/v1/webhooks/{hook}", {"is_active": False})
        assert status == 200
        for other in (a, b):
            await poll_until(lambda other=other: not other.daemon.registry.get(hook).is_active, FOLLOW_LIMIT)

        status, _ = await call(b, "DELETE", f"/v1/webhooks/{hook}")
        assert status == 204
        for other in (a, c):
            await poll_until(lambda other=other: other.daemon.registry.get(hook) is None, FOLLOW_LIMIT)


async def test_a_created_webhook_gets_events_ingested_on_another_relay(
    tmp_path: Path, postgres_url: str, receiver: Receiver
) -> None:
    async with relays(2, tmp_path, postgres_url, []) as (a, b):
        created = await create_webhook(a, url=receiver.url(), events=["consent.created"])
        await poll_until(lambda: b.daemon.registry.get(created["id"]) is not None, FOLLOW_LIMIT)
        status, body = await b.post({"id": "evt_1", "type": "consent.created", "data": {}})
        assert status == 202 and body["data"]["deliveries"] == 1
        await receiver.wait_for(1)


async def test_signals_come_back_after_the_database_restarts(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer, receiver: Receiver
) -> None:
    async with relays(2, tmp_path, postgres_url, [webhook(receiver.url())]) as (a, b):
        unable_to_deliver(a)
        listener = store_of(b).listener
        await asyncio.wait_for(listener.listening.wait(), 5.0)
        with capture_logs() as logs:
            await postgres_server.stop_async()
            await poll_until(lambda: not listener.listening.is_set())
            await postgres_server.start_async()
            await asyncio.wait_for(listener.listening.wait(), 5.0)
            await poll_until(lambda: any(e["event"] == "store_listener_reconnected" for e in logs))

        async def ingested() -> bool:  # A's pool finds the database again on its own
            status, _ = await a.post({"id": "evt_after", "type": "consent.created", "data": {}})
            return status == 202

        await poll_until(ingested)
        sent = time.time()
        [request] = await receiver.wait_for(1, timeout=WAKE_LIMIT)
        assert request.headers["x-event-id"] == "evt_after"
        assert request.received_at - sent < WAKE_LIMIT


async def test_a_delivery_queued_while_signals_were_down_is_found_by_the_rescan(
    tmp_path: Path, postgres_url: str, receiver: Receiver
) -> None:
    """A notification the listener missed (it was not listening): the rescan after it reconnects finds the work."""
    async with relays(2, tmp_path, postgres_url, [webhook(receiver.url())]) as (a, b):
        unable_to_deliver(a)
        listener = store_of(b).listener
        await asyncio.wait_for(listener.listening.wait(), 5.0)
        b_due, listener.due = listener.due, lambda ids: None  # B hears nothing of A's ingest
        status, _ = await a.post({"id": "evt_missed", "type": "consent.created", "data": {}})
        assert status == 202
        await asyncio.sleep(0.2)
        assert receiver.requests == []
        listener.due = b_due
        listener.rescan()  # what the listener does once it is back
        [request] = await receiver.wait_for(1, timeout=WAKE_LIMIT)
        assert request.headers["x-event-id"] == "evt_missed"


async def test_pruning_runs_on_one_relay_of_the_group_per_interval(tmp_path: Path, postgres_url: str) -> None:
    clock = FakeClock()
    async with relays(3, tmp_path, postgres_url, [], clock=clock) as group:
        owners = {store_of(relay).owner for relay in group}
        with capture_logs() as logs:
            for round_ in range(1, 6):
                clock.advance(1.0)  # the prune interval: retention (4 s) / 4
                await poll_until(lambda round_=round_: _runs(logs, "prune") == round_)
                await asyncio.sleep(0.1)  # the relays that lost the round have answered too
            assert _runs(logs, "prune") == 5
        conn = await asyncpg.connect(postgres_url)
        try:
            row = await conn.fetchrow("SELECT next_run_at, last_run_at, last_owner FROM jobs WHERE name = 'prune'")
        finally:
            await conn.close()
        assert row["last_run_at"] == clock.now() and row["next_run_at"] == clock.now() + 1.0
        assert row["last_owner"] in owners


def _runs(logs: list[dict[str, Any]], job: str) -> int:
    return sum(1 for e in logs if e["event"] == "job_started" and e.get("job") == job)


async def test_a_parked_delivery_is_re_driven_once_per_interval_across_the_group(
    tmp_path: Path, postgres_url: str, receiver: Receiver
) -> None:
    """Re-drive is each parked delivery's own due time (``redrive_interval`` after its last attempt), claimed with
    SKIP LOCKED: with every relay scanning at once (the safety scan, 30 s, falls inside each interval), one
    attempt per interval, not one per relay."""
    clock = FakeClock()
    receiver.script("/hook", [500])
    config = dict(retry_schedule=(0.0,), redrive_interval=60.0)
    async with relays(3, tmp_path, postgres_url, [webhook(receiver.url())], clock=clock, **config) as (a, _, _):
        status, _ = await a.post({"id": "evt_parked", "type": "consent.created", "data": {}})
        assert status == 202
        await receiver.wait_for(1)
        await poll_until(lambda: _status(a, "evt_parked", "failed"))
        for round_ in range(2, 5):
            clock.advance(60.0)
            await receiver.wait_for(round_)
            await poll_until(lambda: _status(a, "evt_parked", "failed"))
            await asyncio.sleep(0.1)  # the relays that lost the claim have answered too
            assert len(receiver.requests) == round_


async def _status(relay: RunningRelay, event_id: str, status: str) -> bool:
    return await relay.statuses(event_id) == [status]
