"""Signatures: pure functions of (secret, id, timestamp, body) for both schemes relay speaks.

- ``standard`` (Standard Webhooks): ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,BASE64`` with
  BASE64 = HMAC-SHA256 over ``{id}.{timestamp}.{body}`` keyed with the base64-decoded part of a ``whsec_`` secret;
  one space-separated ``v1,`` entry per secret during a rotation.
- ``hmac-sha256`` (ConsentProof): ``X-Signature`` = lowercase hex HMAC-SHA256 of the raw body keyed with the secret's
  UTF-8 bytes, ``X-Timestamp`` = unix seconds, ``X-Webhook-ID`` = the webhook's id.

``secret_problem`` holds the one rule for which secrets may sign, shared by the config file, the API and
``relay receive``: a ``standard`` secret is ``whsec_`` + strict base64 (or base64 alone) of 24-64 bytes, decoded
as the ``standardwebhooks`` and ``svix`` verifiers decode it; an ``hmac-sha256`` secret is at least 16 characters.
A shorter key signs nothing worth checking (``whsec_AA==`` is one zero byte, which HMAC pads like an empty key),
and a secret that is not base64 is read differently by those verifiers, so every delivery would fail there.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re

from relay.models import SignatureScheme

SECRET_PREFIX = "whsec_"
STANDARD_KEY_BYTES = (24, 64)
HMAC_SHA256_MIN_CHARS = 16
STANDARD_SECRET_RULE = '"whsec_" + base64 of 24-64 bytes (or the base64 alone)'
_BASE64_DIGITS = re.compile(r"[A-Za-z0-9+/]*")


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def secret_problem(secret: str, scheme: SignatureScheme) -> str | None:
    """Why ``secret`` may not sign with ``scheme`` (a message that never quotes the secret), or None if it may."""
    if scheme is SignatureScheme.STANDARD:
        try:
            standard_key(secret)
        except ValueError as exc:
            return str(exc)
    elif scheme is SignatureScheme.HMAC_SHA256 and len(secret) < HMAC_SHA256_MIN_CHARS:
        return f'must be at least {HMAC_SHA256_MIN_CHARS} characters for signature "hmac-sha256" (it has {len(secret)})'
    return None


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, strictly: the part after ``whsec_`` must be base64 (standard
    alphabet, padding optional but right when present) of 24-64 bytes, else ``ValueError`` says why.

    For every secret it accepts, the key is the one ``standardwebhooks.Webhook`` and ``svix.Webhook`` decode.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    digits = encoded.rstrip("=")
    padding = len(encoded) - len(digits)
    rule = f'must be {STANDARD_SECRET_RULE} for signature "standard"'
    if not _BASE64_DIGITS.fullmatch(digits) or len(digits) % 4 == 1:  # no base64 leaves one digit over
        raise ValueError(f"{rule}: it is not base64")
    if padding and (len(encoded) % 4 or padding > 2):
        raise ValueError(f"{rule}: its base64 padding is wrong")
    key = base64.b64decode(digits + "=" * (-len(digits) % 4))
    low, high = STANDARD_KEY_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"{rule}: it decodes to {len(key)} byte{'' if len(key) == 1 else 's'}")
    return key


@functools.lru_cache(maxsize=256)  # decoded once per secret, not once per attempt
def _signing_key(secret: str) -> bytes:
    """The key relay signs a ``standard`` attempt with: ``standard_key`` for every secret the rules accept.

    Webhooks created through the API before the rules keep signing as they did (and are reported at startup):
    a secret that does not decode strictly is read leniently, as base64 when it decodes, else as its UTF-8 bytes.
    """
    try:
        return standard_key(secret)
    except ValueError:
        pass
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()
    return key or secret.encode()


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    return sign_standard_with_key(_signing_key(secret), msg_id, timestamp, body)


def sign_standard_with_key(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` + base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}`` keyed with ``key``."""
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, message, hashlib.sha256).digest()
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
