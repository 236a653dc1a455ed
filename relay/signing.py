"""Signatures: pure functions of (secret, id, timestamp, body) for both schemes relay speaks.

- ``standard`` (Standard Webhooks): ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,BASE64`` with
  BASE64 = HMAC-SHA256 over ``{id}.{timestamp}.{body}`` keyed with the base64-decoded part of a ``whsec_`` secret;
  one space-separated ``v1,`` entry per secret during a rotation.
- ``hmac-sha256`` (ConsentProof): ``X-Signature`` = lowercase hex HMAC-SHA256 of the raw body keyed with the secret's
  UTF-8 bytes, ``X-Timestamp`` = unix seconds, ``X-Webhook-ID`` = the webhook's id.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os

from relay.models import SignatureScheme

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


@functools.lru_cache(maxsize=256)  # decoded once per secret, not once per attempt
def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64-decoded part after ``whsec_``.

    A secret that is not valid base64 (a secret chosen by hand) is used as its UTF-8 bytes, so any secret signs.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()
    return key or secret.encode()


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_hmac_sha256(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_headers(
    scheme: SignatureScheme,
    secrets: list[str],
    *,
    event_id: str,
    webhook_id: str,
    timestamp: int,
    body: bytes,
) -> dict[str, str]:
    """The headers that sign one attempt. The newest secret comes first in ``secrets``."""
    if scheme is SignatureScheme.NONE or not secrets:
        return {}
    if scheme is SignatureScheme.STANDARD:
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign_standard(s, event_id, timestamp, body) for s in secrets),
        }
    return {
        "X-Signature": sign_hmac_sha256(secrets[0], body),
        "X-Timestamp": str(timestamp),
        "X-Webhook-ID": webhook_id,
    }
