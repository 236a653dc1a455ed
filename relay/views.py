"""JSON shapes of the API's objects (CONTRACT §5): pure functions from models to plain dicts."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from relay.config import format_duration
from relay.models import (
    Attempt,
    Auth,
    BasicAuth,
    BearerAuth,
    Delivery,
    Event,
    EventSummary,
    HeaderAuth,
    OAuth2Auth,
    SignatureScheme,
    Webhook,
    format_time,
)
from relay.signing import public_key

# Static headers whose names suggest a credential are shown masked: a view never carries a secret.
_SENSITIVE_HEADER = re.compile(r"auth|token|secret|key|passw|cookie|session|signature", re.IGNORECASE)
MASK = "***"


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> bytes:
    """The one error envelope of every failure (CONTRACT §4), from a handler or from the HTTP layer."""
    return orjson.dumps({"success": False, "error": {"code": code, "message": message, "details": details or []}})


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
        "tenant": event.tenant,
        "ordering_key": event.ordering_key,
        "data": orjson.loads(event.data),
    }
    if deliveries is not None:
        view["deliveries"] = [delivery_view(d) for d in deliveries]
    return view


def event_summary_view(event: EventSummary) -> dict[str, Any]:
    """An event as ``GET /v1/events`` lists it: no payload; ``deliveries`` counts them, as ingest's answer does."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at,
        "ingested_at": format_time(event.ingested_at),
        "tenant": event.tenant,
        "deliveries": event.deliveries,
    }


def webhook_view(webhook: Webhook, *, secret: bool = False) -> dict[str, Any]:
    """A webhook as the API shows it: never a secret or credential, except ``secret`` when asked (the
    answers to creation and rotation, once). An ed25519 webhook shows the ``whpk_`` public key its receivers
    verify with, every time."""
    view: dict[str, Any] = {
        "id": webhook.id,
        "url": _mask_userinfo(webhook.url),
        "description": webhook.description,
        "events": list(webhook.events),
        "signature": webhook.signature,
        "format": webhook.format,
        "sent_at_field": webhook.sent_at_field,
        "headers": {k: MASK if _SENSITIVE_HEADER.search(k) else v for k, v in webhook.headers.items()},
        "retry_schedule": None
        if webhook.retry_schedule is None
        else [format_duration(s) for s in webhook.retry_schedule],
        "timeout": None if webhook.timeout is None else format_duration(webhook.timeout),
        "rate_limit": None if webhook.rate_limit is None else format_rate(webhook.rate_limit),
        "auth": None if webhook.auth is None else auth_view(webhook.auth),
        "is_active": webhook.is_active,
        "source": webhook.source,
        "tenant": webhook.tenant,
        "ordering": webhook.ordering,
        "created_at": format_time(webhook.created_at),
        "previous_secret_until": format_time(webhook.previous_secret_until) if webhook.previous_secret else None,
    }
    if webhook.signature is SignatureScheme.STANDARD_ED25519 and webhook.secret is not None:
        try:
            view["public_key"] = public_key(webhook.secret.reveal())
        except ValueError:  # a key that does not parse signs nothing either; the view says nothing of it
            view["public_key"] = None
    if secret and webhook.secret is not None:
        view["secret"] = webhook.secret.reveal()
    return view


def auth_view(auth: Auth) -> dict[str, Any]:
    """How a webhook authenticates, without the credential itself."""
    if isinstance(auth, BearerAuth):
        return {"type": "bearer"}
    if isinstance(auth, HeaderAuth):
        return {"type": "header", "name": auth.name}
    if isinstance(auth, BasicAuth):
        return {"type": "basic", "username": auth.username}
    assert isinstance(auth, OAuth2Auth)
    return {
        "type": "oauth2",
        "grant": auth.grant,
        "token_url": _mask_userinfo(auth.token_url),
        "client_id": auth.client_id,
        "scope": auth.scope,
        "audience": auth.audience,
        "client_auth": auth.client_auth,
    }


def format_rate(per_second: float) -> str:
    """``50.0`` -> ``"50/s"``, ``0.5`` -> ``"30/m"``: the config file's own units, whole numbers when possible."""
    for unit, size in (("s", 1), ("m", 60), ("h", 3600)):
        count = per_second * size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}/{unit}"
    return f"{per_second * 3600:.6f}".rstrip("0").rstrip(".") + "/h"


def _mask_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{host}"))
