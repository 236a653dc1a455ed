"""A SQLite outbox with some of everything in it, made through the store's API, for ``relay store copy``'s tests;
and what a store holds, read back through the same API, to compare two stores."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from relay.models import EVERYTHING, Delivery, DeliveryStatus
from relay.store import Store
from relay.store.sqlite import SqliteStore
from tests.integration.store_contract import T0, S, attempt, event, result

API_SPEC = b'{"id":"api-hook","url":"https://example.com/h","secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}'
CONFIG_SPEC = b'{"id":"cfg","url":"https://example.com/c"}'
EVENT_IDS = [f"e{n}" for n in range(1, 8)]


async def fill_sqlite(path: Path) -> None:
    """Seven events, each to the config webhook ``cfg`` and the API webhook ``api-hook``. Of ``cfg``'s deliveries:
    e1 succeeded, e2 failed and due again, e3 parked (failed), e4 dead, e5 leased (being attempted), e6 and e7
    pending. ``api-hook`` is mid-rotation; ``cfg`` has a refresh token; the dashboard session ``signed-out`` ended."""
    store = SqliteStore(path)
    await store.open()
    try:
        await store.sync_config_webhooks({"cfg": CONFIG_SPEC}, T0)
        assert await store.insert_api_webhook("api-hook", API_SPEC, T0)
        assert await store.update_api_webhook("api-hook", API_SPEC, T0 + 1, rotation=("whsec_old", T0 + 3600))
        await store.save_refresh_token("cfg", "refresh-1")
        await store.end_session("signed-out", T0 + 3600, T0)
        for n, event_id in enumerate(EVENT_IDS):
            created = f"2024-01-15T10:35:0{n}.5Z" if n % 2 else f"2024-01-15T10:35:0{n}Z"
            await store.ingest([event(event_id, "cfg", "api-hook", event_type=f"t.{n % 3}", created_at=created)], T0)
        claims, _ = await store.claim("cfg", 5, T0 + 10, T0 + 70)
        assert [c.event.id for c in claims] == EVENT_IDS[:5]
        ok, again, parked, dead, _leased = claims
        await store.record(
            [
                result(ok, attempt(1, T0 + 10, ok=True), S.SUCCEEDED),
                result(again, attempt(1, T0 + 10, ok=False, next_at=T0 + 70), S.PENDING),
                result(parked, attempt(1, T0 + 10, ok=False, next_at=T0 + 3600), S.FAILED),
                result(dead, attempt(1, T0 + 10, ok=False), S.DEAD),
            ]
        )
    finally:
        await store.close()


async def contents(store: Store) -> dict[str, Any]:
    """Everything the store API shows of a store: each event with its deliveries and attempts, the event list in
    order, the API webhooks, the refresh tokens, the hourly attempt counts around T0, whether ``signed-out`` ended."""
    page = await store.list_events(event_type=None, since=None, until=None, cursor=None, limit=1000, scope=EVERYTHING)
    events = {}
    for summary in page.events:
        found = await store.get_event(summary.id, scope=EVERYTHING)
        assert found is not None
        events[summary.id] = found
    return {
        "list": [(e.id, e.type, e.created_at, e.deliveries) for e in page.events],
        "events": events,
        "webhooks": await store.api_webhooks(),
        "token": await store.load_refresh_token("cfg"),
        "totals": await store.status_totals(),
        "activity": await store.activity(T0 - 3600, T0 + 3600, scope=EVERYTHING),
        "signed_out": await store.session_ended("signed-out"),
    }


def requeued(delivery: Delivery, at: float) -> Delivery:
    """``delivery`` as a copy leaves one that was being attempted: pending, due at ``at``."""
    return replace(delivery, status=DeliveryStatus.PENDING, next_attempt_at=at, updated_at=at)
