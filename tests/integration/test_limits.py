"""Concurrency caps, per-webhook rate limits that hold up no other webhook, and retention pruning."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from relay.clock import FakeClock
from tests.support.receiver import Receiver, serve_locally
from tests.support.relay_harness import running_relay, webhook


class Gauge:
    """A receiver that counts how many requests it holds at once."""

    def __init__(self, hold: float) -> None:
        self.hold, self.now, self.peak, self.total = hold, 0, 0, 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.now -= 1
            self.total += 1
        return web.Response(text="ok")


async def _serve(gauge: Gauge) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", gauge.handle)
    runner, port = await serve_locally(app)
    return runner, f"http://127.0.0.1:{port}"


async def test_per_webhook_and_global_concurrency_are_respected(tmp_path: Path) -> None:
    gauge = Gauge(hold=0.05)
    runner, url = await _serve(gauge)
    try:
        hooks = [webhook(f"{url}/a", id="a"), webhook(f"{url}/b", id="b")]
        async with running_relay(tmp_path, hooks, per_webhook_concurrency=3, concurrency=4) as relay:
            status, _ = await relay.post([{"type": "t", "data": {"n": n}} for n in range(20)])
            assert status == 202
            await relay.wait_until(lambda: gauge.total == 40, timeout=10)
        assert gauge.peak == 4  # global cap binds before 2 x 3
    finally:
        await runner.cleanup()


async def test_one_webhook_per_webhook_cap(tmp_path: Path) -> None:
    gauge = Gauge(hold=0.05)
    runner, url = await _serve(gauge)
    try:
        async with running_relay(tmp_path, [webhook(url)], per_webhook_concurrency=2) as relay:
            await relay.post([{"type": "t", "data": {"n": n}} for n in range(10)])
            await relay.wait_until(lambda: gauge.total == 10, timeout=10)
        assert gauge.peak == 2
    finally:
        await runner.cleanup()


async def test_a_rate_limited_webhook_does_not_hold_up_others(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    hooks = [webhook(receiver.url("/slow"), id="slow", rate_limit=2.0), webhook(receiver.url("/fast"), id="fast")]
    async with running_relay(tmp_path, hooks, clock=clock) as relay:
        await relay.post([{"type": "t", "data": {"n": n}} for n in range(10)])
        await receiver.wait_until(lambda rs: len([r for r in rs if r.path == "/fast"]) == 10)
        assert len(receiver.requests_to("/slow")) == 2  # one second's worth
        for second in range(1, 5):
            relay.advance(1.0)
            await receiver.wait_until(lambda rs, n=second: len([r for r in rs if r.path == "/slow"]) == 2 + 2 * n)
        assert len(receiver.requests_to("/slow")) == 10


async def test_no_second_of_a_backlog_holds_more_attempts_than_the_rate(tmp_path: Path, receiver: Receiver) -> None:
    """A token bucket let a full bucket and its refill out in the first second (9–10 attempts for "5/s")."""
    clock = FakeClock()
    async with running_relay(tmp_path, [webhook(receiver.url(), rate_limit=5.0)], clock=clock) as relay:
        await relay.post([{"type": "t", "data": {"n": n}} for n in range(23)])
        for eighth in range(8 * 6):  # steps of 1/8 s add up exactly
            expected = min(23, 5 * (eighth // 8 + 1))
            await receiver.wait_until(lambda rs, n=expected: len(rs) >= n)
            await asyncio.sleep(0.005)  # room for an attempt the window should not have let out
            assert len(receiver.requests) == expected, f"at +{eighth / 8}s"
            relay.advance(0.125)
        starts = sorted(row[0] for row in relay.sql("SELECT started_at FROM attempts"))
    assert len(starts) == 23
    assert max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts) == 5


async def test_retention_prunes_delivered_events(tmp_path: Path, receiver: Receiver) -> None:
    from dataclasses import replace

    from tests.support.relay_harness import make_config

    clock = FakeClock()
    config = make_config(tmp_path, [webhook(receiver.url())])
    config = replace(config, storage=replace(config.storage, retention=3600.0))
    async with running_relay(tmp_path, [], config=config, clock=clock) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await receiver.wait_for(1)
        await relay.wait_until(lambda: relay.sql("SELECT status FROM deliveries") == [("succeeded",)])
        relay.advance(900)  # the pruner runs every retention / 4
        await asyncio.sleep(0.05)
        assert relay.sql("SELECT COUNT(*) FROM events") == [(1,)]  # younger than the retention
        relay.advance(3600)
        await relay.wait_until(lambda: relay.sql("SELECT COUNT(*) FROM events") == [(0,)])
        status, _ = await relay.get(f"/v1/events/{event_id}")
        assert status == 404
        assert relay.sql("SELECT COUNT(*) FROM attempts") == [(0,)]
