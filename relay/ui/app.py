"""``/ui/``: the dashboard (CONTRACT §10), server-rendered with Jinja2, for operators (an admin key) and for each
tenant (a tenant key or a portal link).

Every page goes through ``page`` and every form post through ``action``: they check ``[ui] enabled``, the session
(``relay.ui.session``), and for a post its origin and CSRF token, before the handler runs; they turn the project's
errors into pages (an unknown id is a 404 page, never a traceback). Every page is sent with a Content-Security-
Policy that allows our own CSS and JS only and forbids framing. The handlers (``relay.ui.pages``) read through the
same store, Registry and services as the API (``relay.actions``, ``relay.webhooks``), inside the session's
``Scope``; a post answers with a redirect (Post/Redirect/Get), and what it has to say rides in the flash cookie,
read once.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog
from aiohttp import web

from relay.errors import Conflict, NotFound, StoreUnavailable, ValidationError
from relay.http import SERVICES, Caller, Services, caller_of_key
from relay.models import TENANT_ID, TENANT_ID_RULE
from relay.ui import pages
from relay.ui.session import (
    PATH,
    SIGN_IN_COOKIE,
    Session,
    admin_fingerprint,
    clear_flash,
    csrf_ok,
    csrf_token,
    current,
    end_session,
    new_session,
    read_flash,
    same_origin,
    set_flash,
    set_session,
    set_sign_in_nonce,
    sign_in_csrf_ok,
    sign_in_nonce,
    still_open,
)
from relay.ui.tokens import PORTAL, sign, verify
from relay.ui.view import HEADERS, ActionHandler, Done, PageHandler, Rendered, View, redirect, render

log = structlog.get_logger()

STATIC = {"relay.css": "text/css", "relay.js": "text/javascript"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_ui_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/ui", to_home),
        ("GET", "/ui/", home),
        ("GET", "/ui/sign-in", sign_in_form),
        ("POST", "/ui/sign-in", sign_in),
        ("POST", "/ui/sign-out", action(sign_out)),
        ("POST", "/ui/view", action(pick_tenant)),
        ("GET", "/ui/webhooks", page(pages.webhooks)),
        ("GET", "/ui/webhooks/{webhook_id}", page(pages.webhook)),
        ("POST", "/ui/webhooks/{webhook_id}/test", action(pages.send_test)),
        ("POST", "/ui/webhooks/{webhook_id}/pause", action(pages.pause)),
        ("POST", "/ui/webhooks/{webhook_id}/resume", action(pages.resume)),
        ("POST", "/ui/webhooks/{webhook_id}/rotate-secret", action(pages.rotate_secret)),
        ("POST", "/ui/webhooks/{webhook_id}/redrive", action(pages.redrive)),
        ("GET", "/ui/events", page(pages.events)),
        ("GET", "/ui/events/{event_id}", page(pages.event)),
        ("POST", "/ui/events/{event_id}/replay", action(pages.replay)),
        ("POST", "/ui/deliveries/{delivery_id}/cancel", action(pages.cancel)),
        ("GET", "/ui/static/{name}", static),
        ("*", "/ui/{tail:.*}", not_found),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, _as_html(handler))


def _as_html(handler: Handler) -> Handler:
    """What a page or post raises before its frame can render it (the session's reads, when the store is down)
    answers as a page too: the dashboard never answers with the API's JSON envelope or a traceback."""

    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            return _problem_page(request, exc, {})

    return serve


# -- the frames every page and post go through ---------------------------------------------------------------


def page(handler: PageHandler) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        services = _enabled(request)
        session = await current(request, services, await services.signing_key())
        if session is None:
            return redirect("/ui/sign-in")
        view = View(request, services, session, services.clock.now())
        try:
            chosen = await handler(view)
            if not isinstance(chosen, Rendered):
                return chosen
            flash = read_flash(request, services, session)
            context = {**await view.context(), **chosen.context, "flash": flash}
            response = render(chosen.template, chosen.status, context)
        except Exception as exc:
            response = await _error_page(view, exc)
        clear_flash(request, response)
        return response

    return serve


def action(handler: ActionHandler) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        services = _enabled(request)
        if not same_origin(request, services):
            log.warning("ui_post_refused", path=request.path, reason="another origin")
            return _refused()
        key = await services.signing_key()
        session = await current(request, services, key)
        if session is None:
            return redirect("/ui/sign-in")
        form = await request.post()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        if not csrf_ok(fields.get("csrf", ""), session.csrf):
            log.warning("ui_post_refused", path=request.path, reason="no CSRF token, or not this session's")
            return _refused()
        view = View(request, services, session, services.clock.now())
        try:
            done = await handler(view, fields)
        except (ValidationError, Conflict) as exc:
            done = Done(_back(request), {"error": _message(exc)})
        except Exception as exc:
            return await _error_page(view, exc)
        response = redirect(done.location)
        if done.signed_out:
            end_session(response)
            return response
        if done.session is not None:
            session = Session(done.session, key)
            set_session(response, request, services, sign(key, done.session), done.session.expires_at - view.now)
        if done.flash:
            set_flash(response, request, services, session, done.flash)
        return response

    return serve


async def _error_page(view: View, exc: Exception) -> web.Response:
    """``_problem_page`` inside the signed-in frame (the header with its picker and sign-out form)."""
    try:
        context = await view.context()
    except Exception:  # the store that failed the page fails its frame too: the bare page
        context = {}
    return _problem_page(view.request, exc, context)


def _problem_page(request: web.Request, exc: Exception, context: dict[str, Any]) -> web.Response:
    """The page for an error: 404 for what is not there (or not the viewer's), 400 for what cannot be done, 503
    while the store is unavailable, 500 (logged) for anything else; never a traceback."""
    if isinstance(exc, NotFound):
        status, heading, message = 404, "Not found", str(exc)
    elif isinstance(exc, ValidationError | Conflict):
        status, heading, message = 400, "Not possible", _message(exc)
    elif isinstance(exc, StoreUnavailable):
        log.error("store_unavailable", path=request.path, error=str(exc))
        status, heading, message = 503, "Unavailable", _UNAVAILABLE
    else:
        log.error("ui_request_failed", path=request.path, method=request.method, exc_info=exc)
        status, heading, message = 500, "Something went wrong", _FAILED
    return render("message.html", status, {**context, "heading": heading, "message": message})


def _message(exc: ValidationError | Conflict) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in exc.problems)
    return str(exc)


