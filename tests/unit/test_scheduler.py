"""The scheduler on the in-memory store and a fake clock: claim order, the concurrency limits, sleeping until the
next due time, rate limits, leases that ran out under a live attempt, and drain. No real time passes: the loop runs
until it has nothing left to do (``settle``) and the clock moves only when a test advances it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from relay.clock import FakeClock
from relay.config import DeliveryConfig
from relay.delivery import AttemptReport, Deliverer
from relay.models import EVERYTHING, Attempt, Claim, DeliveryStatus, ErrorKind, Webhook, format_time
from relay.registry import Registry
from relay.scheduler import LEASE_MARGIN, Scheduler
from relay.store import AttemptResult, NewEvent
from tests.support.memory_store import MemoryStore

T0 = 1_700_000_000.0
S = DeliveryStatus


async def settle() -> None:
    """Let every task run until all of them wait (on the fake clock, an attempt's gate, or the wake event)."""
    for _ in range(200):
        await asyncio.sleep(0)


class StubDeliverer:
    """Attempts that start at once and, with ``hold``, wait until let go; they answer ``ok`` (or a 500)."""

    def __init__(self, clock: FakeClock, *, hold: bool = False, ok: bool = True) -> None:
        self.clock = clock
        self.hold = hold
        self.ok = ok
        self.started: list[tuple[float, str, str]] = []  # (when, webhook id, event id), in start order
        self.waiting: list[asyncio.Event] = []  # gates of held attempts, oldest first
        self.live: Counter[str] = Counter()  # attempts under way per webhook
        self.most_live = 0
        self.most_live_per_webhook: Counter[str] = Counter()

    async def attempt(self, webhook: Webhook, claim: Claim) -> AttemptReport:
        started_at = self.clock.now()
        self.started.append((started_at, webhook.id, claim.event.id))
        self.live[webhook.id] += 1
        self.most_live = max(self.most_live, sum(self.live.values()))
        self.most_live_per_webhook[webhook.id] = max(self.most_live_per_webhook[webhook.id], self.live[webhook.id])
        try:
            if self.hold:
                gate = asyncio.Event()
                self.waiting.append(gate)
                await gate.wait()
        finally:
            self.live[webhook.id] -= 1
        if self.ok:
            return AttemptReport(started_at, 5.0, 200, None, None, "", None)
        return AttemptReport(started_at, 5.0, 500, ErrorKind.HTTP_ERROR, None, "", None)

    def let_go(self, count: int = 1) -> None:
        for gate in self.waiting[:count]:
            gate.set()
        del self.waiting[:count]

    def events_of(self, webhook_id: str) -> list[str]:
        return [event_id for _, w, event_id in self.started if w == webhook_id]


class Rig:
    """A scheduler over a memory store, with its fake clock and stub deliverer; ``start`` runs its loop."""

    def __init__(self, *webhooks: Webhook, hold: bool = False, ok: bool = True, **config: Any) -> None:
        self.clock = FakeClock(T0)
        self.store = MemoryStore()
        self.deliverer = StubDeliverer(self.clock, hold=hold, ok=ok)
        self.scheduler = Scheduler(
            self.store,
            Registry(webhooks),
            cast(Deliverer, self.deliverer),
            self.clock,
            DeliveryConfig(**{"jitter": 0.0, **config}),
            rng=lambda: 0.5,
        )
        self.task: asyncio.Task[None] | None = None

    async def ingest(self, *events: tuple[str, tuple[str, ...]], at: float | None = None) -> None:
        """Commit events as ingest does, and tell the scheduler (as the ingest hand-off does)."""
        now = self.clock.now() if at is None else at
        batch = [NewEvent(i, "t", "2024-01-15T10:35:00Z", b"{}", webhooks) for i, webhooks in events]
        await self.store.ingest(batch, now)
        self.scheduler.notify(dict.fromkeys(w for _, webhooks in events for w in webhooks), now)  # lanes in order

    async def start(self) -> None:
        self.task = asyncio.create_task(self.scheduler.run())
        await settle()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await settle()

    async def stop(self) -> None:
        self.scheduler.stop_claiming()
        if self.task is not None:
            await self.task
        self.deliverer.let_go(len(self.deliverer.waiting))
        await self.scheduler.drain(1.0)

    async def statuses(self, event_id: str) -> dict[str, S]:
        found = await self.store.get_event(event_id, scope=EVERYTHING)
        assert found is not None
        return {d.webhook_id: d.status for d in found[1]}


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    """Rigs made in a test, opened, and stopped and closed after it."""
    made: list[Rig] = []
    yield made
    for rig in made:
        await rig.stop()
        await rig.store.close()


async def rig(rigs: list[Rig], *webhooks: Webhook, **options: Any) -> Rig:
    made = Rig(*webhooks, **options)
    await made.store.open()
    rigs.append(made)
    return made


async def test_a_tick_claims_each_lane_oldest_due_first(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a"), Webhook("b", "http://b"), hold=True, per_webhook_concurrency=1)
    await r.ingest(("e1", ("a", "b")), at=T0 - 20)
    await r.ingest(("e2", ("a", "b")), at=T0 - 10)
    # e1 of a failed once and is due again at T0 - 5: behind e2 (due since T0 - 10), though created before it.
    [first], _ = await r.store.claim("a", 1, T0 - 20, T0 - 19)
    tried = Attempt(1, T0 - 20, 5.0, 500, ErrorKind.HTTP_ERROR, None, "", T0 - 5)
    await r.store.record([AttemptResult(first.lease, first.delivery_id, first.webhook_id, tried, S.PENDING, T0 - 5)])
    await r.scheduler.refresh()
    await r.scheduler._tick(T0)
    await settle()
    assert (r.deliverer.events_of("a"), r.deliverer.events_of("b")) == (["e2"], ["e1"])  # one each: the limit
    r.deliverer.let_go(2)
    await settle()
    await r.scheduler._tick(T0)
    await settle()
    assert (r.deliverer.events_of("a"), r.deliverer.events_of("b")) == (["e2", "e1"], ["e1", "e2"])


async def test_concurrency_and_per_webhook_concurrency_bound_the_attempts_in_flight(rigs: list[Rig]) -> None:
    hooks = [Webhook(w, f"http://{w}") for w in ("a", "b", "c")]
    r = await rig(rigs, *hooks, hold=True, concurrency=5, per_webhook_concurrency=2)
    await r.ingest(*((f"e{n}", ("a", "b", "c")) for n in range(6)))
    await r.start()
    assert len(r.deliverer.started) == 5 and r.scheduler.in_flight == 5
    while r.deliverer.waiting:
        r.deliverer.let_go(1)
        await settle()
        # A finished attempt's slot is taken at once by a webhook with room, while one has work left.
        started = Counter(w for _, w, _ in r.deliverer.started)
        finished = {w: started[w] - r.deliverer.live[w] for w in "abc"}
        assert sum(r.deliverer.live.values()) == min(5, sum(min(2, 6 - finished[w]) for w in "abc"))
    assert len(r.deliverer.started) == 18 and r.scheduler.in_flight == 0
    assert r.deliverer.most_live == 5
    assert max(r.deliverer.most_live_per_webhook.values()) == 2
    assert [await r.statuses(f"e{n}") for n in range(6)] == [dict.fromkeys("abc", S.SUCCEEDED)] * 6


async def test_room_a_short_claim_leaves_goes_at_once_to_the_lane_it_was_kept_from(rigs: list[Rig]) -> None:
    """The one slot goes to ``a`` first; when its attempt ends, ``a`` is still due (its claim was full) and takes
    the slot again, but finds nothing: ``b`` must get the slot then, though no attempt is left to wake the loop."""
    r = await rig(rigs, Webhook("a", "http://a"), Webhook("b", "http://b"), hold=True, concurrency=1)
    await r.ingest(("e1", ("a", "b")))
    await r.start()
    assert [w for _, w, _ in r.deliverer.started] == ["a"]
    r.deliverer.let_go()
    await settle()
    assert [w for _, w, _ in r.deliverer.started] == ["a", "b"]
    r.deliverer.let_go()
    await settle()
    assert await r.statuses("e1") == {"a": S.SUCCEEDED, "b": S.SUCCEEDED}


async def test_a_lane_sleeps_until_its_next_due_time(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a"), ok=False, retry_schedule=(0.0, 30.0, 300.0))
    await r.ingest(("e1", ("a",)))
    await r.start()
    assert [t for t, _, _ in r.deliverer.started] == [T0]
    await r.advance(29.9)
    assert len(r.deliverer.started) == 1  # not before it is due
    await r.advance(0.1)
    assert [t for t, _, _ in r.deliverer.started] == [T0, T0 + 30]
    await r.advance(299)
    assert len(r.deliverer.started) == 2
    await r.advance(1)
    assert [t for t, _, _ in r.deliverer.started] == [T0, T0 + 30, T0 + 330]
    found = await r.store.get_event("e1", scope=EVERYTHING)
    assert found is not None and found[1][0].attempt_count == 3


async def test_a_rate_limit_never_lets_more_attempts_start_in_any_second(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a", rate_limit=5.0), Webhook("free", "http://free"))
    await r.ingest(*((f"e{n}", ("a", "free")) for n in range(32)))
    await r.start()
    for _ in range(80):
        await r.advance(0.1)
    starts = [t for t, w, _ in r.deliverer.started if w == "a"]
    assert len(starts) == 32  # all of them, in 6.4 s of fake time
    for t in starts:
        assert sum(1 for other in starts if t - 1.0 < other <= t) <= 5, f"more than 5 in the second up to {t}"
    assert starts[:5] == [T0] * 5 and starts[5] == pytest.approx(T0 + 1.0)
    assert len(r.deliverer.events_of("free")) == 32 and {t for t, w, _ in r.deliverer.started if w == "free"} == {T0}


async def test_a_lease_that_ran_out_under_a_live_attempt_is_adopted(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a", timeout=10.0), hold=True)
    await r.ingest(("e1", ("a",)))
    await r.start()
    assert len(r.deliverer.started) == 1
    first_lease = r.scheduler._in_flight[next(iter(r.scheduler._in_flight))].claim.lease
    assert first_lease.until == T0 + 10.0 + LEASE_MARGIN
    await r.advance(121.0)  # a stalled loop: the lease ran out unrenewed; the lane wakes and claims the delivery again
    [live] = r.scheduler._in_flight.values()
    assert live.claim.lease.until == T0 + 121.0 + 10.0 + LEASE_MARGIN  # the new lease, adopted by the live attempt
    assert len(r.deliverer.started) == 1 and r.scheduler.in_flight == 1  # not attempted twice
    r.deliverer.let_go()
    await settle()
    assert await r.statuses("e1") == {"a": S.SUCCEEDED}  # recorded under the new lease, so it counts
    assert r.scheduler.in_flight == 0 and r.scheduler._in_flight == {}


async def test_the_leases_of_attempts_still_running_are_renewed_before_they_run_out(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a", timeout=10.0), hold=True)
    await r.ingest(("e1", ("a",)), ("e2", ("a",)))
    await r.start()
    assert len(r.deliverer.started) == 2
    for _ in range(60):  # a minute: six timeouts, far past the first lease
        await r.advance(1.0)
        for entry in r.scheduler._in_flight.values():
            assert entry.claim.lease.until > r.clock.now() + 10.0  # renewed every RENEW_EVERY s, never near its end
    assert len(r.deliverer.started) == 2  # never claimed again meanwhile
    r.deliverer.let_go(2)
    await settle()
    assert await r.statuses("e1") == {"a": S.SUCCEEDED}  # recorded under the renewed lease
    assert await r.statuses("e2") == {"a": S.SUCCEEDED}


async def test_a_lease_another_relay_took_over_is_not_renewed_and_its_result_is_ignored(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a", timeout=10.0), hold=True)
    await r.ingest(("e1", ("a",)))
    await r.start()
    [entry] = r.scheduler._in_flight.values()
    [stored] = r.store.data.deliveries.values()
    stored.due_at = T0 + 500.0  # another relay's lease now (it took the delivery over while this one stalled)
    with capture_logs() as logs:
        await r.advance(5.0)
    assert [line["delivery_id"] for line in logs if line["event"] == "lease_lost"] == [entry.claim.delivery_id]
    assert entry.lost and stored.due_at == T0 + 500.0
    await r.advance(5.0)  # not tried again
    assert stored.due_at == T0 + 500.0
    r.deliverer.let_go()
    await settle()
    assert await r.statuses("e1") == {"a": S.DELIVERING}  # the result under the lost lease changed nothing


async def test_drain_gives_back_the_leases_of_unfinished_attempts(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a"), hold=True)
    await r.ingest(("done", ("a",)), ("cut", ("a",)))
    await r.start()
    assert len(r.deliverer.started) == 2
    r.deliverer.let_go(1)  # "done" finishes in time
    r.scheduler.stop_claiming()
    assert r.task is not None
    await r.task
    await r.advance(3.0)
    with capture_logs() as logs:
        await r.scheduler.drain(0.0)
    [abandoned] = [line for line in logs if line["event"] == "attempts_abandoned"]
    assert await r.statuses("done") == {"a": S.SUCCEEDED}
    found = await r.store.get_event("cut", scope=EVERYTHING)
    assert found is not None
    [cut] = found[1]
    assert (abandoned["count"], abandoned["delivery_ids"], abandoned["webhook_ids"]) == (1, [cut.id], ["a"])
    assert (cut.status, cut.next_attempt_at, cut.attempt_count) == (S.PENDING, T0 + 3.0, 0)  # due again at once
    assert await r.store.due_by_webhook() == {"a": T0 + 3.0}


async def test_drain_names_the_abandoned_deliveries_up_to_a_cap(rigs: list[Rig]) -> None:
    hooks = [Webhook(name, f"http://{name}") for name in ("b", "a")]
    r = await rig(rigs, *hooks, hold=True, per_webhook_concurrency=40)
    await r.ingest(*((f"e{n}", ("a", "b")) for n in range(30)))
    await r.start()
    assert len(r.deliverer.started) == 60
    held = sorted(entry.claim.delivery_id for entry in r.scheduler._in_flight.values())
    r.scheduler.stop_claiming()
    assert r.task is not None
    await r.task
    with capture_logs() as logs:
        await r.scheduler.drain(0.0)
    [line] = [line for line in logs if line["event"] == "attempts_abandoned"]
    assert (line["log_level"], line["count"], line["webhook_ids"]) == ("warning", 60, ["a", "b"])
    assert len(line["delivery_ids"]) == 50 and set(line["delivery_ids"]) <= set(held)


async def test_a_retry_logs_its_next_attempt_in_rfc_3339_and_its_success_at_info(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a"), ok=False, retry_schedule=(0.0, 10.0))
    with capture_logs() as logs:
        await r.ingest(("first-try", ("a",)))
        await r.start()
        r.deliverer.ok = True
        await r.ingest(("second", ("a",)))
        await settle()
        await r.advance(10.0)
    seen = [(line["event"], line["log_level"], line["event_id"], line["attempt"]) for line in logs]
    assert seen == [
        ("delivery_retry_scheduled", "info", "first-try", 1),
        ("delivery_succeeded", "debug", "second", 1),  # a first try's success is routine
        ("delivery_succeeded", "info", "first-try", 2),  # a success after a failure closes it
    ]
    assert logs[0]["next_attempt_at"] == format_time(T0 + 10.0) and logs[0]["next_attempt_at"].endswith("Z")


async def test_a_parked_delivery_that_a_redrive_delivers_logs_its_success_at_info(rigs: list[Rig]) -> None:
    r = await rig(rigs, Webhook("a", "http://a"), ok=False, retry_schedule=(0.0,), redrive_interval=600.0)
    with capture_logs() as logs:
        await r.ingest(("parked", ("a",)))
        await r.start()
        r.deliverer.ok = True
        await r.advance(600.0)
    assert [(line["event"], line["log_level"]) for line in logs] == [
        ("delivery_parked", "warning"),
        ("delivery_succeeded", "info"),
    ]
    assert logs[0]["next_attempt_at"] == format_time(T0 + 600.0)
    assert await r.statuses("parked") == {"a": S.SUCCEEDED}
