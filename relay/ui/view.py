"""What the dashboard's handlers share: the request signed in (``View``), what a page or a post hands back
(``Rendered``, ``Done``), and rendering (Jinja2, autoescaped, with the headers every page is sent with)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web

from relay.http import Services
from relay.models import Scope
from relay.ui import format
from relay.ui.session import Session
from relay.ui.tokens import Claims

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("relay.ui", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)
templates.filters.update(utc=format.utc, iso=format.iso, ago=format.ago, rate=format.rate)


@dataclass(slots=True)
class View:
    """One request to the dashboard from a signed-in session."""

    request: web.Request
    services: Services
    session: Session
    now: float

    @property
    def scope(self) -> Scope:
        return self.session.scope

    async def context(self) -> dict[str, Any]:
        """What base.html shows on every page: who is signed in, the tenant picker, the sign-out form."""
        tenants: list[str] = []
        if self.session.admin:  # the picker: tenants with webhooks (in memory; counting their deliveries is not free)
            held = {w.tenant for w in self.services.registry.all() if w.tenant is not None}
            tenants = sorted(held | ({self.session.claims.view} if self.session.claims.view else set()))
        return {
            "now": self.now,
            "tenant": self.session.tenant,
            "admin": self.session.admin,
            "view": self.session.claims.view,
            "tenants": tenants,
            "csrf": self.session.csrf,
            "portal": self.session.claims.key == "",
            "expires_at": self.session.claims.expires_at,
        }


@dataclass(frozen=True, slots=True)
class Rendered:
    """The page a handler chose: its template, its own context, its status."""

    template: str
    context: dict[str, Any]
    status: int = 200


@dataclass(frozen=True, slots=True)
class Done:
    """What a post did: where to go next and what to say there (``message``, ``error``, maybe a ``secret`` to
    show once); ``session``: the session signed again (the tenant picker); ``signed_out``: the session ends."""

    location: str
    flash: dict[str, Any] = field(default_factory=dict)
    session: Claims | None = None
    signed_out: bool = False


PageHandler = Callable[[View], Awaitable[Rendered | web.StreamResponse]]
ActionHandler = Callable[[View, Mapping[str, str]], Awaitable[Done]]


# What a page outside a session (sign-in, a refusal) gives base.html.
_BARE: dict[str, Any] = {
    "tenant": None,
    "admin": False,
    "view": None,
    "tenants": [],
    "csrf": None,
    "portal": False,
    "expires_at": None,
    "flash": None,
    "active": None,
    "now": 0.0,
}


def render(template: str, status: int, context: Mapping[str, Any]) -> web.Response:
    full = {**_BARE, **context}
    body = templates.get_template(template).render(**full)
    return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})