def _refused() -> web.Response:
    return render("message.html", 403, {"heading": "Refused", "message": _CROSS_SITE})


def _enabled(request: web.Request) -> Services:
    services = request.app[SERVICES]
    if not services.config.ui.enabled:
        raise web.HTTPNotFound()
    return services


def _back(request: web.Request) -> str:
    """Where a refused post goes back to: the page it was posted from (``/ui/webhooks/x/pause`` → ``…/x``)."""
    path = request.path.rsplit("/", 1)[0]
    return path if path.startswith("/ui/") else "/ui/"


_UNAVAILABLE = "The store cannot be read right now. Try again shortly."
_FAILED = "An internal error occurred; it has been logged."
_CROSS_SITE = (
    "This form was not sent from a page of this dashboard, or its page is too old. Go back, reload it, and try again."
)
_EXPIRED = (
    "The link has expired, is not a link this relay made, or its customer account was removed. Ask for a new one."
)


# -- the door: portal links, sign-in, sign-out, the tenant picker ------------------------------------------------


async def to_home(request: web.Request) -> web.Response:
    return redirect("/ui/")


async def home(request: web.Request) -> web.StreamResponse:
    """``/ui/``: the overview; with ``?token=``, a portal link becoming a session."""
    services = _enabled(request)
    if (token := request.query.get("token")) is not None:
        return await _open_portal_link(request, services, token)
    return await _overview(request)


_overview = page(pages.overview)


