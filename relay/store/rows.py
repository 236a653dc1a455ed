"""Rows as records, for every backend's reads: both select attempts, deliveries and webhooks with the same columns,
in the same order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.models import Attempt, Delivery, DeliveryStatus, ErrorKind
from relay.store.base import StoredWebhook


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
