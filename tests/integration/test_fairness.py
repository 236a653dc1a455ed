"""CONTRACT §9 Fairness: one customer's backlog does not delay another customer's fresh deliveries.

The slow customer's webhook has 100,000 deliveries due to an endpoint that takes half a second per answer; the
fast customer's fresh events must all be delivered while that backlog is still almost entirely waiting, and the
slow lane never has more than ``per_webhook_concurrency`` attempts in flight. The global ``concurrency`` is set
below twice the per-webhook limit, so a lane that took more than its share would starve the other.

Tenants are not modelled here: a tenant field does not change lanes, which are per webhook, so two webhooks
without a tenant stand for the two customers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from relay.store import NewEvent, open_store
from tests.support.receiver import Receiver, serve_locally
from tests.support.relay_harness import make_config, running_relay, webhook

BACKLOG = 100_000
SEED_BATCH = 5_000
FRESH = 40
PER_WEBHOOK = 8
SLOW_ANSWER = 0.5  # seconds the slow customer's endpoint takes per request
GUARD = 30.0  # a failure guard only: nothing below is timed


class SlowEndpoint:
    """The slow customer's endpoint: answers 200 after ``delay`` seconds, and counts the requests in flight."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.saturated = asyncio.Event()  # set once PER_WEBHOOK requests were in flight together
        self._stopping = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= PER_WEBHOOK:
            self.saturated.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delay):
                    await self._stopping.wait()
            return web.Response(status=200)
        finally:
            self.in_flight -= 1

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner, port = await serve_locally(app, shutdown_timeout=1.0)
        try:
            yield f"http://127.0.0.1:{port}/hook"
        finally:
            self._stopping.set()
            await runner.cleanup()


async def seed_backlog(tmp_path: Path, webhook_id: str, count: int) -> None:
    """``count`` deliveries of ``webhook_id`` due now, through the store's batch ingest, before the relay starts."""
    store = open_store(make_config(tmp_path, []).storage)
    await store.open()
    try:
        now = time.time()
        for start in range(0, count, SEED_BATCH):
            events = [
                NewEvent(f"evt_backlog_{n}", "consent.backlog", "2026-01-01T00:00:00Z", b"{}", (webhook_id,))
                for n in range(start, min(start + SEED_BATCH, count))
            ]
            await store.ingest(events, now)
    finally:
        await store.close()


# Below 2 × PER_WEBHOOK, the fast lane gets only what the slow one leaves; at PER_WEBHOOK, the slow lane alone fills
# the global limit (as 16 slow webhooks of one tenant would with the defaults), and the lanes must take turns for
# the slots that free up: a slot must not always go back to the lane that was there first.
@pytest.mark.parametrize("concurrency", [12, PER_WEBHOOK])
async def test_a_slow_customers_backlog_does_not_delay_a_fast_customers_fresh_events(
    tmp_path: Path, receiver: Receiver, concurrency: int
) -> None:
    slow = SlowEndpoint(SLOW_ANSWER)
    await seed_backlog(tmp_path, "slow-customer", BACKLOG)
    async with slow.serving() as slow_url:
        hooks = [
            webhook(slow_url, id="slow-customer", events=("consent.backlog",)),
            webhook(receiver.url("/fast"), id="fast-customer", events=("consent.created",)),
        ]
        async with running_relay(
            tmp_path, hooks, concurrency=concurrency, per_webhook_concurrency=PER_WEBHOOK
        ) as relay:
            # The backlog found at startup fills the slow lane before the fast customer posts anything.
            async with asyncio.timeout(GUARD):
                await slow.saturated.wait()
            fresh = [{"type": "consent.created", "data": {"n": n}} for n in range(FRESH)]
            status, answer = await relay.post(fresh)
            assert status == 202, answer

            await receiver.wait_for(FRESH, timeout=GUARD)
            fast_done = "SELECT COUNT(*) FROM deliveries WHERE webhook_id = 'fast-customer' AND status = 'succeeded'"
            await relay.wait_until(lambda: relay.sql(fast_done) == [(FRESH,)], timeout=GUARD)
            # The slow lane goes on taking its backlog, claim after claim, within its limit.
            await relay.wait_until(lambda: slow.received >= 3 * PER_WEBHOOK, timeout=GUARD)
            [(waiting,)] = relay.sql(
                "SELECT COUNT(*) FROM deliveries WHERE webhook_id = 'slow-customer' AND status = 'pending'"
                " AND attempt_count = 0"
            )
            most_in_flight = slow.most_in_flight

        assert sorted(orjson.loads(r.body)["data"]["n"] for r in receiver.requests_to("/fast")) == list(range(FRESH))
        assert waiting > BACKLOG - 1_000, f"the fast customer waited for the backlog: only {waiting} left untried"
        assert most_in_flight == PER_WEBHOOK, "the slow lane takes its per_webhook_concurrency, never more"
