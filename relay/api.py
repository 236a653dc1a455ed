"""The HTTP API: ingest (CONTRACT §4), event lookup, health, behind one error envelope and API-key check."""

from __future__ import annotations

import asyncio
import hmac
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from relay.clock import Clock
from relay.config import Config
from relay.errors import Conflict, NotFound, StoreUnavailable, ValidationError
from relay.ingest import InvalidJson, TooLarge, parse_body
from relay.listeners import SUPPORTED_ENCODINGS, UNSUPPORTED_ENCODING, guard_of
from relay.metrics import CONTENT_TYPE, Metrics
from relay.registry import Registry
from relay.scheduler import Scheduler
from relay.store import IngestResult, NewEvent, Store
from relay.views import error_body, event_view

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Services:
    """What the request handlers need from the running daemon."""

    config: Config
    store: Store
    registry: Registry
    scheduler: Scheduler
    clock: Clock
    accepting: bool = True
    ready: Callable[[], Awaitable[str | None]] | None = None
    on_ingest: list[Callable[[int], None]] = field(default_factory=list)
    metrics: Metrics | None = None


SERVICES = web.AppKey("services", Services)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def ok(data: Any, status: int = 200, meta: dict[str, Any] | None = None) -> web.Response:
    payload: dict[str, Any] = {"success": True, "data": data}
    if meta:
        payload["meta"] = meta
    return json_response(payload, status)


def error_response(status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> web.Response:
    return web.Response(body=error_body(code, message, details), status=status, content_type="application/json")


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except ValidationError as exc:
        details = [{"path": p.path, "message": p.message} for p in exc.problems]
        return error_response(400, "validation_error", str(exc), details)
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except Conflict as exc:
        return error_response(409, "conflict", str(exc))
    except StoreUnavailable as exc:
        log.error("store_unavailable", path=request.path, error=str(exc))
        return error_response(503, "unavailable", "the store cannot write right now; nothing was acknowledged")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("request_failed", path=request.path, method=request.method)
        return error_response(500, "internal_error", "an internal error occurred; it has been logged")


@web.middleware
async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The headers are in: the body must follow within what is left of ``request_timeout``."""
    guard = guard_of(request)
    if guard is None:
        return await handler(request)
    remaining = guard.request_started()
    try:
        if request.body_exists:
            if (encoding := request.headers.get("Content-Encoding")) and encoding.strip().lower() not in (
                SUPPORTED_ENCODINGS
            ):
                raise ApiError(415, "unsupported_media_type", UNSUPPORTED_ENCODING)
            limit = request.app[SERVICES].config.server.max_body_size
            too_large = ApiError(
                413, "payload_too_large", f"the body is larger than server.max_body_size ({limit} bytes)"
            )
            if request.content_length is not None and request.content_length > limit:
                raise too_large  # refused before a byte of it is read
            try:
                if request.content.is_eof():  # the whole body came with the headers: nothing to wait for
                    await request.read()  # capped at client_max_size = max_body_size; handlers get it cached
                else:
                    async with asyncio.timeout(remaining):  # a timer only for a body still on its way
                        await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise too_large from None
            except TimeoutError:
                response = error_response(
                    408, "request_timeout", "the request was not received within server.request_timeout"
                )
                response.force_close()
                return response
            except ConnectionResetError:  # the client left mid-body: nobody to answer, and no fault of ours
                log.info("request_aborted", path=request.path)
                response = error_response(400, "request_aborted", "the connection closed before the body was complete")
                response.force_close()
                return response
        guard.body_received()
        return await handler(request)
    finally:
        guard.request_finished()


def _presented_key(request: web.Request) -> bytes:
    header = request.headers.get("Authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("X-API-Key", "")
    # Header bytes that are not UTF-8 arrive as surrogate escapes: back as the bytes sent, they match no key.
    return key.encode("utf-8", "surrogateescape")


PUBLIC_PATHS = frozenset({"/v1/openapi.json"})  # describes the API, holds no data: served without a key


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/") and request.path not in PUBLIC_PATHS:
        presented = _presented_key(request)
        keys = request.app[SERVICES].config.server.api_keys
        # Compare against every key, always, so timing says nothing about which (if any) matched.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(presented, key.reveal().encode())
        if not presented or not matched:
            raise ApiError(401, "unauthorized", "a valid API key is required (Authorization: Bearer KEY)")
    return await handler(request)


def require_json(request: web.Request) -> None:
    ctype = request.content_type
    if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")


async def post_events(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if not services.accepting:
        raise ApiError(503, "unavailable", "relay is shutting down; nothing was acknowledged")
    require_json(request)
    server = services.config.server
    body = await request.read()  # read, and held to max_body_size, by deadline_middleware
    now = services.clock.now()
    try:
        parsed = parse_body(body, now=now, max_batch=server.max_batch, registry=services.registry)
    except InvalidJson as exc:
        raise ApiError(400, "invalid_json", str(exc)) from exc
    except TooLarge as exc:
        raise ApiError(413, "payload_too_large", str(exc)) from exc
    results = await _commit(services, parsed.events, now)
    data = [{"id": r.id, "deliveries": r.deliveries} for r in results]
    return ok(data if parsed.batch else data[0], status=202)


async def _commit(services: Services, events: list[NewEvent], now: float) -> list[IngestResult]:
    """Commit the events, and tell the scheduler what to deliver the moment the commit lands.

    Where a webhook's lane has room, its new deliveries are committed already leased and start at once, with no
    claim; the rest are announced as due. That bookkeeping runs when the commit lands even if this request is
    gone by then (its client left, the handler was cancelled), so nothing committed waits for a lease to run out
    or for the next event to wake its lane.
    """
    scheduler = services.scheduler
    rooms = scheduler.reserve(Counter(w for event in events for w in event.webhook_ids), now)
    try:
        committing = services.store.submit_ingest(events, now, rooms)
    except BaseException:
        scheduler.start(rooms, ())
        raise

    def committed(done: asyncio.Future[list[IngestResult]]) -> None:
        if done.cancelled() or done.exception() is not None:
            scheduler.start(rooms, ())
            return
        results = done.result()
        scheduler.start(rooms, [claim for result in results for claim in result.leased])
        created = 0
        for event, result in zip(events, results, strict=True):
            if result.created:
                created += 1
                queued = event.webhook_ids
                if result.leased:
                    started = {claim.webhook_id for claim in result.leased}
                    queued = tuple(w for w in queued if w not in started)
                if queued:
                    scheduler.notify(queued, now)
        for hook in services.on_ingest:
            hook(created)

    committing.add_done_callback(committed)
    return await asyncio.shield(committing)


async def get_event(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    found = await services.store.get_event(request.match_info["event_id"])
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
    totals = await services.store.status_totals()
    body = services.metrics.render(totals, services.scheduler.in_flight, services.store.commits)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def build_app(services: Services, *, with_health: bool) -> web.Application:
    # aiohttp's own size check is set above ours so that ours (with the JSON error) is the one that answers.
    app = web.Application(
        middlewares=[error_middleware, deadline_middleware, auth_middleware],
        client_max_size=services.config.server.max_body_size,
    )
    app[SERVICES] = services
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/v1/events/{event_id}", get_event)
    from relay.api_manage import add_manage_routes  # it builds on this module

    add_manage_routes(app)
    if with_health:
        add_health_routes(app)
    return app


def build_health_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[error_middleware, deadline_middleware])
    app[SERVICES] = services
    add_health_routes(app)
    return app
