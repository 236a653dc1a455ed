"""Retries on the schedule, parking, hourly re-drive and death, with the clock injected (no test waits minutes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from relay.clock import FakeClock
from tests.support.receiver import Receiver, Reply, serve_locally
from tests.support.relay_harness import RunningRelay, running_relay, webhook

MIN, HOUR, DAY = 60.0, 3600.0, 86400.0
CONSENTPROOF = (0.0, 1 * MIN, 5 * MIN, 30 * MIN, 2 * HOUR)


async def _attempts(relay: RunningRelay, event_id: str) -> list[dict[str, object]]:
    [delivery] = (await relay.event(event_id))["deliveries"]
    attempts: list[dict[str, object]] = delivery["attempts"]
    return attempts


async def _settled(relay: RunningRelay, event_id: str, count: int, status: str) -> None:
    async def check() -> bool:
        [delivery] = (await relay.event(event_id))["deliveries"]
        return bool(len(delivery["attempts"]) == count and delivery["status"] == status)

    await relay.wait_until(check)


async def test_the_consentproof_schedule_then_parked_then_hourly_redrive_then_success(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.default_status = 500
    clock = FakeClock()
    async with running_relay(tmp_path, [webhook(receiver.url())], clock=clock, retry_schedule=CONSENTPROOF) as relay:
        _, answer = await relay.post({"type": "consent.created", "data": {}})
        event_id = answer["data"]["id"]
        await _settled(relay, event_id, 1, "pending")
        for number, step in enumerate(CONSENTPROOF[1:], start=2):
            relay.advance(step - 1)  # one second early: nothing happens
            await _settled(relay, event_id, number - 1, "pending")
            relay.advance(1)
            await _settled(relay, event_id, number, "pending" if number < 5 else "failed")
        attempts = await _attempts(relay, event_id)
        assert [a["number"] for a in attempts] == [1, 2, 3, 4, 5]
        assert all(a["error"] == "http_error" and a["status_code"] == 500 for a in attempts)
        assert [r.headers["x-delivery-attempt"] for r in receiver.requests] == ["1", "2", "3", "4", "5"]
        # Parked: every hour one more attempt.
        relay.advance(HOUR)
        await _settled(relay, event_id, 6, "failed")
        receiver.default_status = 200
        relay.advance(HOUR)
        await _settled(relay, event_id, 7, "succeeded")
        assert len(receiver.requests) == 7
        assert len({r.headers["webhook-id"] for r in receiver.requests if "webhook-id" in r.headers}) <= 1


async def test_a_parked_delivery_dies_at_redrive_max_age(tmp_path: Path, receiver: Receiver) -> None:
    receiver.default_status = 503
    clock = FakeClock()
    async with running_relay(
        tmp_path,
        [webhook(receiver.url())],
        clock=clock,
        retry_schedule=(0.0,),
        redrive_interval=HOUR,
        redrive_max_age=2 * HOUR + 1,  # a re-drive at 3 h would be past it
    ) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await _settled(relay, event_id, 1, "failed")
        relay.advance(HOUR)
        await _settled(relay, event_id, 2, "failed")
        relay.advance(HOUR)
        await _settled(relay, event_id, 3, "dead")
        relay.advance(DAY)
        await _settled(relay, event_id, 3, "dead")  # kept, never attempted again by itself


async def test_retry_after_on_429_delays_the_next_attempt(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/hook", [Reply(429, headers={"Retry-After": "120"}), 200])
    clock = FakeClock()
    async with running_relay(
        tmp_path, [webhook(receiver.url())], clock=clock, retry_schedule=(0.0, 10.0, 600.0)
    ) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await _settled(relay, event_id, 1, "pending")
        [first] = await _attempts(relay, event_id)
        assert first["status_code"] == 429
        relay.advance(60)
        await _settled(relay, event_id, 1, "pending")  # the schedule said 10 s, the receiver asked for 120 s
        relay.advance(60)
        await _settled(relay, event_id, 2, "succeeded")


async def test_timeouts_and_refused_connections_are_failed_attempts(tmp_path: Path, receiver: Receiver) -> None:
    receiver.hang = True
    hooks = [
        webhook(receiver.url(), id="slow", timeout=0.3),
        webhook("http://127.0.0.1:9/closed", id="closed"),
    ]
    async with running_relay(tmp_path, hooks, retry_schedule=(0.0, HOUR)) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]

        async def both_failed() -> bool:
            deliveries = (await relay.event(event_id))["deliveries"]
            return all(len(d["attempts"]) == 1 for d in deliveries)

        await relay.wait_until(both_failed)
        errors = {d["webhook_id"]: d["attempts"][0] for d in (await relay.event(event_id))["deliveries"]}
        assert errors["slow"]["error"] == "timeout" and errors["slow"]["status_code"] is None
        assert errors["closed"]["error"] == "connect_error"
        assert all(d["status"] == "pending" for d in (await relay.event(event_id))["deliveries"])


async def test_redirects_are_failures_and_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/hook", [Reply(302, headers={"Location": "/elsewhere"})])
    async with running_relay(tmp_path, [webhook(receiver.url())], retry_schedule=(0.0, HOUR)) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await _settled(relay, event_id, 1, "pending")
        [attempt] = await _attempts(relay, event_id)
        assert attempt["status_code"] == 302 and attempt["error"] == "http_error"
        assert receiver.requests_to("/elsewhere") == []


async def test_a_fault_inside_relay_is_a_failed_attempt_that_follows_the_schedule(
    tmp_path: Path, receiver: Receiver
) -> None:
    from structlog.testing import capture_logs

    clock = FakeClock()
    async with running_relay(tmp_path, [webhook(receiver.url())], clock=clock, retry_schedule=(0.0, 60.0)) as relay:
        deliverer = relay.daemon.scheduler.deliverer  # type: ignore[union-attr]
        real = deliverer.attempt
        calls = 0

        async def broken(*args: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug")
            return await real(*args)  # type: ignore[arg-type]

        deliverer.attempt = broken  # type: ignore[method-assign]
        with capture_logs() as logs:
            _, answer = await relay.post({"type": "t", "data": {}})
            event_id = answer["data"]["id"]
            await _settled(relay, event_id, 1, "pending")
        [attempt] = await _attempts(relay, event_id)
        assert attempt["error"] == "internal_error" and "RuntimeError" in str(attempt["error_detail"])
        assert any(entry["event"] == "attempt_crashed" for entry in logs)
        relay.advance(60)
        await _settled(relay, event_id, 2, "succeeded")


async def test_an_answer_that_stalls_after_its_headers_is_a_timeout(tmp_path: Path) -> None:
    """The attempt's timeout covers reading the answer, not only waiting for its headers."""
    release = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200, headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        await release.wait()  # the other 90 bytes never come
        return response

    app = web.Application()
    app.router.add_post("/hook", stalls)
    runner, port = await serve_locally(app, handler_cancellation=True)
    try:
        hooks = [webhook(f"http://127.0.0.1:{port}/hook", timeout=0.3)]
        async with running_relay(tmp_path, hooks, retry_schedule=(0.0, HOUR)) as relay:
            _, answer = await relay.post({"type": "t", "data": {}})
            event_id = answer["data"]["id"]
            await _settled(relay, event_id, 1, "pending")
            [attempt] = await _attempts(relay, event_id)
            assert attempt["error"] == "timeout" and attempt["status_code"] is None
            assert attempt["duration_ms"] < 5000
    finally:
        release.set()
        await runner.cleanup()
