"""The HTTP API's ingest side (CONTRACT §4): ``POST /v1/events``, event lookup, health and metrics. The pieces every
handler module shares (the error envelope, the middlewares, ``Services``) are in ``relay.http``."""

from __future__ import annotations

import functools

import structlog
from aiohttp import web

from relay.errors import NotFound
from relay.http import (
    CALLER,
    SERVICES,
    ApiError,
    Services,
    api_middleware,
    json_response,
    ok,
    require_json,
    serve_api,
)
from relay.ingest import InvalidJson, TooLarge, commit_events, parse_body
from relay.listeners import DIRECT_ROUTES, Handler
from relay.metrics import CONTENT_TYPE
from relay.store import IngestResult
from relay.views import event_view

log = structlog.get_logger()


async def post_events(request: web.Request) -> web.Response:
    return await ingest_events(request, services=request.app[SERVICES])


async def ingest_events(request: web.Request, *, services: Services) -> web.Response:
    """``POST /v1/events``: answered by the listener itself (``DIRECT_ROUTES``), or through the router."""
    if not services.accepting:
        raise ApiError(503, "unavailable", "relay is shutting down; nothing was acknowledged")
    require_json(request)
    server = services.config.server
    body = await request.read()  # read, and held to max_body_size, by api_middleware
    now = services.clock.now()
    tenant = request[CALLER].tenant
    try:
        parsed = parse_body(body, now=now, max_batch=server.max_batch, registry=services.registry, tenant=tenant)
    except InvalidJson as exc:
        raise ApiError(400, "invalid_json", str(exc)) from exc
    except TooLarge as exc:
        raise ApiError(413, "payload_too_large", str(exc)) from exc
    results = await commit_events(services.store, services.scheduler, parsed.events, now, services.on_ingest)
    if not results[0].created:  # a refused request stored nothing: its first event was not created either
        _refuse_taken(results, parsed.batch)
    if parsed.batch:
        return ok([{"id": r.id, "deliveries": r.deliveries} for r in results], status=202)
    return ok({"id": results[0].id, "deliveries": results[0].deliveries}, status=202)


def _refuse_taken(results: list[IngestResult], batch: bool) -> None:
    """A request holding the id of another tenant's event stored nothing: 409, naming each such id."""
    taken = [(index, r.id) for index, r in enumerate(results) if r.taken]
    if not taken:
        return
    details = [
        {"path": f"[{index}].id" if batch else "id", "message": "is the id of an event of another tenant, or of none"}
        for index, _ in taken
    ]
    message = "an event id is taken by an event of another tenant: nothing was stored; send it under another id"
    raise ApiError(409, "conflict", message, details)


async def get_event(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    found = await services.store.get_event(request.match_info["event_id"], scope=request[CALLER].scope)
    if found is None:
        raise NotFound(f"no event with id {request.match_info['event_id']!r}")
    event, deliveries = found
    return ok(event_view(event, deliveries))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    reason = await services.ready() if services.ready is not None else None
    if reason is not None:
        return json_response({"status": "unavailable", "reason": reason}, status=503)
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if services.metrics is None:
        raise web.HTTPNotFound()
    body = await services.metrics.scrape(
        services.clock.now(),
        max_age=services.config.server.metrics_cache_ttl,
        in_flight=services.scheduler.in_flight,
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def build_app(services: Services, *, with_health: bool) -> web.Application:
    # aiohttp's own size check is set above ours so that ours (with the JSON error) is the one that answers.
    app = web.Application(
        middlewares=[api_middleware],
        client_max_size=services.config.server.max_body_size,
    )
    app[SERVICES] = services
    app.router.add_post("/v1/events", post_events)
    # The hot route skips the router and aiohttp's middleware chain, with the same checks (serve_api). With the
    # commit hook (relay.ingest.commit_events): single ingest 43-46 % -> 52 % of the bare handler (3 alternating runs).
    ingest = functools.partial(ingest_events, services=services)
    direct: dict[tuple[str, str], Handler] = {
        ("POST", "/v1/events"): functools.partial(serve_api, handler=ingest, services=services, key_required=True)
    }
    app[DIRECT_ROUTES] = direct
    app.router.add_get("/v1/events/{event_id}", get_event)
    from relay.api_manage import add_manage_routes  # it builds on this module

    add_manage_routes(app)
    from relay.api_tenants import add_tenant_routes

    add_tenant_routes(app)
    from relay.ui.app import add_ui_routes

    add_ui_routes(app)
    if with_health:
        add_health_routes(app)
    return app


def build_health_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[api_middleware])
    app[SERVICES] = services
    add_health_routes(app)
    return app
