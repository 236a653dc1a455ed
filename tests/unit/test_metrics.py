"""``/metrics``' reading of the store: one count per ``metrics_cache_ttl``, shared by concurrent scrapes; the age of
the oldest due delivery; the exposition's own families; per-webhook series only for config-declared webhooks (on the
in-memory store, no HTTP)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.delivery import AttemptReport
from relay.errors import StoreUnavailable
from relay.metrics import Metrics, StoreReadings
from relay.models import Claim, DeliveryStatus, ErrorKind, Event, Lease, Webhook
from relay.retry import Decision
from relay.store import NewEvent
from tests.support.memory_store import MemoryStore

T0 = 1_700_000_000.0


class CountingStore(MemoryStore):
    """Counts its status counts; with ``gate``, each waits for it (a count under way); with ``failing``, each
    raises that."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = 0
        self.gate: asyncio.Event | None = None
        self.failing: str | None = None

    async def status_totals(self) -> dict[str, int]:
        self.counts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing is not None:
            raise StoreUnavailable(self.failing)
        return await super().status_totals()


@pytest.fixture
async def store() -> CountingStore:
    store = CountingStore()
    await store.open()
    return store


def new_event(event_id: str) -> NewEvent:
    return NewEvent(event_id, "t", "2026-01-01T00:00:00Z", b"{}", ("hook",))


async def test_scrapes_within_max_age_reuse_one_count(store: CountingStore) -> None:
    readings = StoreReadings(store)
    assert (await readings.get(T0, max_age=10)).statuses == {}
    await store.ingest([new_event("e1")], T0)
    assert (await readings.get(T0 + 9.9, max_age=10)).statuses == {}
    assert store.counts == 1
    fresh = await readings.get(T0 + 10, max_age=10)
    assert (fresh.statuses, fresh.earliest_due, store.counts) == ({"pending": 1}, T0, 2)
    assert (await readings.get(T0 + 5, max_age=10)).read_at == T0 + 5, "a clock set back counts again"
    await readings.get(T0 + 5, max_age=0)
    assert store.counts == 4, "max_age 0: every scrape counts"


async def test_concurrent_scrapes_share_the_count_under_way(store: CountingStore) -> None:
    readings = StoreReadings(store)
    store.gate = asyncio.Event()
    scrapes = [asyncio.create_task(readings.get(T0 + n, max_age=0)) for n in range(5)]
    await asyncio.sleep(0.01)
    scrapes[0].cancel()  # a scraper that hung up does not cancel the count the others wait for
    store.gate.set()
    results = await asyncio.gather(*scrapes[1:])
    assert store.counts == 1 and all(r is results[0] for r in results)
    assert scrapes[0].cancelled()


async def test_a_failed_count_reaches_every_waiting_scrape_and_is_not_kept(store: CountingStore) -> None:
    readings = StoreReadings(store)
    store.gate, store.failing = asyncio.Event(), "database is locked"
    scrapes = asyncio.gather(*(readings.get(T0, max_age=10) for _ in range(3)), return_exceptions=True)
    await asyncio.sleep(0.01)
    store.gate.set()
    for outcome in await scrapes:
        assert isinstance(outcome, StoreUnavailable)
    assert store.counts == 1
    store.failing = None
    assert (await readings.get(T0, max_age=10)).statuses == {}
    assert store.counts == 2


async def test_the_exposition_shows_statuses_the_oldest_due_age_and_commits(store: CountingStore) -> None:
    metrics = Metrics(store)
    await store.ingest([new_event("e1")], T0)
    await store.ingest([new_event("e2")], T0 + 30)
    text = await metrics.scrape(T0 + 45, max_age=0, in_flight=3)
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert samples[("relay_deliveries", ("pending",))] == 2
    assert samples[("relay_deliveries", ("succeeded",))] == 0
    assert samples[("relay_oldest_due_delivery_age_seconds", ())] == 45
    assert samples[("relay_attempts_in_flight", ())] == 3
    assert samples[("relay_store_commits_total", ())] == store.commits == 2
    text = await metrics.scrape(T0 - 1, max_age=0, in_flight=0)
    assert b"relay_oldest_due_delivery_age_seconds 0.0" in text, "not yet due: 0, never negative"


def samples_of(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def attempt(metrics: Metrics, webhook: Webhook, error: ErrorKind | None) -> None:
    claim = Claim(
        f"dlv_{webhook.id}", webhook.id, 1, T0, Event("e1", "t", "2026-01-01T00:00:00Z", b"{}", T0), Lease("me", T0, 1)
    )
    report = AttemptReport(T0, 12.0, 200 if error is None else 500, error, None, None, None)
    status = DeliveryStatus.SUCCEEDED if error is None else DeliveryStatus.PENDING
    metrics.attempted(webhook, claim, report, Decision(status, None if error is None else T0 + 60))


async def test_api_webhooks_are_summed_under_one_label_config_ones_keep_their_ids(store: CountingStore) -> None:
    """CONTRACT §9: a thousand tenants' API webhooks make one series per outcome, not a thousand."""
    metrics = Metrics(store)
    api = [Webhook(f"whk_{n:04d}", "https://example.com/hook", source="api") for n in range(1000)]
    declared = [Webhook(f"cfg{n}", "https://example.com/hook") for n in range(2)]
    for webhook in api:
        attempt(metrics, webhook, None)
        attempt(metrics, webhook, None)
    for webhook in api[:300]:
        attempt(metrics, webhook, ErrorKind.HTTP_ERROR)
    attempt(metrics, declared[0], None)
    attempt(metrics, declared[1], ErrorKind.HTTP_ERROR)
    for webhook in (api[0], api[1], declared[0]):
        metrics.token_requested(webhook, "success")
    metrics.token_requested(api[2], "error")

    samples = samples_of(await metrics.scrape(T0, max_age=0, in_flight=0))
    attempts = {labels: value for (name, labels), value in samples.items() if name == "relay_delivery_attempts_total"}
    assert attempts == {
        (("outcome", "success"), ("webhook", "api")): 2000,
        (("outcome", "http_error"), ("webhook", "api")): 300,
        (("outcome", "success"), ("webhook", "cfg0")): 1,
        (("outcome", "http_error"), ("webhook", "cfg1")): 1,
    }
    tokens = {labels: value for (name, labels), value in samples.items() if name == "relay_oauth_token_requests_total"}
    assert tokens == {
        (("result", "success"), ("webhook", "api")): 2,
        (("result", "error"), ("webhook", "api")): 1,
        (("result", "success"), ("webhook", "cfg0")): 1,
    }
    assert not any("whk_" in str(labels) for _, labels in samples), "no API webhook id is a label value"
