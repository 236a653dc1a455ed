"""Tenants (CONTRACT §9), for admins only: the tenants and their counts, their keys, offboarding, portal links.

A tenant is not created: it exists while it has webhooks (declared in the config file or created through the API)
or keys, so creating its first key or webhook makes it. A path naming a tenant that does not exist answers ``404``;
one that is no tenant id at all, ``400`` naming ``tenant``. A tenant key gets ``403`` on every route here.

Keys are ``rk_`` and 43 characters of url-safe base64 (32 random bytes), shown once in the ``201`` that creates
them, stored only as their SHA-256 and listed by id and prefix. ``last_used_at`` is precise to a minute (a key used
all the time is written once a minute, not once a request).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import structlog
from aiohttp import web

from relay.api_manage import object_body
from relay.config_fields import Fields, as_str
from relay.errors import NotFound, Problem, ValidationError
from relay.http import SERVICES, TENANT_KEY_PREFIX, ApiError, ok, require_admin
from relay.models import TENANT_ID, TENANT_ID_RULE, format_time, new_id
from relay.store import TenantKey, TenantSummary
from relay.ui.tokens import PORTAL, Claims, sign
from relay.units import parse_duration

log = structlog.get_logger()

KEY_MESSAGE = "Save the key now - it will not be shown again."
DEFAULT_PORTAL_TTL = 3600.0
MAX_PORTAL_TTL = 30 * 86400.0
MAX_DESCRIPTION = 500


def add_tenant_routes(app: web.Application) -> None:
    add = app.router
    add.add_get("/v1/tenants", list_tenants)
    add.add_get("/v1/tenants/{tenant}", get_tenant)
    add.add_delete("/v1/tenants/{tenant}", delete_tenant)
    add.add_post("/v1/tenants/{tenant}/keys", create_key)
    add.add_get("/v1/tenants/{tenant}/keys", list_keys)
    add.add_delete("/v1/tenants/{tenant}/keys/{key_id}", revoke_key)
    add.add_post("/v1/tenants/{tenant}/portal", create_portal_link)


async def list_tenants(request: web.Request) -> web.Response:
    require_admin(request)
    summaries = await request.app[SERVICES].store.tenant_summaries()
    return ok([tenant_view(t) for t in summaries])


async def get_tenant(request: web.Request) -> web.Response:
    require_admin(request)
    return ok(tenant_view(await _existing(request)))


async def delete_tenant(request: web.Request) -> web.Response:
    require_admin(request)
    tenant = (await _existing(request)).id
    removed = await request.app[SERVICES].webhooks.remove_tenant(tenant)
    log.info(
        "tenant_deleted",
        tenant=tenant,
        webhooks=len(removed.webhook_ids),
        cancelled=removed.cancelled,
        keys=removed.keys,
    )
    return web.Response(status=204)


async def create_key(request: web.Request) -> web.Response:
    require_admin(request)
    tenant = _tenant_id(request)
    services = request.app[SERVICES]
    body = await object_body(request)
    problems: list[Problem] = []
    description = Fields(body, "", problems, known=("description",), table_noun="an object").get("description", as_str)
    if description is not None and len(description) > MAX_DESCRIPTION:
        problems.append(Problem("description", f"must be at most {MAX_DESCRIPTION} characters"))
    if problems:
        raise ValidationError(problems)
    now = services.clock.now()
    text = TENANT_KEY_PREFIX + secrets.token_urlsafe(32)
    key = TenantKey(new_id("key", now), tenant, text[:11], description or None, now, None)
    await services.store.insert_tenant_key(key, hashlib.sha256(text.encode()).digest())
    log.info("tenant_key_created", tenant=tenant, key_id=key.id, prefix=key.prefix)
    return ok({**key_view(key), "key": text}, status=201, meta={"message": KEY_MESSAGE})


async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    tenant = (await _existing(request)).id
    return ok([key_view(k) for k in await request.app[SERVICES].store.tenant_keys(tenant)])


async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request)
    tenant = _tenant_id(request)
    key_id = request.match_info["key_id"]
    if not await request.app[SERVICES].store.delete_tenant_key(tenant, key_id):
        raise NotFound(f"tenant {tenant!r} has no key with id {key_id!r}")
    log.info("tenant_key_revoked", tenant=tenant, key_id=key_id)
    return web.Response(status=204)


async def create_portal_link(request: web.Request) -> web.Response:
    require_admin(request)
    services = request.app[SERVICES]
    problems: list[Problem] = []
    f = Fields(await object_body(request), "", problems, known=("ttl",), table_noun="an object")
    ttl = f.get("ttl", parse_duration)
    if ttl is not None and not 0 < ttl <= MAX_PORTAL_TTL:
        f.problem("ttl", "must be more than 0s and at most 30d")
    if problems:
        raise ValidationError(problems)
    tenant = (await _existing(request)).id
    if not services.config.ui.enabled:
        raise ApiError(409, "conflict", "the dashboard is off (ui.enabled = false): a portal link would open nothing")
    now = services.clock.now()
    expires_at = now + (ttl or DEFAULT_PORTAL_TTL)
    token = sign(await services.signing_key(), Claims(PORTAL, tenant, now, expires_at))
    base = services.config.ui.public_url or f"{request.scheme}://{request.host}"
    log.info("portal_link_created", tenant=tenant, expires_at=format_time(expires_at))
    return ok({"url": f"{base}/ui/?token={token}", "expires_at": format_time(expires_at)}, status=201)


def tenant_view(tenant: TenantSummary) -> dict[str, Any]:
    return {"id": tenant.id, "webhooks": tenant.webhooks, "keys": tenant.keys, "deliveries": tenant.deliveries}


def key_view(key: TenantKey) -> dict[str, Any]:
    """A key as listed: never the key itself (only its first characters, ``prefix``)."""
    return {
        "id": key.id,
        "tenant": key.tenant,
        "prefix": key.prefix,
        "description": key.description,
        "created_at": format_time(key.created_at),
        "last_used_at": format_time(key.last_used_at),
    }


def _tenant_id(request: web.Request) -> str:
    tenant = request.match_info["tenant"]
    if not TENANT_ID.fullmatch(tenant):
        raise ValidationError([Problem("tenant", TENANT_ID_RULE)])
    return tenant


async def _existing(request: web.Request) -> TenantSummary:
    """The tenant the path names; 404 when it has no webhooks and no keys."""
    tenant = _tenant_id(request)
    found = await request.app[SERVICES].store.tenant_summaries(tenant)
    if not found:
        raise NotFound(f"no tenant {tenant!r} (a tenant exists while it has webhooks or keys)")
    return found[0]
