"""The management API (CONTRACT §5): webhooks, their deliveries, replay, re-drive, stats, the OpenAPI document.

Handlers validate, call the store and keep the Registry and the scheduler in step; every failure goes through
the error envelope of ``relay.api``. Decisions worth knowing:

- Lists are newest first. A cursor is opaque to clients: url-safe base64 of ``"d:<seq>"`` (the last delivery
  shown), ``"e:<seq>"`` (the last event shown) or ``"w:<created_at>:<id>"`` (the last webhook shown);
  ``meta.next_cursor`` is null on the last page. ``since`` (inclusive) and ``until`` (exclusive) bound the listed
  objects' ``created_at``; a wrong query parameter is a 400 that names it, as a wrong body field is.
- ``GET /v1/events`` lists events without their payloads (``GET /v1/events/{id}`` has it), each with how many
  deliveries it has. ``GET /v1/deliveries?webhook_id=`` with an id no webhook has is an empty list, not a 404.
- Webhook changes (create, patch, delete, rotate) are serialised by one lock, committed to the store first and
  then swapped into the Registry. Config-declared webhooks answer 409 to all of them.
- ``POST /v1/webhooks/{id}/test`` sends one ``webhook.test`` event to that webhook only, at once, outside the
  outbox: nothing is stored, retried or counted in the stats; the answer is the attempt.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
import structlog
from aiohttp import web

from relay import actions
from relay.config_fields import Fields, as_bool, as_nonempty_str, choices
from relay.errors import Problem, ValidationError
from relay.http import CALLER, SERVICES, ApiError, list_scope, ok, require_json
from relay.models import (
    EVENT_TOKEN,
    DeliveryStatus,
    Scope,
    Webhook,
    parse_datetime,
)
from relay.openapi import openapi_document
from relay.views import attempt_view, delivery_view, event_summary_view, webhook_view
from relay.webhook_specs import SECRET_MESSAGE

log = structlog.get_logger()

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
OPENAPI = web.AppKey("openapi", bytes)


def add_manage_routes(app: web.Application) -> None:
    app[OPENAPI] = orjson.dumps(openapi_document())
    add = app.router
    add.add_get("/v1/openapi.json", get_openapi)
    add.add_post("/v1/webhooks", create_webhook)
    add.add_get("/v1/webhooks", list_webhooks)
    add.add_get("/v1/webhooks/{webhook_id}", get_webhook)
    add.add_patch("/v1/webhooks/{webhook_id}", patch_webhook)
    add.add_delete("/v1/webhooks/{webhook_id}", delete_webhook)
    add.add_post("/v1/webhooks/{webhook_id}/rotate-secret", rotate_secret)
    add.add_post("/v1/webhooks/{webhook_id}/test", test_webhook)
    add.add_get("/v1/webhooks/{webhook_id}/deliveries", list_webhook_deliveries)
    add.add_get("/v1/deliveries", list_deliveries)
    add.add_get("/v1/events", list_events)
    add.add_post("/v1/events/{event_id}/replay", replay_event)
    add.add_post("/v1/failures/redrive", redrive_failures)
    add.add_post("/v1/deliveries/{delivery_id}/cancel", cancel_delivery)
    add.add_get("/v1/stats", get_stats)


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


# -- webhooks ----------------------------------------------------------------------------------------------


async def create_webhook(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await _json_body(request, optional=False)
    config = services.config
    webhook = await services.webhooks.create(
        body, config.delivery, tenant=request[CALLER].tenant, max_per_tenant=config.tenants.max_webhooks
    )
    return ok(webhook_view(webhook, secret=True), status=201, meta={"message": SECRET_MESSAGE})


async def list_webhooks(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    limit = _limit(request)
    after = _cursor(request, "w")
    webhooks = sorted(services.registry.visible(list_scope(request)), key=_webhook_position, reverse=True)
    if after is not None:
        webhooks = [w for w in webhooks if _webhook_position(w) < _parse_webhook_position(after)]
    page = webhooks[:limit]
    more = len(webhooks) > limit
    next_cursor = _encode_cursor("w", _format_webhook_position(page[-1])) if more and page else None
    return ok([webhook_view(w) for w in page], meta={"next_cursor": next_cursor})


async def get_webhook(request: web.Request) -> web.Response:
    return ok(webhook_view(_webhook(request)))


async def patch_webhook(request: web.Request) -> web.Response:
    body = await _json_body(request, optional=False)
    webhook = await actions.patch_webhook(
        request.app[SERVICES], request.match_info["webhook_id"], body, scope=request[CALLER].scope
    )
    return ok(webhook_view(webhook))


async def delete_webhook(request: web.Request) -> web.Response:
    await request.app[SERVICES].webhooks.delete(request.match_info["webhook_id"], scope=request[CALLER].scope)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    body = await _json_body(request, optional=True)
    webhook = await request.app[SERVICES].webhooks.rotate_secret(
        request.match_info["webhook_id"], body, scope=request[CALLER].scope
    )
    return ok(webhook_view(webhook, secret=True), meta={"message": SECRET_MESSAGE})


async def test_webhook(request: web.Request) -> web.Response:
    sent = await actions.send_test(request.app[SERVICES], _webhook(request))
    return ok({**attempt_view(sent.attempt), "event_id": sent.event_id, "succeeded": sent.succeeded})


# -- deliveries, replay, re-drive, stats ---------------------------------------------------------------------


async def list_webhook_deliveries(request: web.Request) -> web.Response:
    return await _deliveries_page(request, _webhook(request).id, [])


async def list_deliveries(request: web.Request) -> web.Response:
    problems: list[Problem] = []
    webhook_id = request.query.get("webhook_id")
    if webhook_id == "":
        problems.append(Problem("webhook_id", "must not be empty"))
    return await _deliveries_page(request, webhook_id or None, problems, list_scope(request))


async def _deliveries_page(
    request: web.Request, webhook_id: str | None, problems: list[Problem], scope: Scope | None = None
) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        problems.append(Problem("status", f"must be {choices(DeliveryStatus)}"))
    since, until = _window(request, problems)
    limit = _limit(request, problems)
    after = _cursor(request, "d", problems)
    if problems:
        raise ValidationError(problems)
    page = await request.app[SERVICES].store.list_deliveries(
        webhook_id=webhook_id,
        status=status,
        since=None if since is None else since.timestamp(),
        until=None if until is None else until.timestamp(),
        cursor=after,
        limit=limit,
        scope=request[CALLER].scope if scope is None else scope,
    )
    return ok([delivery_view(d) for d in page.deliveries], meta=_next_cursor("d", page.next_cursor))


async def list_events(request: web.Request) -> web.Response:
    problems: list[Problem] = []
    event_type = request.query.get("type")
    if event_type is not None and not EVENT_TOKEN.fullmatch(event_type):
        problems.append(Problem("type", "must be 1-128 characters of [A-Za-z0-9_.:-]"))
    since, until = _window(request, problems)
    limit = _limit(request, problems)
    after = _cursor(request, "e", problems)
    if problems:
        raise ValidationError(problems)
    page = await request.app[SERVICES].store.list_events(
        event_type=event_type, since=since, until=until, cursor=after, limit=limit, scope=list_scope(request)
    )
    return ok([event_summary_view(e) for e in page.events], meta=_next_cursor("e", page.next_cursor))


async def replay_event(request: web.Request) -> web.Response:
    problems: list[Problem] = []
    f = Fields(await object_body(request), "", problems, known=("webhook_id",), table_noun="an object")
    webhook_id = f.get("webhook_id", as_nonempty_str)
    if problems:
        raise ValidationError(problems)
    deliveries = await actions.replay(
        request.app[SERVICES], request.match_info["event_id"], webhook_id, scope=request[CALLER].scope
    )
    return ok({"deliveries": [delivery_view(d) for d in deliveries]}, status=202)


async def redrive_failures(request: web.Request) -> web.Response:
    problems: list[Problem] = []
    body = await object_body(request)
    f = Fields(body, "", problems, known=("webhook_id", "include_dead"), table_noun="an object")
    webhook_id = f.get("webhook_id", as_nonempty_str)
    include_dead = f.get("include_dead", as_bool) or False
    if problems:
        raise ValidationError(problems)
    total = await actions.redrive(
        request.app[SERVICES], webhook_id, include_dead=include_dead, scope=request[CALLER].scope
    )
    return ok({"redriven": total})


async def cancel_delivery(request: web.Request) -> web.Response:
    """``POST /v1/deliveries/{id}/cancel``: a pending or parked delivery ends ``cancelled``; an ordering key it held
    moves on (CONTRACT §11). 409 when it has ended, or is being attempted right now."""
    delivery = await actions.cancel(
        request.app[SERVICES], request.match_info["delivery_id"], scope=request[CALLER].scope
    )
    return ok(delivery_view(delivery))


async def get_stats(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    scope = list_scope(request)
    counts = await services.store.status_counts(scope=scope)
    zeros = {status.value: 0 for status in DeliveryStatus}
    totals = dict(zeros)
    per_webhook = {w.id: dict(zeros) for w in services.registry.visible(scope)}
    for webhook_id, by_status in counts.items():
        mine = per_webhook.setdefault(webhook_id, dict(zeros))
        for status, count in by_status.items():
            totals[status] = totals.get(status, 0) + count
            mine[status] = count
    return ok({"deliveries": totals, "webhooks": per_webhook})


# -- helpers -------------------------------------------------------------------------------------------------


async def _json_body(request: web.Request, *, optional: bool) -> Any:
    """The request's JSON body; with ``optional``, an empty body reads as ``{}``."""
    body = await request.read()  # read, and held to max_body_size, by api_middleware
    if not body.strip() and optional:
        return {}
    require_json(request)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


