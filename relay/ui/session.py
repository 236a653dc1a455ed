"""Who is looking at the dashboard, and whether a form post may change anything.

- A **session** is a signed token (``relay.ui.tokens``) in the ``relay_session`` cookie: ``HttpOnly``,
  ``SameSite=Strict``, ``Secure`` over https, path ``/ui/``. It is made by the sign-in form (an admin key or a
  tenant key) or by a portal link, and ends at ``[ui] session_ttl`` (a portal link's session also at the link's
  end), at sign-out, when the tenant is deleted, and when the key it was made with is revoked (a tenant key) or
  taken out of ``server.api_keys`` (an admin key): each page checks, as the API checks a key on each request.
  Sign-out ends the session on the server, not only in the browser: the store keeps its nonce until the cookie
  would have expired (``Sessions.end_session``), so a copy of the cookie is refused by every relay of the group.
- **CSRF**: every form that changes something carries a token derived from the session's own nonce (an HMAC
  with the store's signing key), and a post is refused (403) without the right one, or when the browser says it
  comes from another origin (``Origin``, else ``Sec-Fetch-Site``). The sign-in form, which has no session yet,
  is held to a nonce of its own in a short-lived cookie (double submit).
- **Flash**: what a post has to say to the page it redirects to (Post/Redirect/Get), a rotated secret
  included, rides in a cookie encrypted with AES-GCM under a key derived from the signing key, bound to the
  session, read once and cleared: a reload shows it no more, and any relay of a group can read it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.http import Caller, Services
from relay.models import EVERYTHING, Scope
from relay.ui.tokens import SESSION, Claims, verify

COOKIE = "relay_session"
SIGN_IN_COOKIE = "relay_sign_in"
FLASH_COOKIE = "relay_flash"
PATH = "/ui/"
SIGN_IN_TTL = 3600.0  # how long a sign-in form stays good
FLASH_TTL = 120.0  # a flash not read within this is dropped


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in viewer: whose pages (``tenant`` None: an admin's) and the claims of their cookie."""

    claims: Claims
    key: bytes  # the store's signing key

    @property
    def tenant(self) -> str | None:
        return self.claims.tenant

    @property
    def admin(self) -> bool:
        return self.claims.tenant is None

    @property
    def scope(self) -> Scope:
        """What every read and action of the page is held to: a tenant's session its tenant; an admin's the tenant
        picked (``view``), or everything."""
        if self.claims.tenant is not None:
            return Scope(self.claims.tenant)
        return EVERYTHING if self.claims.view is None else Scope(self.claims.view)

    @property
    def csrf(self) -> str:
        return csrf_token(self.key, "session", self.claims.nonce)


def csrf_token(key: bytes, purpose: str, nonce: str) -> str:
    return hmac.digest(key, f"csrf:{purpose}:{nonce}".encode(), hashlib.sha256).hex()


def admin_fingerprint(key: bytes, admin_key: bytes) -> str:
    """Which admin key made a session, without the key: it is no longer one when taken out of the config."""
    return hmac.digest(key, b"admin-key:" + admin_key, hashlib.sha256).hex()[:32]


def new_session(caller: Caller, now: float, expires_at: float, *, made_with: str) -> Claims:
    """The claims of a new session of ``caller``, with a nonce of its own (its CSRF token and its end derive from
    it); ``made_with``: the tenant key's id, the admin key's fingerprint, or "" for a portal link."""
    return Claims(SESSION, caller.tenant, now, expires_at, secrets.token_urlsafe(16), made_with)


async def current(request: web.Request, services: Services, key: bytes) -> Session | None:
    """The request's session, if it has one that is still good."""
    raw = request.cookies.get(COOKIE)
    now = services.clock.now()
    claims = verify(key, raw, SESSION, now) if raw else None
    if claims is None or not await still_open(services, key, claims):
        return None
    return Session(claims, key)


async def still_open(services: Services, key: bytes, claims: Claims) -> bool:
    """A session (or portal link) of a deleted tenant, or made with a key that is no longer one, is over; so is a
    session signed out (a portal link has no nonce of its own to end: it is not looked up)."""
    if claims.use == SESSION and await services.store.session_ended(claims.nonce):
        return False
    if claims.tenant is None:
        return claims.key != "" and any(
            hmac.compare_digest(claims.key, admin_fingerprint(key, k)) for k in services.api_keys
        )
    removed_at = await services.store.tenant_removed_at(claims.tenant)
    if removed_at is not None and claims.issued_at <= removed_at:
        return False
    if claims.key.startswith("key_"):  # made with a tenant key: while that key is not revoked
        return any(k.id == claims.key for k in await services.store.tenant_keys(claims.tenant))
    return True