async def _open_portal_link(request: web.Request, services: Services, token: str) -> web.StreamResponse:
    now = services.clock.now()
    key = await services.signing_key()
    link = verify(key, token, PORTAL, now)
    if link is None or link.tenant is None or not await still_open(services, key, link):
        log.info("portal_link_refused", reason="invalid, expired, or its tenant was deleted")
        return render("message.html", 401, {"heading": "This link does not open", "message": _EXPIRED})
    expires_at = min(link.expires_at, now + services.config.ui.session_ttl)
    claims = new_session(Caller(link.tenant), now, expires_at, made_with="")
    response = redirect("/ui/")  # the token leaves the address bar, and never reaches a Referer
    set_session(response, request, services, sign(key, claims), expires_at - now)
    log.info("portal_link_opened", tenant=link.tenant)
    return response


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    services = _enabled(request)
    key = await services.signing_key()
    if await current(request, services, key) is not None:
        return redirect("/ui/")
    return _sign_in_page(request, services, key, 200, None)


def _sign_in_page(request: web.Request, services: Services, key: bytes, status: int, error: str | None) -> web.Response:
    nonce, fresh = sign_in_nonce(request)
    response = render("sign_in.html", status, {"csrf": csrf_token(key, "sign-in", nonce), "error": error})
    if fresh:
        set_sign_in_nonce(response, request, services, nonce)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    """The sign-in form: an admin key (every tenant) or a tenant key (its tenant) becomes a session."""
    services = _enabled(request)
    if not same_origin(request, services):
        return _refused()
    key = await services.signing_key()
    form = await request.post()
    sent_csrf, presented = form.get("csrf"), form.get("key")
    if not isinstance(sent_csrf, str) or not sign_in_csrf_ok(request, key, sent_csrf):
        return _refused()
    raw = (presented if isinstance(presented, str) else "").strip().encode("utf-8", "surrogateescape")
    caller = await caller_of_key(services, raw) if raw else None
    if caller is None:
        log.info("ui_sign_in_refused")
        return _sign_in_page(request, services, key, 401, "That is not a key this relay knows.")
    now = services.clock.now()
    ttl = services.config.ui.session_ttl
    made_with = caller.key_id if caller.key_id is not None else admin_fingerprint(key, raw)
    claims = new_session(caller, now, now + ttl, made_with=made_with)
    response = redirect("/ui/")
    set_session(response, request, services, sign(key, claims), ttl)
    response.del_cookie(SIGN_IN_COOKIE, path=PATH)
    log.info("ui_signed_in", tenant=caller.tenant, admin=caller.admin)
    return response


async def sign_out(view: View, form: Mapping[str, str]) -> Done:
    """The session ends on the server (every relay of the group refuses its cookie from now on), then in the
    browser (the ``action`` frame deletes the cookie)."""
    claims = view.session.claims
    await view.services.store.end_session(claims.nonce, claims.expires_at, view.now)
    log.info("ui_signed_out", tenant=view.session.tenant)
    return Done("/ui/sign-in", signed_out=True)


async def pick_tenant(view: View, form: Mapping[str, str]) -> Done:
    """An admin narrows every page to one tenant ("" for every tenant): the session is signed again with it."""
    if not view.session.admin:
        raise NotFound("only an admin picks a tenant")
    chosen = form.get("tenant", "")
    if chosen and not TENANT_ID.fullmatch(chosen):
        return Done("/ui/", {"error": f"tenant: {TENANT_ID_RULE}"})
    claims = replace(view.session.claims, view=chosen or None)
    return Done("/ui/", {"message": f"Showing {chosen}." if chosen else "Showing every tenant."}, session=claims)


async def static(request: web.Request) -> web.StreamResponse:
    _enabled(request)
    name = request.match_info["name"]
    if name not in STATIC:
        return await not_found(request)
    body = importlib.resources.files("relay.ui").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name], headers={**HEADERS, "Cache-Control": "max-age=300"})


async def not_found(request: web.Request) -> web.StreamResponse:
    _enabled(request)
    return render("message.html", 404, {"heading": "Not found", "message": "There is no such page."})
