"""Prometheus metrics (prometheus-client), on a registry of the daemon's own.

Labels are bounded: webhook ids and outcome kinds, never event ids or URLs.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from relay.delivery import AttemptReport
from relay.models import Claim, DeliveryStatus, Webhook
from relay.retry import Decision

__all__ = ["CONTENT_TYPE", "Metrics"]

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_ingested = Counter(
            "relay_events_ingested", "Events accepted (new ids only)", registry=self.registry
        )
        self.attempts = Counter(
            "relay_delivery_attempts",
            "Delivery attempts by webhook and outcome (success or the error kind)",
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
        self.oauth_token_requests = Counter(
            "relay_oauth_token_requests",
            "Requests to OAuth2 token endpoints by webhook and result",
            ["webhook", "result"],
            registry=self.registry,
        )
        self.in_flight = Gauge("relay_attempts_in_flight", "Attempts in flight now", registry=self.registry)
        self.store_commits = Gauge(
            "relay_store_commits", "Group transactions committed since start", registry=self.registry
        )

    # hooks called by the rest of the daemon

    def ingested(self, count: int) -> None:
        if count:
            self.events_ingested.inc(count)

    def attempted(self, webhook: Webhook, claim: Claim, report: AttemptReport, decision: Decision) -> None:
        outcome = "success" if report.error is None else str(report.error)
        self.attempts.labels(webhook.id, outcome).inc()
        self.attempt_duration.observe(report.duration_ms / 1000)
        if decision.status is DeliveryStatus.SUCCEEDED:
            finished = report.started_at + report.duration_ms / 1000
            self.event_to_delivery.observe(max(0.0, finished - claim.event.ingested_at))

    def token_requested(self, webhook_id: str, result: str) -> None:
        self.oauth_token_requests.labels(webhook_id, result).inc()

    def render(self, statuses: dict[str, int], in_flight: int, commits: int) -> bytes:
        for status in DeliveryStatus:
            self.deliveries.labels(str(status)).set(statuses.get(status, 0))
        self.in_flight.set(in_flight)
        self.store_commits.set(commits)
        return generate_latest(self.registry)
