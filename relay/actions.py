"""What an operator does to deliveries, from the management API or the dashboard: send a test, replay an event,
re-drive failures, cancel a delivery. One implementation for both doors: each takes the caller's ``Scope`` and
raises the project's errors (``NotFound``, ``ValidationError``, ``Conflict``), which each door renders its way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from relay.errors import NotFound, Problem, ValidationError
from relay.http import Services
from relay.models import Attempt, Claim, Delivery, Event, Lease, Scope, Webhook, format_time, new_event_id, new_id

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class TestSent:
    """The one attempt of a test event (nothing stored)."""

    event_id: str
    attempt: Attempt
    succeeded: bool


async def send_test(services: Services, webhook: Webhook) -> TestSent:
    """One ``webhook.test`` event to ``webhook`` only, at once, outside the outbox: nothing is stored, retried or
    counted in the stats; the answer is the attempt."""
    now = services.clock.now()
    data = {"webhook_id": webhook.id, "message": "A test event sent by relay."}
    event = Event(new_event_id(now), "webhook.test", format_time(now) or "", orjson.dumps(data), now)
    claim = Claim(new_id("dlv", now), webhook.id, 1, now, event, Lease("test", now, 0))  # not in the outbox
    report = await services.scheduler.deliverer.attempt(webhook, claim)
    log.info(
        "webhook_test_sent",
        webhook_id=webhook.id,
        event_id=event.id,
        status_code=report.status_code,
        error=report.error,
    )
    return TestSent(event.id, report.to_attempt(1, None), report.succeeded)


async def replay(services: Services, event_id: str, webhook_id: str | None, *, scope: Scope) -> list[Delivery]:
    """New deliveries of a stored event: to ``webhook_id``, or to every webhook inside ``scope`` subscribed to it."""
    found = await services.store.get_event(event_id, scope=scope)
    if found is None:
        raise NotFound(f"no event with id {event_id!r}")
    event = found[0]
    if webhook_id is not None:
        webhook = services.registry.find(webhook_id, scope)
        if webhook is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        if webhook.tenant is not None and webhook.tenant != event.tenant:  # another customer's endpoint: never
            raise ValidationError(
                [Problem("webhook_id", "is a webhook of another tenant than the event's: it never gets the event")]
            )
        webhook_ids: tuple[str, ...] = (webhook_id,)
    else:  # inside a tenant, its own webhooks only: a tenant key never sends to the platform's
        subscribed = services.registry.subscribers(event.type, event.tenant)
        webhook_ids = tuple(w for w in subscribed if services.registry.find(w, scope) is not None)
    now = services.clock.now()
    orderings = services.registry.orderings(webhook_ids) if event.ordering_key is not None else ()
    deliveries = await services.store.replay(event_id, webhook_ids, now, scope=scope, orderings=orderings)
    if deliveries is None:
        raise NotFound(f"no event with id {event_id!r}")
    if webhook_ids:
        services.scheduler.notify(webhook_ids, now)
    log.info("event_replayed", event_id=event_id, deliveries=len(deliveries), webhook_ids=list(webhook_ids))
    return deliveries


async def redrive(services: Services, webhook_id: str | None, *, include_dead: bool, scope: Scope) -> int:
    """Failed (and, with ``include_dead``, dead) deliveries due again now: of ``webhook_id``, or of every webhook
    inside ``scope``; how many."""
    if webhook_id is not None:
        if services.registry.find(webhook_id, scope) is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        webhook_ids = [webhook_id]
    else:
        webhook_ids = [w.id for w in services.registry.visible(scope)]
    now = services.clock.now()
    counts = await services.store.redrive(now, webhook_ids, include_dead=include_dead)
    if counts:
        services.scheduler.notify(counts, now)
    total = sum(counts.values())
    log.info("failures_redriven", count=total, webhook_id=webhook_id, include_dead=include_dead)
    return total


async def cancel(services: Services, delivery_id: str, *, scope: Scope) -> Delivery:
    """A pending or parked delivery ends ``cancelled``; an ordering key it held moves on (CONTRACT §11).
    ``Conflict`` when it has ended, or is being attempted right now."""
    now = services.clock.now()
    delivery = await services.store.cancel(delivery_id, now, scope=scope)
    if delivery is None:
        raise NotFound(f"no delivery with id {delivery_id!r}")
    services.scheduler.notify([delivery.webhook_id], now)  # the next delivery of its key may be due
    log.info("delivery_cancelled", delivery_id=delivery_id, webhook_id=delivery.webhook_id)
    return delivery


async def patch_webhook(services: Services, webhook_id: str, body: Any, *, scope: Scope) -> Webhook:
    """Change an API webhook (``PATCH`` semantics: the fields given); one switched back on resumes what it held."""
    webhook = await services.webhooks.patch(webhook_id, body, services.config.delivery, scope=scope)
    if webhook.is_active:
        await services.scheduler.refresh([webhook.id])
    return webhook
