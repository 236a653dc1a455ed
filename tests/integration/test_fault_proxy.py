"""Network faults between the relay and a receiver, injected by a proxy (tests/support/fault_proxy.py).

For every fault: the attempt ends within its timeout with the right outcome, the next attempt is scheduled
exactly as the schedule (or ``Retry-After``) says and happens only when the fake clock reaches it, the faulted
connection is closed rather than kept, and once the relay stops no connection and no task is left behind.
A seeded storm of mixed faults checks that nothing wedges the scheduler: a healthy webhook keeps delivering
while the faulty one's slots are black-holed, and every delivery ends delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardVerifier

from relay.clock import FakeClock
from relay.models import Secret, SignatureScheme
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.receiver import Receiver, Reply
from tests.support.relay_harness import RunningRelay, running_relay, webhook

TIMEOUT = 0.5
SLACK_MS = 300.0  # scheduling noise on a busy 2-core machine, on top of the timeout
SCHEDULE = (0.0, 10.0, 60.0)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@asynccontextmanager
async def leak_checked(proxy: FaultProxy) -> AsyncIterator[None]:
    """After the block (the relay stopped): no connection open at the proxy, no task left running."""
    before = asyncio.all_tasks()
    yield
    await proxy.wait_idle(timeout=5)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        left = {t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()}
        if not left:
            break
        if loop.time() > deadline:
            raise AssertionError(f"tasks left running: {sorted(t.get_name() for t in left)}")
        await asyncio.sleep(0.01)
    assert proxy.handler_tasks == 0


@asynccontextmanager
async def relay_behind(
    tmp_path: Path, proxy: FaultProxy, receiver: Receiver, **delivery: Any
) -> AsyncIterator[RunningRelay]:
    signed = {"secret": Secret(SECRET), "signature": SignatureScheme.STANDARD}
    hooks = [
        webhook(proxy.url("/hook"), id="faulty", events=("faulty.*",), **signed),
        webhook(receiver.url("/ok"), id="healthy", events=("healthy.*",), **signed),
    ]
    async with running_relay(
        tmp_path, hooks, clock=FakeClock(), timeout=TIMEOUT, retry_schedule=SCHEDULE, **delivery
    ) as relay:
        yield relay


AttemptRow = tuple[int, float, float, int | None, str | None, float | None]


def attempts(relay: RunningRelay, event_id: str) -> list[AttemptRow]:
    return relay.sql(
        "SELECT a.number, a.started_at, a.duration_ms, a.status_code, a.error, a.next_attempt_at FROM attempts a"
        " JOIN deliveries d ON d.seq = a.delivery_seq JOIN events e ON e.seq = d.event_seq"
        " WHERE e.id = ? ORDER BY a.number",
        event_id,
    )


async def post(relay: RunningRelay, event_type: str, n: int = 0) -> str:
    status, answer = await relay.post({"type": event_type, "data": {"n": n}})
    assert status == 202, answer
    event_id: str = answer["data"]["id"]
    return event_id


CASES = [
    # fault, error, status code, whether it closes the connection, delay before the next attempt (None: done)
    (Fault.passthrough(), None, 200, False, None),
    (Fault.latency(0.1), None, 200, False, None),
    (Fault.latency(0.8), "timeout", None, True, 10.0),
    (Fault.reset_request(), "connect_error", None, True, 10.0),
    (Fault.reset_response(), "connect_error", None, True, 10.0),
    (Fault.blackhole(), "timeout", None, True, 10.0),
    (Fault.trickle(0.05, 1), "timeout", None, True, 10.0),
    (Fault.trickle(0.001, 32), None, 200, False, None),
    (Fault.answer(302, {"Location": "http://127.0.0.1:9/elsewhere"}), "http_error", 302, False, 10.0),
    (Fault.answer(307, {"Location": "/hook"}), "http_error", 307, False, 10.0),
    (Fault.answer(429, {"Retry-After": "30"}), "http_error", 429, False, 30.0),
    (Fault.answer(429, {"Retry-After": "600"}), "http_error", 429, False, 60.0),  # capped at the longest step
    (Fault.answer(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), "http_error", 503, False, 10.0),
    (Fault.answer(500, body=b"x" * 100_000), "http_error", 500, False, 10.0),
]


@pytest.mark.parametrize(
    ("fault", "error", "status_code", "closes", "delay"),
    CASES,
    ids=[f"{c[0].kind}-{c[0].status if c[0].kind == 'answer' else c[0].delay}" for c in CASES],
)
async def test_each_fault_ends_the_attempt_in_time_and_follows_the_schedule(
    tmp_path: Path,
    receiver: Receiver,
    fault: Fault,
    error: str | None,
    status_code: int | None,
    closes: bool,
    delay: float | None,
) -> None:
    receiver.script("/hook", [Reply(200, body=b"accepted " * 200)])  # a body to cut in half
    async with FaultProxy(receiver.port) as proxy, leak_checked(proxy):
        proxy.script([fault])
        async with relay_behind(tmp_path, proxy, receiver) as relay:
            event_id = await post(relay, "faulty.one")
            await relay.wait_until(lambda: len(attempts(relay, event_id)) == 1, timeout=TIMEOUT + 3)
            [(_, started_at, duration_ms, code, err, next_at)] = attempts(relay, event_id)
            assert (err, code) == (error, status_code)
            assert duration_ms <= TIMEOUT * 1000 + SLACK_MS, f"the attempt took {duration_ms:.0f} ms"
            [proxied] = await proxy.wait_for(1)
            assert proxied.fault == fault
            if closes:  # the relay gives a faulted connection up instead of keeping it in its pool
                await relay.wait_until(lambda: proxied.closed, timeout=2)
            if delay is None:
                assert next_at is None
                assert await relay.statuses(event_id) == ["succeeded"]
            else:
                assert next_at == started_at + delay, "the next attempt is due exactly one schedule step later"
                relay.advance(delay - 1)
                await asyncio.sleep(0.2)
                assert len(attempts(relay, event_id)) == 1, "attempted again before it was due"
                relay.advance(1)
                await relay.wait_until(lambda: len(attempts(relay, event_id)) == 2, timeout=3)
                assert await relay.statuses(event_id) == ["succeeded"]
            if fault.kind == "answer":
                delivered = [r for r in receiver.requests if r.path == "/hook"]
                assert len(delivered) == (0 if delay is None else 1), "a redirect or error answer reached nobody"
            # A later delivery through the same webhook still goes through.
            later = await post(relay, "faulty.two")
            await relay.wait_until(lambda: len(attempts(relay, later)) == 1, timeout=3)
            assert await relay.statuses(later) == ["succeeded"]


def settled(relay: RunningRelay) -> bool:
    """Nothing in flight and nothing due at the fake clock's now: only a clock advance can change anything."""
    busy = relay.sql(
        "SELECT COUNT(*) FROM deliveries WHERE status = 'delivering'"
        " OR (status IN ('pending', 'failed') AND due_at <= ?)",
        relay.clock.now(),
    )
    return busy == [(0,)]


