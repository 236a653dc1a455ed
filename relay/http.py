"""What every HTTP handler module shares: the running daemon's ``Services``, the JSON error envelope, and the
middlewares (errors → envelope, the request deadline and body cap, the API key and the ``Caller`` it makes)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from relay.clock import Clock
from relay.config import Config
from relay.errors import Conflict, NotFound, Problem, StoreUnavailable, ValidationError
from relay.listeners import SUPPORTED_ENCODINGS, UNSUPPORTED_ENCODING, ConnectionGuard, Handler, guard_of
from relay.metrics import Metrics
from relay.models import EVERYTHING, TENANT_ID, TENANT_ID_RULE, Scope
from relay.registry import Registry
from relay.scheduler import Scheduler
from relay.store import Store
from relay.views import error_body
from relay.webhooks import WebhookService

log = structlog.get_logger()


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
    webhooks: WebhookService = field(init=False)
    _api_keys: tuple[object, list[bytes]] | None = field(default=None, init=False, repr=False)
    _signing_key: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.webhooks = WebhookService(self.store, self.registry, self.clock)

    @property
    def api_keys(self) -> list[bytes]:
        """The API keys as bytes, what a presented key is compared with (kept per config: a reload replaces it)."""
        keys = self.config.server.api_keys
        if self._api_keys is None or self._api_keys[0] is not keys:
            self._api_keys = (keys, [key.reveal().encode() for key in keys])
        return self._api_keys[1]

    async def signing_key(self) -> bytes:
        """The key of portal links and dashboard sessions (``Tenants.signing_key``): made once for the store, and
        never changed, so read once per process instead of once per request."""
        if self._signing_key is None:
            self._signing_key = await self.store.signing_key()
        return self._signing_key


SERVICES = web.AppKey("services", Services)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from: an admin key (every tenant, ``tenant`` None) or a tenant key (its tenant)."""

    tenant: str | None = None
    key_id: str | None = None  # a tenant key's id (the dashboard's session remembers which key made it)

    @property
    def admin(self) -> bool:
        return self.tenant is None

    @property
    def scope(self) -> Scope:
        """What the caller may see and change."""
        return EVERYTHING if self.tenant is None else Scope(self.tenant)


ADMIN = Caller()
CALLER = web.RequestKey("caller", Caller)
TENANT_KEY_PREFIX = "rk_"
TOUCH_EVERY = 60.0  # seconds between two writes of a tenant key's last_used_at (it is precise to a minute)


def require_admin(request: web.Request) -> None:
    """Refuse a tenant key: the route is an admin's (CONTRACT §9: ``403``, whatever it names)."""
    if not request[CALLER].admin:
        raise ApiError(403, "forbidden", "this route needs an admin key (server.api_keys); a tenant key cannot use it")


def list_scope(request: web.Request) -> Scope:
    """The scope of a list: a tenant key's tenant; an admin's ``?tenant=``, or everything. A tenant key naming
    another tenant is a 400 (the same answer whatever it names)."""
    caller = request[CALLER]
    asked = request.query.get("tenant")
    if asked is None:
        return caller.scope
    if not TENANT_ID.fullmatch(asked):
        raise ValidationError([Problem("tenant", TENANT_ID_RULE)])
    if not caller.admin and asked != caller.tenant:
        raise ValidationError([Problem("tenant", f'a tenant key lists only its own tenant ("{caller.tenant}")')])
    return Scope(asked)


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
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await serve_api(request, handler, request.app[SERVICES])


async def serve_api(
    request: web.Request, handler: Handler, services: Services, *, key_required: bool | None = None
) -> web.StreamResponse:
    """Every request, in one frame: the body read within the request's deadline and held to ``max_body_size``, the
    API key for ``/v1/`` routes, and every error as the JSON envelope. One frame instead of a middleware per concern:
    155-168 µs of CPU a single-event ingest against 156-176 µs with three (alternating runs on a noisy machine; the
    quieter prototype measured 4-7 µs). ``api_middleware`` for routed requests; ``DIRECT_ROUTES`` for the ones the
    listener dispatches itself, which say whether they need the key (``key_required``) so that the path need not be
    decoded to tell."""
    guard = guard_of(request)
    try:
        if guard is not None and (refused := await _receive(request, guard, services)) is not None:
            return refused
        if key_required is None:
            path = request.path  # decoded: "/%761/events" is "/v1/events" to the router, and needs the key too
            key_required = path.startswith("/v1/") and path not in PUBLIC_PATHS
        if key_required:
            request[CALLER] = await _authenticate(request, services)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason)
    except Exception as exc:
        return _error_answer(request, exc)
    finally:
        if guard is not None:
            guard.request_finished()


