"""Three ``relay serve`` processes on one PostgreSQL database, no faults (CONTRACT §8, "any relay takes events;
every relay delivers"): 3,000 events posted round-robin to the three, each acknowledged one delivered exactly once,
and every relay delivers some of them."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import structlog
from aiohttp import web

from tests.acceptance.test_postgres_takeover import KEY, relay_config
from tests.support.process import RelayProcess
from tests.support.receiver import serve_locally

EVENTS = 3000
NAMES = ("alpha", "bravo", "charlie")
CONCURRENCY = 24  # posts in flight at once

log = structlog.get_logger()


async def test_three_relays_deliver_every_event_once(tmp_path: Path, postgres_url: str) -> None:
    seen: Counter[str] = Counter()
    by_relay: Counter[str] = Counter()
    done = asyncio.Event()
    acked: set[str] = set()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen[request.headers["X-Event-ID"]] += 1
        by_relay[request.headers.get("User-Agent", "")] += 1
        if acked and len(seen) >= len(acked) and acked <= seen.keys():
            done.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, port = await serve_locally(app, shutdown_timeout=0.2)
    env = {"RELAY_DATABASE_URL": postgres_url}
    relays = [RelayProcess(relay_config(tmp_path, name, port), env=env) for name in NAMES]
    try:
        await asyncio.gather(*(relay.start() for relay in relays))
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        queue = list(range(EVENTS))

        async def producer(http: aiohttp.ClientSession) -> None:
            while queue:
                n = queue.pop()
                body = orjson.dumps({"type": "consent.created", "data": {"n": n}})
                async with http.post(f"{relays[n % 3].url}/v1/events", data=body, headers=headers) as response:
                    assert response.status == 202, await response.text()
                    acked.add((await response.json())["data"]["id"])

        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(producer(http) for _ in range(CONCURRENCY)))
        assert len(acked) == EVENTS
        if not acked <= seen.keys():
            async with asyncio.timeout(60):
                await done.wait()
        await asyncio.sleep(0.5)  # a duplicate would arrive now, if there were one
    finally:
        for relay in relays:
            await relay.stop()
        await runner.cleanup()
    assert seen.keys() == acked
    duplicates = {event_id: n for event_id, n in seen.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} events delivered more than once without a fault"
    log.info("deliveries_by_relay", **by_relay)
    assert set(by_relay) == set(NAMES), by_relay  # every relay delivers