async def object_body(request: web.Request) -> Mapping[str, Any]:
    """An optional body that must be a JSON object when given."""
    body = await _json_body(request, optional=True)
    if not isinstance(body, Mapping):
        raise ValidationError([Problem("", "the body must be a JSON object")])
    return body


def _webhook(request: web.Request) -> Webhook:
    return request.app[SERVICES].webhooks.get(request.match_info["webhook_id"], request[CALLER].scope)


def _limit(request: web.Request, problems: list[Problem] | None = None) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if raw.isascii() and raw.isdigit() and len(raw) <= 9 and 1 <= int(raw) <= MAX_LIMIT:
        return int(raw)
    problem = Problem("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    if problems is None:
        raise ValidationError([problem])
    problems.append(problem)
    return DEFAULT_LIMIT


def _encode_cursor(kind: str, position: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def _next_cursor(kind: str, position: str | None) -> dict[str, Any]:
    """A list's ``meta``: the cursor of the page after the one that ends at ``position`` (None: it is the last)."""
    return {"next_cursor": None if position is None else _encode_cursor(kind, position)}


def _window(request: web.Request, problems: list[Problem]) -> tuple[datetime | None, datetime | None]:
    """``?since=`` (inclusive) and ``?until=`` (exclusive), RFC 3339 timestamps; a problem for each that is not
    one, and for an ``until`` before ``since``."""
    bounds: list[datetime | None] = []
    for name in ("since", "until"):
        raw = request.query.get(name)
        moment = None if raw is None else parse_datetime(raw)
        if raw is not None and moment is None:
            plus = " (a + in a query string reads as a space: send it as %2B)" if " " in raw else ""
            problems.append(Problem(name, f"must be an RFC 3339 timestamp such as 2024-01-15T10:35:00Z{plus}"))
        bounds.append(moment)
    since, until = bounds
    if since is not None and until is not None and until < since:
        problems.append(Problem("until", "must not be before since"))
    return since, until


def _cursor(request: web.Request, kind: str, problems: list[Problem] | None = None) -> str | None:
    """The position a ``?cursor=`` names, for a list of this ``kind``; a problem when it is not one."""
    raw = request.query.get("cursor")
    if raw is None or raw == "":
        return None
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, ValueError):
        decoded = ""
    prefix = f"{kind}:"
    if decoded.startswith(prefix) and (kind != "w" or _parse_webhook_position(decoded[2:])[1]):
        return decoded[len(prefix) :]
    problem = Problem("cursor", "is not a cursor this list gave")
    if problems is None:
        raise ValidationError([problem])
    problems.append(problem)
    return None


def _webhook_position(webhook: Webhook) -> tuple[float, str]:
    return (webhook.created_at or 0.0, webhook.id)


def _format_webhook_position(webhook: Webhook) -> str:
    created_at, webhook_id = _webhook_position(webhook)
    return f"{created_at!r}:{webhook_id}"


def _parse_webhook_position(position: str) -> tuple[float, str]:
    """``(created_at, id)``; an id of ``""`` when ``position`` is not one this list gave."""
    created_at, _, webhook_id = position.partition(":")
    try:
        at = float(created_at)
    except ValueError:
        return 0.0, ""
    return (at, webhook_id) if math.isfinite(at) else (0.0, "")
