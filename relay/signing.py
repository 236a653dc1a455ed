"""Signatures: pure functions of (secret, id, timestamp, body) for the schemes relay speaks.

- ``standard`` (Standard Webhooks v1): ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,BASE64`` with
  BASE64 = HMAC-SHA256 over ``{id}.{timestamp}.{body}`` keyed with the base64-decoded part of a ``whsec_`` secret;
  one space-separated ``v1,`` entry per secret during a rotation.
- ``standard-ed25519`` (Standard Webhooks v1a): the same three headers, ``webhook-signature: v1a,BASE64`` with
  BASE64 = the ed25519 signature of ``{id}.{timestamp}.{body}``. The secret is a ``whsk_`` signing key, written as
  Svix writes it (base64 of 64 bytes: the seed, then the public key) or as the seed alone (32 bytes); receivers
  verify with its ``whpk_`` public key (base64 of the 32-byte public key, ``public_key``).
- ``hmac-sha256`` (ConsentProof): ``X-Signature`` = lowercase hex HMAC-SHA256 of the raw body keyed with the secret's
  UTF-8 bytes, ``X-Timestamp`` = unix seconds, ``X-Webhook-ID`` = the webhook's id.

The two Standard Webhooks schemes share ``webhook-signature``, whose entries each name their version, so a rotation
may move a webhook from one to the other: during the overlap the new secret signs with the webhook's scheme and the
previous one with its own (``previous_scheme``), one space-separated entry each, and every receiver finds its own.

``secret_problem`` holds the one rule for which secrets may sign, shared by the config file, the API and
``relay receive``: a ``standard`` secret is ``whsec_`` + strict base64 (or base64 alone) of 24-64 bytes, decoded
as the ``standardwebhooks`` and ``svix`` verifiers decode it; a ``standard-ed25519`` secret is a ``whsk_`` key whose
public half, when given, is its seed's; an ``hmac-sha256`` secret is at least 16 characters.
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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from relay.models import SignatureScheme

SECRET_PREFIX = "whsec_"
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
STANDARD_KEY_BYTES = (24, 64)
ED25519_KEY_BYTES = 32  # a seed, and a public key
HMAC_SHA256_MIN_CHARS = 16
STANDARD_SECRET_RULE = '"whsec_" + base64 of 24-64 bytes (or the base64 alone)'
ED25519_SECRET_RULE = '"whsk_" + base64 of an ed25519 key: 64 bytes (the seed, then its public key) or the 32-byte seed'
ED25519_PUBLIC_RULE = '"whpk_" + base64 of a 32-byte ed25519 public key (or the webhook\'s "whsk_" key)'
# The schemes that sign ``webhook-signature``: a rotation may move a webhook between them.
STANDARD_SCHEMES = frozenset({SignatureScheme.STANDARD, SignatureScheme.STANDARD_ED25519})
_BASE64_DIGITS = re.compile(r"[A-Za-z0-9+/]*")


def new_secret(scheme: SignatureScheme = SignatureScheme.STANDARD) -> str:
    """A fresh secret for ``scheme``: for ``standard-ed25519`` a new key pair as ``whsk_`` + base64 of its seed and
    public key (64 bytes, as Svix writes it), else ``whsec_`` + base64 of 32 random bytes."""
    if scheme is SignatureScheme.STANDARD_ED25519:
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return SIGNING_KEY_PREFIX + base64.b64encode(seed + _public_bytes(key.public_key())).decode()
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def secret_problem(secret: str, scheme: SignatureScheme) -> str | None:
    """Why ``secret`` may not sign with ``scheme`` (a message that never quotes the secret), or None if it may."""
    if scheme is SignatureScheme.STANDARD:
        try:
            standard_key(secret)
        except ValueError as exc:
            ed25519 = secret.startswith((SIGNING_KEY_PREFIX, PUBLIC_KEY_PREFIX))
            return f'{exc} (a "whsk_" key signs with signature "standard-ed25519")' if ed25519 else str(exc)
    elif scheme is SignatureScheme.STANDARD_ED25519:
        try:
            ed25519_signing_key(secret)
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
    rule = f'must be {STANDARD_SECRET_RULE} for signature "standard"'
    key = _strict_base64(secret.removeprefix(SECRET_PREFIX), rule)
    low, high = STANDARD_KEY_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"{rule}: it decodes to {_bytes(len(key))}")
    return key


def ed25519_signing_key(secret: str) -> Ed25519PrivateKey:
    """The ed25519 key of a ``whsk_`` secret, strictly: ``whsk_`` + base64 (as ``standard_key`` reads it) of the
    seed and its public key (64 bytes) or of the seed alone (32), else ``ValueError`` says why."""
    rule = f'must be {ED25519_SECRET_RULE} for signature "standard-ed25519"'
    if secret.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f'{rule}: it is a "whpk_" public key, which only verifies')
    if not secret.startswith(SIGNING_KEY_PREFIX):
        raise ValueError(f'{rule}: it does not start with "whsk_"')
    raw = _strict_base64(secret.removeprefix(SIGNING_KEY_PREFIX), rule)
    if len(raw) not in (ED25519_KEY_BYTES, 2 * ED25519_KEY_BYTES):
        raise ValueError(f"{rule}: it decodes to {_bytes(len(raw))}")
    key = Ed25519PrivateKey.from_private_bytes(raw[:ED25519_KEY_BYTES])
    if raw[ED25519_KEY_BYTES:] not in (b"", _public_bytes(key.public_key())):
        raise ValueError(f"{rule}: its last 32 bytes are not the public key of its seed")
    return key


def ed25519_verifying_key(key: str) -> Ed25519PublicKey:
    """The public key that verifies ``v1a`` signatures, from a ``whpk_`` public key or a ``whsk_`` signing key;
    ``ValueError`` says why not."""
    if key.startswith(SIGNING_KEY_PREFIX):
        return _ed25519_key(key).public_key()
    rule = f'must be {ED25519_PUBLIC_RULE} for signature "standard-ed25519"'
    if not key.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f'{rule}: it does not start with "whpk_"')
    raw = _strict_base64(key.removeprefix(PUBLIC_KEY_PREFIX), rule)
    if len(raw) != ED25519_KEY_BYTES:
        raise ValueError(f"{rule}: it decodes to {_bytes(len(raw))}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key(secret: str) -> str:
    """The ``whpk_`` public key of a ``whsk_`` secret, for receivers to verify with (``ValueError`` if invalid)."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(_public_bytes(_ed25519_key(secret).public_key())).decode()


