"""What the dashboard's tests look at: a relay (in-process, a real SQLite file or PostgreSQL, a FakeClock) with two
tenants, each with a key, a webhook to a real receiver and one event; tenant A's receiver answers the first attempt
503 with a hostile body, and with no retry in its schedule that delivery is parked as ``failed``. Hostile text is
in the descriptions, the payloads and the receiver's answer: the pages must show it as text."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from relay.clock import FakeClock
from tests.support.management import call
from tests.support.receiver import Receiver, Reply
from tests.support.relay_harness import RunningRelay, make_config, poll_until, running_relay

T0 = 1_750_000_000.0
A, B = "tenant-alpha", "tenant-bravo"
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"


@dataclass
class World:
    relay: RunningRelay
    receiver: Receiver
    keys: dict[str, str]  # tenant -> its key
    hooks: dict[str, dict[str, Any]]  # tenant -> its webhook, as created (its secret included)
    events: dict[str, str]  # tenant -> the id of its event
    deliveries: dict[str, str]  # tenant -> the id of its event's delivery

    def hook(self, tenant: str) -> str:
        webhook_id: str = self.hooks[tenant]["id"]
        return webhook_id


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **changes: Any) -> AsyncIterator[World]:
    """The two tenants' relay; ``changes`` replace parts of its config (``ui=``, ``storage=``)."""
    config = replace(make_config(tmp_path, []), **changes)
    async with Receiver() as receiver, running_relay(tmp_path, [], config=config, clock=FakeClock(T0)) as relay:
        keys, hooks, events = {}, {}, {}
        receiver.script("/a", [Reply(503, body=HOSTILE.encode()), Reply(200)])
        for tenant, path in ((A, "/a"), (B, "/b")):
            status, answer = await call(relay, "POST", f"/v1/tenants/{tenant}/keys", {})
            assert status == 201, answer
            keys[tenant] = answer["data"]["key"]
            body = {"url": receiver.url(path), "description": f"{tenant} {HOSTILE}", "retry_schedule": ["0s"]}
            status, answer = await call(relay, "POST", "/v1/webhooks", body, key=keys[tenant])
            assert status == 201, answer
            hooks[tenant] = answer["data"]
            event = {"type": "consent.created", "data": {"subject": tenant, "note": HOSTILE}}
            status, answer = await call(relay, "POST", "/v1/events", event, key=keys[tenant])
            assert status == 202, answer
            events[tenant] = answer["data"]["id"]
        await poll_until(lambda: len(receiver.requests) >= 2)
        await poll_until(lambda: settled(relay, events.values()))
        deliveries = {
            tenant: (await relay.event(event_id))["deliveries"][0]["id"] for tenant, event_id in events.items()
        }
        yield World(relay, receiver, keys, hooks, events, deliveries)


async def settled(relay: RunningRelay, event_ids: Iterable[str]) -> bool:
    """Every delivery of these events was attempted and is not being attempted now."""
    for event_id in event_ids:
        deliveries = (await relay.event(event_id))["deliveries"]
        if any(d["attempt_count"] < 1 or d["status"] == "delivering" for d in deliveries):
            return False
    return True
