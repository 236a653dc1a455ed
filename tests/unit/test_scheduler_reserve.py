"""Room reserved at ingest for deliveries that start at once, with no claim (``Scheduler.reserve``/``start``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from relay.clock import FakeClock
from relay.config import DeliveryConfig
from relay.delivery import AttemptReport, Deliverer
from relay.models import Claim, Event, Lease, Webhook
from relay.registry import Registry
from relay.scheduler import LEASE_MARGIN, Scheduler
from relay.store import AttemptResult, Outbox

T0 = 1_700_000_000.0


class Stubs:
    """A store that only records results, and a deliverer whose attempts wait until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.attempted: list[str] = []
        self.recorded: list[AttemptResult] = []

    async def attempt(self, webhook: Webhook, claim: Claim) -> AttemptReport:
        self.attempted.append(claim.delivery_id)
        await self.release.wait()
        return AttemptReport(T0, 1.0, 200, None, None, "", None)

    async def record(
        self, results: list[AttemptResult], on_leased: Callable[[list[Claim]], None] | None = None
    ) -> list[Claim]:
        self.recorded.extend(results)
        return []


def scheduler(stubs: Stubs, *webhooks: Webhook, **config: Any) -> Scheduler:
    return Scheduler(
        cast(Outbox, stubs),
        Registry(webhooks),
        cast(Deliverer, stubs),
        FakeClock(T0),
        DeliveryConfig(jitter=0.0, **config),
    )


def claims(webhook_id: str, count: int, first_seq: int = 1) -> list[Claim]:
    event = Event("e", "t", "2024-01-15T10:35:00Z", b"{}", T0)
    return [
        Claim(f"dlv_{webhook_id}_{seq}", webhook_id, 1, T0, event, Lease("here", T0 + 60, seq))
        for seq in range(first_seq, first_seq + count)
    ]


async def test_room_is_bounded_by_both_concurrency_limits_and_comes_back_unused() -> None:
    stubs = Stubs()
    s = scheduler(stubs, Webhook("a", "http://a"), Webhook("b", "http://b"), concurrency=5, per_webhook_concurrency=3)
    rooms = s.reserve({"a": 10, "b": 10}, T0)
    assert {k: v.count for k, v in rooms.items()} == {"a": 3, "b": 2}
    assert rooms["a"].until == T0 + 10.0 + LEASE_MARGIN  # one attempt timeout and the margin, as a claim's lease
    assert s.in_flight == 5 and s.reserve({"a": 1, "b": 1}, T0) == {}
    s.start(rooms, claims("a", 1) + claims("b", 2, first_seq=10))  # a used 1 of its 3
    await asyncio.sleep(0)
    assert len(stubs.attempted) == 3 and s.in_flight == 3
    assert {k: v.count for k, v in s.reserve({"a": 9}, T0).items()} == {"a": 2}
    stubs.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert [r.delivery_id for r in stubs.recorded] == [c.delivery_id for c in claims("a", 1) + claims("b", 2, 10)]


async def test_a_failed_commit_gives_all_the_room_back() -> None:
    s = scheduler(Stubs(), Webhook("a", "http://a"), per_webhook_concurrency=4)
    rooms = s.reserve({"a": 4}, T0)
    s.start(rooms, ())
    assert s.in_flight == 0 and s.reserve({"a": 4}, T0)["a"].count == 4


async def test_no_room_where_older_deliveries_are_due_or_being_claimed() -> None:
    s = scheduler(
        Stubs(), Webhook("a", "http://a"), Webhook("b", "http://b"), Webhook("off", "http://c", is_active=False)
    )
    s.notify(["a"], T0)  # something of a's is due: it is claimed first, fresh ones queue behind it
    s._lanes["b"] = s._lane("b")
    s._lanes["b"].claiming = True
    assert s.reserve({"a": 1, "b": 1, "off": 1, "unknown": 1}, T0) == {}
    s.notify(["b"], T0 + 30)  # due later: not in the way now
    s._lane("b").claiming = False
    assert set(s.reserve({"a": 1, "b": 1}, T0)) == {"b"}


async def test_no_room_once_stopping() -> None:
    s = scheduler(Stubs(), Webhook("a", "http://a"))
    s.stop_claiming()
    assert s.reserve({"a": 1}, T0) == {}


async def test_a_rate_limit_spends_its_window_and_unused_room_comes_back() -> None:
    s = scheduler(Stubs(), Webhook("a", "http://a", rate_limit=2.0))
    rooms = s.reserve({"a": 5}, T0)
    assert rooms["a"].count == 2  # one second's worth
    assert s.reserve({"a": 1}, T0) == {}
    s.start(rooms, ())
    assert s.reserve({"a": 5}, T0)["a"].count == 2
