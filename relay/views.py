"""JSON shapes of the API's objects (CONTRACT §5): pure functions from models to plain dicts."""

from __future__ import annotations

from typing import Any

import orjson

from relay.models import Attempt, Delivery, Event, format_time


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": format_time(attempt.started_at),
        "duration_ms": round(attempt.duration_ms, 3),
        "status_code": attempt.status_code,
        "error": attempt.error,
        "error_detail": attempt.error_detail,
        "response_body": attempt.response_body,
        "next_attempt_at": format_time(attempt.next_attempt_at),
    }


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "webhook_id": delivery.webhook_id,
        "status": delivery.status,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": format_time(delivery.next_attempt_at),
        "created_at": format_time(delivery.created_at),
        "updated_at": format_time(delivery.updated_at),
        "attempts": [attempt_view(a) for a in delivery.attempts],
    }


def event_view(event: Event, deliveries: list[Delivery] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at,
        "ingested_at": format_time(event.ingested_at),
        "data": orjson.loads(event.data),
    }
    if deliveries is not None:
        view["deliveries"] = [delivery_view(d) for d in deliveries]
    return view
