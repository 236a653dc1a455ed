"""Fresh deliveries committed already leased at ingest, started with no claim; backlogs still claimed first."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

from relay.clock import FakeClock
from relay.ingest import commit_events
from relay.store import NewEvent
from tests.support.receiver import Receiver, Reply
from tests.support.relay_harness import RunningRelay, running_relay, webhook
from tests.support.sqlite_raw import in_writer


def count_claims(relay: RunningRelay) -> list[str]:
    """Record the webhook of every claim the scheduler makes from now on."""
    store = relay.daemon.store
    claimed: list[str] = []
    claim = store.claim

    async def counting(webhook_id: str, *args: Any) -> Any:
        claimed.append(webhook_id)
        return await claim(webhook_id, *args)

    store.claim = counting  # type: ignore[method-assign]
    return claimed


async def test_a_fresh_event_is_attempted_with_no_claim(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, [webhook(receiver.url())], clock=FakeClock()) as relay:
        claimed = count_claims(relay)
        status, answer = await relay.post({"type": "consent.created", "data": {"n": 1}})
        assert status == 202
        await receiver.wait_for(1)
        await relay.wait_until(lambda: relay.sql("SELECT status FROM deliveries") == [("succeeded",)])
        assert await relay.statuses(answer["data"]["id"]) == ["succeeded"]
        assert claimed == []  # leased in the ingest's own commit, started from its answer


async def test_a_backlog_is_claimed_before_fresh_events_go_straight_out(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/slow", [Reply(delay=0.3), 200])
    async with running_relay(tmp_path, [webhook(receiver.url("/slow"))], per_webhook_concurrency=1) as relay:
        claimed = count_claims(relay)
        first = await relay.post({"type": "t", "data": {"n": 0}})  # takes the only slot, at once
        assert first[0] == 202
        for n in range(1, 4):  # no room: committed pending, and claimed as the slot frees
            assert (await relay.post({"type": "t", "data": {"n": n}}))[0] == 202
        await receiver.wait_for(4)
        assert [r.json["data"]["n"] for r in receiver.requests] == [0, 1, 2, 3]
        assert claimed  # the backlog went through claims
        await relay.wait_until(
            lambda: relay.sql("SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded'") == [(4,)]
        )


async def test_what_a_commit_leased_starts_even_when_its_request_is_gone(tmp_path: Path, receiver: Receiver) -> None:
    """The ingest's handler is cancelled while its commit waits; the commit lands and the delivery goes out
    at once, not after its lease (70 s here) runs out."""
    async with running_relay(tmp_path, [webhook(receiver.url())]) as relay:
        services = relay.daemon.services
        assert services is not None
        held, entered = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> None:  # keeps the writer thread busy
            entered.set()
            held.wait(5)

        blocker = asyncio.ensure_future(in_writer(relay.daemon.store, hold))
        await asyncio.to_thread(entered.wait, 5)
        event = NewEvent("evt_gone", "t", "2024-01-15T10:35:00Z", b"{}", ("hook",))
        request = asyncio.ensure_future(
            commit_events(services.store, services.scheduler, [event], relay.clock.now(), services.on_ingest)
        )
        await asyncio.sleep(0.05)
        request.cancel()
        held.set()
        await blocker
        [delivered] = await receiver.wait_for(1)
        assert delivered.headers["X-Event-ID"] == "evt_gone"
        assert request.cancelled()
        await relay.wait_until(lambda: relay.sql("SELECT status FROM deliveries") == [("succeeded",)])
