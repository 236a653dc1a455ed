"""Prometheus metrics (prometheus-client), on a registry of the daemon's own.

Labels are bounded: webhook labels and outcome kinds, never event ids or URLs. A webhook label
(:func:`webhook_label`) is the webhook's id only for a webhook declared in the config file; every webhook created
through the API is summed under ``webhook="api"``, so a relay serving many tenants' API webhooks keeps as many
series as its config file declares, not one per webhook created (CONTRACT §9). What a scrape shows of the store
(deliveries by status, the oldest due delivery) is read through :class:`StoreReadings`: at most one count per
``server.metrics_cache_ttl``, shared by every scrape that arrives meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from relay.delivery import AttemptReport
from relay.models import Claim, DeliveryStatus, Webhook
from relay.retry import Decision
from relay.store import Store

__all__ = ["API_WEBHOOKS", "CONTENT_TYPE", "Metrics", "StoreReading", "StoreReadings", "webhook_label"]

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0)
API_WEBHOOKS = "api"  # the one ``webhook`` label value of every webhook created through the API


def webhook_label(webhook: Webhook) -> str:
    """The ``webhook`` label value of a webhook's series: its id if the config file declares it, else ``"api"``."""
    return webhook.id if webhook.source == "config" else API_WEBHOOKS


@dataclass(frozen=True, slots=True)
class StoreReading:
    """What the store held when read: deliveries by status, and the earliest due time of a waiting one."""

    statuses: Mapping[str, int]
    earliest_due: float | None
    read_at: float


class StoreReadings:
    """The store's counts for ``/metrics``, read at most once per ``max_age`` seconds.

    Counting deliveries by status visits every row (about a second for a million on a busy small machine), so
    scrapes within ``max_age`` of the last count reuse it, and scrapes that arrive while a count is under way wait
    for that count instead of queueing their own on the store's read connection.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._last: StoreReading | None = None
        self._reading: asyncio.Task[StoreReading] | None = None

    async def get(self, now: float, max_age: float) -> StoreReading:
        last = self._last
        if last is not None and last.read_at <= now < last.read_at + max_age:
            return last
        if self._reading is None:
            self._reading = asyncio.create_task(self._read(now), name="metrics-store-reading")
            self._reading.add_done_callback(self._done)
        # A scrape that goes away (its client hung up) must not cancel the count the others wait for.
        return await asyncio.shield(self._reading)

    async def _read(self, now: float) -> StoreReading:
        statuses = await self.store.status_totals()
        earliest_due = await self.store.earliest_due()
        return StoreReading(statuses, earliest_due, now)

    def _done(self, task: asyncio.Task[StoreReading]) -> None:
        self._reading = None
        if not task.cancelled() and task.exception() is None:  # a failed read is retried by the next scrape
            self._last = task.result()


class _StoreCommits(Collector):
    """``relay_store_commits_total``: the store's group transactions since start, read at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "relay_store_commits", "Group transactions committed since start", value=self.store.commits
        )


class Metrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.store_readings = StoreReadings(store)
        # The process's own: resident memory, CPU seconds, open and maximum fds, start time; Python's version
        # and its garbage collector.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_StoreCommits(store))
        self.events_ingested = Counter(
            "relay_events_ingested", "Events accepted (new ids only)", registry=self.registry
        )
        self.attempts = Counter(
            "relay_delivery_attempts",
            "Delivery attempts by webhook (config-declared: its id; else api) and outcome (success or error kind)",
            ["webhook", "outcome"],
            registry=self.registry,
        )
        self.attempt_duration = Histogram(
            "relay_delivery_duration_seconds",
            "Duration of one delivery attempt",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.event_to_delivery = Histogram(
            "relay_event_to_delivery_seconds",
            "From ingest to a successful delivery",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.deliveries = Gauge(
            "relay_deliveries", "Deliveries in the store by status", ["status"], registry=self.registry
        )
        self.oldest_due_age = Gauge(
            "relay_oldest_due_delivery_age_seconds",
            "How long the longest-waiting pending or failed delivery has been due (0 when none is due)",
            registry=self.registry,
        )
        self.oauth_token_requests = Counter(
            "relay_oauth_token_requests",
            "Requests to OAuth2 token endpoints by webhook (its id if config-declared, else api) and result",
            ["webhook", "result"],
            registry=self.registry,
        )
        self.in_flight = Gauge("relay_attempts_in_flight", "Attempts in flight now", registry=self.registry)

    # hooks called by the rest of the daemon

    def ingested(self, count: int) -> None:
        if count:
            self.events_ingested.inc(count)

    def attempted(self, webhook: Webhook, claim: Claim, report: AttemptReport, decision: Decision) -> None:
        outcome = "success" if report.error is None else str(report.error)
        self.attempts.labels(webhook_label(webhook), outcome).inc()
        self.attempt_duration.observe(report.duration_ms / 1000)
        if decision.status is DeliveryStatus.SUCCEEDED:
            finished = report.started_at + report.duration_ms / 1000
            self.event_to_delivery.observe(max(0.0, finished - claim.event.ingested_at))

    def token_requested(self, webhook: Webhook, result: str) -> None:
        self.oauth_token_requests.labels(webhook_label(webhook), result).inc()

    async def scrape(self, now: float, *, max_age: float, in_flight: int) -> bytes:
        """The text exposition, with the store read at most ``max_age`` seconds ago."""
        reading = await self.store_readings.get(now, max_age)
        for status in DeliveryStatus:
            self.deliveries.labels(str(status)).set(reading.statuses.get(status, 0))
        due = reading.earliest_due
        self.oldest_due_age.set(0.0 if due is None else max(0.0, now - due))
        self.in_flight.set(in_flight)
        return generate_latest(self.registry)