def set_session(response: web.StreamResponse, request: web.Request, services: Services, token: str, ttl: float) -> None:
    _set(response, request, services, COOKIE, token, ttl)


def end_session(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=PATH)


def is_secure(request: web.Request, services: Services) -> bool:
    return request.secure or (services.config.ui.public_url or "").startswith("https:")


def _set(
    response: web.StreamResponse, request: web.Request, services: Services, name: str, value: str, ttl: float
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max(1, int(ttl)),
        path=PATH,
        httponly=True,
        samesite="Strict",
        secure=is_secure(request, services),
    )


# -- same origin and CSRF --------------------------------------------------------------------------------------


def same_origin(request: web.Request, services: Services) -> bool:
    """Whether a post comes from a page of ours, as far as the browser tells: ``Origin`` must be this relay's
    (the address asked, or ``[ui] public_url``); without one, ``Sec-Fetch-Site`` must not say another site. An
    opaque origin (``null``: a sandboxed frame, a ``data:`` page) is refused; our pages' ``Referrer-Policy:
    same-origin`` keeps Chromium sending the real one (under ``no-referrer`` it sends ``null`` for a form post)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin in _origins(request, services)
    fetch_site = request.headers.get("Sec-Fetch-Site")
    return fetch_site is None or fetch_site in ("same-origin", "none")


def _origins(request: web.Request, services: Services) -> set[str]:
    origins = {f"{request.scheme}://{request.host}"}
    if (public := services.config.ui.public_url) is not None:
        parts = urlsplit(public)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


def sign_in_nonce(request: web.Request) -> tuple[str, bool]:
    """The sign-in form's nonce: the cookie's, or a new one (``True``: to be set with ``set_sign_in_nonce``)."""
    nonce = request.cookies.get(SIGN_IN_COOKIE)
    if nonce and len(nonce) <= 64:
        return nonce, False
    return secrets.token_urlsafe(16), True


def set_sign_in_nonce(response: web.StreamResponse, request: web.Request, services: Services, nonce: str) -> None:
    _set(response, request, services, SIGN_IN_COOKIE, nonce, SIGN_IN_TTL)


def csrf_ok(sent: str, expected: str) -> bool:
    """Whether a form's token is the one expected, in constant time. As bytes: ``compare_digest`` refuses a str
    with non-ASCII characters, which a forged form may send."""
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())


def sign_in_csrf_ok(request: web.Request, key: bytes, sent: str) -> bool:
    nonce = request.cookies.get(SIGN_IN_COOKIE)
    return bool(nonce) and csrf_ok(sent, csrf_token(key, "sign-in", nonce or ""))


# -- flash -------------------------------------------------------------------------------------------------------


def set_flash(
    response: web.StreamResponse, request: web.Request, services: Services, session: Session, flash: dict[str, Any]
) -> None:
    """Say ``flash`` (a message, and maybe a secret to show once) on the next page this session opens."""
    now = services.clock.now()
    body = orjson.dumps({**flash, "n": session.claims.nonce, "exp": now + FLASH_TTL})
    nonce = secrets.token_bytes(12)
    sealed = nonce + AESGCM(_flash_key(session.key)).encrypt(nonce, body, FLASH_COOKIE.encode())
    _set(response, request, services, FLASH_COOKIE, base64.urlsafe_b64encode(sealed).decode(), FLASH_TTL)


def read_flash(request: web.Request, services: Services, session: Session) -> Any:
    """The flash this session was left; None when there is none (or it is not this session's, or too old). The
    page showing it clears the cookie (``clear_flash``): it is read once."""
    raw = request.cookies.get(FLASH_COOKIE)
    if raw is None:
        return None
    try:
        sealed = base64.urlsafe_b64decode(raw)
        body = AESGCM(_flash_key(session.key)).decrypt(sealed[:12], sealed[12:], FLASH_COOKIE.encode())
        flash = orjson.loads(body)
    except (binascii.Error, ValueError, InvalidTag, orjson.JSONDecodeError):
        return None
    if not isinstance(flash, dict) or flash.get("n") != session.claims.nonce:
        return None
    if not isinstance(flash.get("exp"), float) or services.clock.now() >= flash["exp"]:
        return None
    return flash


def clear_flash(request: web.Request, response: web.StreamResponse) -> None:
    if FLASH_COOKIE in request.cookies:
        response.del_cookie(FLASH_COOKIE, path=PATH)


def _flash_key(key: bytes) -> bytes:
    return hmac.digest(key, b"relay flash", hashlib.sha256)