STORM_FAULTS = [
    Fault.latency(0.05),
    Fault.latency(1.0),
    Fault.reset_request(),
    Fault.reset_response(),
    Fault.blackhole(),
    Fault.trickle(0.05, 1),
    Fault.trickle(0.001, 64),
    Fault.answer(302, {"Location": "/x"}),
    Fault.answer(429, {"Retry-After": "30"}),
    Fault.answer(500),
    Fault.answer(503),
]


async def test_a_storm_of_faults_wedges_nothing(tmp_path: Path, receiver: Receiver) -> None:
    rng = random.Random(20261122)
    events = 24
    async with FaultProxy(receiver.port) as proxy, leak_checked(proxy):
        # The first requests meet the faults, then the proxy passes: the black-holed ones fill the lane first.
        proxy.script([Fault.blackhole()] * 3 + [rng.choice(STORM_FAULTS) for _ in range(events)])
        async with relay_behind(
            tmp_path, proxy, receiver, per_webhook_concurrency=3, concurrency=4, redrive_interval=60.0
        ) as relay:
            faulty = [await post(relay, "faulty.storm", n) for n in range(events)]
            # While the faulty lane's slots hang, the healthy webhook is not starved.
            healthy = [await post(relay, "healthy.storm", n) for n in range(5)]
            await receiver.wait_until(lambda requests: len([r for r in requests if r.path == "/ok"]) >= 5, timeout=2)
            # Then time moves on, a schedule step at a time, until every delivery is done.
            for _ in range(8):
                await relay.wait_until(lambda: settled(relay), timeout=10)
                if relay.sql("SELECT COUNT(*) FROM deliveries WHERE status != 'succeeded'") == [(0,)]:
                    break
                relay.advance(60.0)
            for event_id in faulty + healthy:
                tries = attempts(relay, event_id)
                assert await relay.statuses(event_id) == ["succeeded"], tries
                for (_, started, _, _, _, due), (_, next_started, _, _, _, _) in itertools.pairwise(tries):
                    assert due is not None and due - started in (10.0, 30.0, 60.0), tries
                    assert next_started >= due, f"attempted before it was due: {tries}"
                assert all(took <= TIMEOUT * 1000 + SLACK_MS for _, _, took, _, _, _ in tries), tries
    verifier = StandardVerifier(SECRET)
    for request in receiver.requests:
        if "webhook-signature" in request.headers:
            verifier.verify(request.body, dict(request.headers))
    delivered = {r.headers["x-event-id"] for r in receiver.requests}
    assert set(faulty) | set(healthy) <= delivered
    print(f"\nstorm: {len(proxy.requests)} proxied requests, {proxy.accepted} connections, {events} events")