def previous_scheme(secret: str, scheme: SignatureScheme) -> SignatureScheme:
    """The scheme a previous secret (one still signing during a rotation's overlap) signs with, on a webhook that
    now signs with ``scheme``. A rotation may move a webhook between the two Standard Webhooks schemes, and their
    secrets tell them apart, as the spec's prefixes mean them to: a valid ``whsk_`` key signs ``v1a``, any other
    secret ``v1``. A webhook of another scheme keeps it through a rotation."""
    if scheme not in STANDARD_SCHEMES:
        return scheme
    try:
        _ed25519_key(secret)
    except ValueError:
        return SignatureScheme.STANDARD
    return SignatureScheme.STANDARD_ED25519


def _strict_base64(encoded: str, rule: str) -> bytes:
    """Standard-alphabet base64, padding optional but right when present; ``ValueError`` (``rule``: why) else."""
    digits = encoded.rstrip("=")
    padding = len(encoded) - len(digits)
    if not _BASE64_DIGITS.fullmatch(digits) or len(digits) % 4 == 1:  # no base64 leaves one digit over
        raise ValueError(f"{rule}: it is not base64")
    if padding and (len(encoded) % 4 or padding > 2):
        raise ValueError(f"{rule}: its base64 padding is wrong")
    return base64.b64decode(digits + "=" * (-len(digits) % 4))


def _bytes(count: int) -> str:
    return f"{count} byte{'' if count == 1 else 's'}"


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@functools.lru_cache(maxsize=256)  # parsed once per key, not once per attempt
def _ed25519_key(secret: str) -> Ed25519PrivateKey:
    return ed25519_signing_key(secret)


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
    return "v1," + base64.b64encode(standard_digest(_signing_key(secret), msg_id, timestamp, body)).decode()


def standard_digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    """HMAC-SHA256 over ``{id}.{timestamp}.{body}`` keyed with ``key``: what a ``v1,`` entry carries."""
    return hmac.new(key, signed_content(msg_id, timestamp, body), hashlib.sha256).digest()


def sign_ed25519(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1a,`` + base64 of the ed25519 signature of ``{id}.{timestamp}.{body}`` with the ``whsk_`` key ``secret``
    (``ValueError`` if it is not one)."""
    signature = _ed25519_key(secret).sign(signed_content(msg_id, timestamp, body))
    return "v1a," + base64.b64encode(signature).decode()


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """What both Standard Webhooks schemes sign: ``{id}.{timestamp}.{body}``."""
    return f"{msg_id}.{timestamp}.".encode() + body


def _sign_entry(scheme: SignatureScheme, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    sign = sign_ed25519 if scheme is SignatureScheme.STANDARD_ED25519 else sign_standard
    return sign(secret, msg_id, timestamp, body)


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
    """The headers that sign one attempt. The newest secret comes first in ``secrets`` and signs with ``scheme``;
    a previous one signs with ``previous_scheme``."""
    if scheme is SignatureScheme.NONE or not secrets:
        return {}
    if scheme in STANDARD_SCHEMES:
        current, *previous = secrets
        entries = [_sign_entry(scheme, current, event_id, timestamp, body)]
        entries += [_sign_entry(previous_scheme(s, scheme), s, event_id, timestamp, body) for s in previous]
        return {"webhook-id": event_id, "webhook-timestamp": str(timestamp), "webhook-signature": " ".join(entries)}
    return {
        "X-Signature": sign_hmac_sha256(secrets[0], body),
        "X-Timestamp": str(timestamp),
        "X-Webhook-ID": webhook_id,
    }
