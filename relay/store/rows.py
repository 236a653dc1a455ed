"""Rows as records, for every backend's reads: both select attempts, deliveries and webhooks with the same columns,
in the same order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from relay.errors import Conflict
from relay.models import Attempt, Delivery, DeliveryStatus, ErrorKind
from relay.store.base import NewEvent, StoredWebhook, TenantKey, TenantSummary


def attempt_of(row: Sequence[Any]) -> Attempt:
    """A row of (delivery seq, number, started at, duration, status code, error, detail, response body, next
    attempt at); the delivery's seq is the caller's."""
    return Attempt(
        number=int(row[1]),
        started_at=float(row[2]),
        duration_ms=float(row[3]),
        status_code=row[4],
        error=ErrorKind(row[5]) if row[5] else None,
        error_detail=row[6],
        response_body=row[7],
        next_attempt_at=row[8],
    )


def delivery_of(row: Sequence[Any], attempts: Sequence[Attempt]) -> Delivery:
    """A row of (seq, id, event id, webhook id, status, attempt count, due at, created at, updated at)."""
    status = DeliveryStatus(row[4])
    return Delivery(
        id=row[1],
        event_id=row[2],
        webhook_id=row[3],
        status=status,
        attempt_count=int(row[5]),
        next_attempt_at=row[6] if status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED) else None,
        created_at=float(row[7]),
        updated_at=float(row[8]),
        attempts=tuple(attempts),
    )


def stored_webhook(row: Sequence[Any]) -> StoredWebhook:
    """A row of (id, spec, created at, updated at, previous secret, previous secret until)."""
    return StoredWebhook(
        id=row[0],
        spec=bytes(row[1]),
        created_at=float(row[2]),
        updated_at=float(row[3]),
        previous_secret=row[4],
        previous_secret_until=None if row[5] is None else float(row[5]),
    )


def foreign_ids(events: Sequence[NewEvent], known: Mapping[str, tuple[int, str | None]]) -> set[str]:
    """The ids in ``events`` that an event of another tenant has (``known``: id -> delivery count and tenant, of
    stored events): such a request stores nothing (``IngestResult.taken``). An id relay made up is never one: it
    gets another id instead."""
    return {e.id for e in events if not e.generated and e.id in known and known[e.id][1] != e.tenant}


def spec_tenant(spec: bytes) -> str | None:
    """The tenant a webhook's stored spec names (validated before it was stored); None: platform-wide."""
    tenant = orjson.loads(spec).get("tenant")
    return tenant if isinstance(tenant, str) else None


def check_quota(tenant: str, held: int, max_per_tenant: int) -> None:
    """Raise ``Conflict`` when ``tenant``, holding ``held`` webhooks, may have no more (``[tenants] max_webhooks``)."""
    if held >= max_per_tenant:
        raise Conflict(
            f"tenant {tenant!r} has {held} webhooks, the most tenants.max_webhooks allows ({max_per_tenant})"
        )


KEY_COLUMNS = "id, tenant, prefix, description, created_at, last_used_at"


def tenant_key_of(row: Sequence[Any]) -> TenantKey:
    """A row of ``KEY_COLUMNS``."""
    return TenantKey(row[0], row[1], row[2], row[3], float(row[4]), None if row[5] is None else float(row[5]))


def summaries(
    webhooks: Sequence[Sequence[Any]], keys: Sequence[Sequence[Any]], deliveries: Sequence[Sequence[Any]]
) -> list[TenantSummary]:
    """Rows of (tenant, count), (tenant, count) and (tenant, status, count) as tenants, by id."""
    counted: dict[str, dict[str, Any]] = {}
    for tenant, count in webhooks:
        counted.setdefault(tenant, {"deliveries": {}})["webhooks"] = int(count)
    for tenant, count in keys:
        counted.setdefault(tenant, {"deliveries": {}})["keys"] = int(count)
    for tenant, status, count in deliveries:
        if tenant in counted:
            counted[tenant]["deliveries"][status] = int(count)
    return [
        TenantSummary(tenant, c.get("webhooks", 0), c.get("keys", 0), c["deliveries"])
        for tenant, c in sorted(counted.items())
    ]


def check_cancellable(delivery_id: str, status: str) -> None:
    """Raise ``Conflict`` unless a delivery in ``status`` may be cancelled (pending or parked, CONTRACT §11)."""
    if status == "delivering":
        raise Conflict(f"delivery {delivery_id!r} is being attempted right now; cancel it once it ends")
    if status not in ("pending", "failed"):
        raise Conflict(f"delivery {delivery_id!r} has already ended ({status})")
