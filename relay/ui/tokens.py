"""Signed, expiring tokens: portal links (``POST /v1/tenants/{tenant}/portal``) and dashboard sessions.

A token is ``base64url(JSON claims) "." base64url(HMAC-SHA256(key, claims))`` with the store's signing key
(``Tenants.signing_key``: one key for every relay of a group, so a link made on one opens on another). The claims
say what the token is for (``use``), whose it is (``tenant``, None for an admin session), when it was made and
when it ends. A token of a tenant stops working when the tenant is deleted: it was made before ``removed_at``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Any

import orjson

PORTAL = "portal"
SESSION = "session"


@dataclass(frozen=True, slots=True)
class Claims:
    use: str  # PORTAL or SESSION
    tenant: str | None  # None: an admin's session
    issued_at: float
    expires_at: float
    nonce: str = ""  # a session's own value (its CSRF token derives from it)
    key: str = ""  # what a session was signed in with: a tenant key's id, or an admin key's fingerprint
    view: str | None = None  # an admin session: the tenant its pages are narrowed to (None: every tenant)


def sign(key: bytes, claims: Claims) -> str:
    body = orjson.dumps(
        {
            "use": claims.use,
            "tenant": claims.tenant,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "n": claims.nonce,
            "k": claims.key,
            "v": claims.view,
        }
    )
    return f"{_b64(body)}.{_b64(hmac.digest(key, body, hashlib.sha256))}"


def verify(key: bytes, token: str, use: str, now: float) -> Claims | None:
    """The claims of ``token`` if it is one of ours, for ``use``, and not expired at ``now``; None otherwise."""
    body_text, _, mac_text = token.partition(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(mac, hmac.digest(key, body, hashlib.sha256)):
        return None
    try:
        raw: Any = orjson.loads(body)
        claims = Claims(
            str(raw["use"]),
            _optional_str(raw["tenant"]),
            float(raw["iat"]),
            float(raw["exp"]),
            str(raw["n"]),
            str(raw.get("k", "")),
            _optional_str(raw.get("v")),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if claims.use != use or not math.isfinite(claims.expires_at) or now >= claims.expires_at:
        return None
    return claims


def _optional_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError("not a string")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
