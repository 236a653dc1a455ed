"""``/ui/``: the dashboard (CONTRACT §10). What exists so far is the tenant's door: a portal link
(``POST /v1/tenants/{tenant}/portal``) opens ``/ui/?token=…``, which becomes a session cookie and a redirect to
``/ui/`` (so the token leaves the address bar and never reaches a Referer), and ``/ui/`` shows the tenant's webhooks.

Sessions are signed tokens (``relay.ui.tokens``) in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over
https), ending at ``[ui] session_ttl`` or at the portal link's own end, whichever is first, and when the tenant is
deleted. Every page is sent with a Content-Security-Policy that forbids framing and any script, and is rendered by
Jinja2 with autoescaping: whatever a webhook holds is shown as text.
"""

from __future__ import annotations

from typing import Any

import jinja2
import structlog
from aiohttp import web

from relay.http import SERVICES, Services
from relay.models import Scope, format_time
from relay.ui.tokens import PORTAL, SESSION, Claims, sign, verify

log = structlog.get_logger()

COOKIE = "relay_session"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("relay.ui", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)


def add_ui_routes(app: web.Application) -> None:
    app.router.add_get("/ui", to_home)
    app.router.add_get("/ui/", home)


async def to_home(request: web.Request) -> web.Response:
    return _redirect("/ui/")


async def home(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if not services.config.ui.enabled:
        raise web.HTTPNotFound()
    now = services.clock.now()
    key = await services.store.signing_key()
    if (token := request.query.get("token")) is not None:
        link = verify(key, token, PORTAL, now)
        if link is None or not await _still_open(services, link):
            log.info("portal_link_refused", reason="invalid, expired, or its tenant was deleted")
            return _page("signed_out.html", 401, heading="This link does not open", message=_EXPIRED)
        expires_at = min(link.expires_at, now + services.config.ui.session_ttl)
        session = sign(key, Claims(SESSION, link.tenant, now, expires_at))
        response = _redirect("/ui/")
        secure = request.secure or (services.config.ui.public_url or "").startswith("https:")
        response.set_cookie(
            COOKIE,
            session,
            max_age=max(1, int(expires_at - now)),
            path="/ui/",
            httponly=True,
            samesite="Strict",
            secure=secure,
        )
        log.info("portal_link_opened", tenant=link.tenant)
        return response
    raw = request.cookies.get(COOKIE)
    session_claims = verify(key, raw, SESSION, now) if raw else None
    if session_claims is None or not await _still_open(services, session_claims):
        return _page("signed_out.html", 401, heading="Sign in", message=_SIGN_IN)
    tenant = session_claims.tenant
    webhooks = sorted(services.registry.visible(Scope(tenant)), key=lambda w: (w.created_at or 0.0, w.id))
    rows = [
        {
            "id": w.id,
            "url": w.url,
            "events": w.events,
            "is_active": w.is_active,
            "created_at": format_time(w.created_at),
        }
        for w in webhooks
    ]
    return _page("tenant.html", 200, tenant=tenant, webhooks=rows, expires_at=format_time(session_claims.expires_at))


_EXPIRED = (
    "The link has expired, is not a link this relay made, or its customer account was removed. Ask for a new one."
)
_SIGN_IN = "Open the portal link you were given to sign in."


async def _still_open(services: Services, claims: Claims) -> bool:
    """A tenant's link or session made before the tenant was last deleted is over."""
    if claims.tenant is None:
        return True
    removed_at = await services.store.tenant_removed_at(claims.tenant)
    return removed_at is None or claims.issued_at > removed_at


def _page(template: str, status: int, **context: Any) -> web.Response:
    context.setdefault("tenant", None)
    body = _templates.get_template(template).render(**context)
    return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})