def _error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The envelope for an error a handler raised."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, ValidationError):
        details = [{"path": p.path, "message": p.message} for p in exc.problems]
        return error_response(400, "validation_error", str(exc), details)
    if isinstance(exc, NotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, Conflict):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, StoreUnavailable):
        log.error("store_unavailable", path=request.path, error=str(exc))
        return error_response(503, "unavailable", "the store cannot write right now; nothing was acknowledged")
    log.error("request_failed", path=request.path, method=request.method, exc_info=exc)
    return error_response(500, "internal_error", "an internal error occurred; it has been logged")


async def _receive(request: web.Request, guard: ConnectionGuard, services: Services) -> web.Response | None:
    """The headers are in: the body must follow within what is left of ``request_timeout``. A response when the
    request is refused here (408, or 400 for a client that left mid-body); raises ``ApiError`` for 413 and 415."""
    arrived = request.content.is_eof()  # the whole body came with the headers: nothing to wait for
    remaining = guard.request_started(reading=not arrived)
    if request.body_exists:
        if (encoding := request.headers.get("Content-Encoding")) and encoding.strip().lower() not in (
            SUPPORTED_ENCODINGS
        ):
            raise ApiError(415, "unsupported_media_type", UNSUPPORTED_ENCODING)
        limit = services.config.server.max_body_size
        if (length := request.content_length) is not None and length > limit:
            raise _too_large(limit)  # refused before a byte of it is read
        try:
            if arrived:
                await request.read()  # capped at client_max_size = max_body_size; handlers get it cached
            else:
                async with asyncio.timeout(remaining):  # a timer only for a body still on its way
                    await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(limit) from None
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
    return None


def _too_large(limit: int) -> ApiError:
    # Made when needed: one made ahead for every request cost ~3 points of the single-ingest ratio (alternating runs).
    return ApiError(413, "payload_too_large", f"the body is larger than server.max_body_size ({limit} bytes)")


def _presented_key(request: web.Request) -> bytes:
    header = request.headers.get("Authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("X-API-Key", "")
    # Header bytes that are not UTF-8 arrive as surrogate escapes: back as the bytes sent, they match no key.
    return key.encode("utf-8", "surrogateescape")


PUBLIC_PATHS = frozenset({"/v1/openapi.json"})  # describes the API, holds no data: served without a key


async def _authenticate(request: web.Request, services: Services) -> Caller:
    caller = await caller_of_key(services, _presented_key(request))
    if caller is None:
        raise ApiError(401, "unauthorized", "a valid API key is required (Authorization: Bearer KEY)")
    return caller


async def caller_of_key(services: Services, presented: bytes) -> Caller | None:
    """The caller a key makes (the API's header, the dashboard's sign-in form): an admin key (``server.api_keys``),
    or a tenant key found in the store by its SHA-256 (never cached: a revoked key is refused from the next request
    on, by every relay); None for anything else."""
    # Compare against every admin key, always, so timing says nothing about which (if any) matched.
    matched = False
    for key in services.api_keys:
        matched |= hmac.compare_digest(presented, key)
    if presented and matched:
        return ADMIN
    if presented.startswith(TENANT_KEY_PREFIX.encode()):
        found = await services.store.tenant_key_by_digest(hashlib.sha256(presented).digest())
        if found is not None:
            now = services.clock.now()
            if found.last_used_at is None or now - found.last_used_at >= TOUCH_EVERY:
                await services.store.touch_tenant_key(found.id, now)
            return Caller(found.tenant, found.id)
    return None


def require_json(request: web.Request) -> None:
    if request.headers.get("Content-Type") == "application/json":
        return  # what nearly every producer sends: aiohttp's full parse of the header (~7 µs) tells nothing more
    ctype = request.content_type
    if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
