"""Verify relay's signatures in a receiver written in Python (CONTRACT §6, §12).

    from relay.verify import VerificationError, verify_standard

    try:
        verify_standard(secret, request.headers, raw_body)  # before parsing the body
    except VerificationError as exc:
        return 401, exc.reason

``headers`` is the request's headers, names in any case: a dict, aiohttp's or Werkzeug's (Flask) ``request.headers``,
anything with ``items()``; ``body`` the raw bytes as received.
Each function returns None when the request is authentic and raises ``VerificationError`` otherwise, including
for a secret that cannot be relay's (``reason`` says which).

- ``verify_standard``: Standard Webhooks, as the reference ``standardwebhooks`` library verifies: ``webhook-id``,
  ``webhook-timestamp`` (within ``tolerance`` seconds of now, either way) and ``webhook-signature``, whose
  space-separated ``v1,`` entries (two during a secret rotation) are each compared in constant time with the
  HMAC-SHA256 of ``{id}.{timestamp}.{body}``.
- ``verify_standard_ed25519``: Standard Webhooks v1a: the same headers, and ``v1a,`` entries, each an ed25519
  signature of ``{id}.{timestamp}.{body}`` checked with the webhook's ``whpk_`` public key.
- ``verify_hmac_sha256``: ConsentProof's scheme: ``X-Signature`` is the lowercase hex HMAC-SHA256 of the body,
  compared in constant time, and ``X-Timestamp`` must be within ``tolerance``. That timestamp is not signed, so
  it stops only replays of old requests that keep their original header.

The keys and signatures come from ``relay.signing``, the code relay signs with.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import time
from collections.abc import Iterable
from typing import Protocol

from cryptography.exceptions import InvalidSignature

from relay.errors import RelayError
from relay.models import SignatureScheme
from relay.signing import (
    ed25519_verifying_key,
    secret_problem,
    sign_hmac_sha256,
    signed_content,
    standard_digest,
    standard_key,
)

DEFAULT_TOLERANCE = 300  # seconds either way, as the Standard Webhooks libraries allow

__all__ = [
    "DEFAULT_TOLERANCE",
    "Headers",
    "VerificationError",
    "verify_hmac_sha256",
    "verify_standard",
    "verify_standard_ed25519",
]


class Headers(Protocol):
    """What ``headers`` must offer: its (name, value) pairs (a ``Mapping[str, str]`` does)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class VerificationError(RelayError):
    """The request is not one relay signed with this secret; ``reason`` says why (it never quotes a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_standard(
    secret: str,
    headers: Headers,
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Check a Standard Webhooks request; ``secret`` is the webhook's ``whsec_…`` secret."""
    try:
        key = standard_key(secret)
    except ValueError as exc:
        raise VerificationError(f"the secret {exc}") from None
    msg_id, timestamp, given = _standard_request(headers, "v1", tolerance, now)
    # As the reference library: the timestamp signed is the header's value as whole seconds.
    expected = standard_digest(key, msg_id, math.floor(timestamp), _bytes(body))
    if not any(hmac.compare_digest(expected, signature) for signature in given):
        raise VerificationError("no v1 signature matches")


def verify_standard_ed25519(
    key: str,
    headers: Headers,
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Check a Standard Webhooks v1a (ed25519) request; ``key`` is the webhook's ``whpk_…`` public key (or its
    ``whsk_…`` signing key)."""
    try:
        public = ed25519_verifying_key(key)
    except ValueError as exc:
        raise VerificationError(f"the key {exc}") from None
    msg_id, timestamp, given = _standard_request(headers, "v1a", tolerance, now)
    message = signed_content(msg_id, math.floor(timestamp), _bytes(body))
    for signature in given:
        try:
            public.verify(signature, message)
        except InvalidSignature:
            continue
        return
    raise VerificationError("no v1a signature matches")


def _standard_request(
    headers: Headers, version: str, tolerance: float, now: float | None
) -> tuple[str, float, list[bytes]]:
    """A Standard Webhooks request's id, its timestamp (within ``tolerance``), and its ``version`` signatures."""
    names = _lowercase(headers)
    msg_id = names.get("webhook-id")
    raw_timestamp = names.get("webhook-timestamp")
    signatures = names.get("webhook-signature")
    if not (msg_id and raw_timestamp and signatures):
        raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    timestamp = _timestamp("webhook-timestamp", raw_timestamp, tolerance, now)
    given: list[bytes] = []
    for entry in signatures.split():
        entry_version, comma, encoded = entry.partition(",")
        if entry_version != version or not comma:
            continue
        try:
            given.append(base64.b64decode(encoded))
        except (binascii.Error, ValueError):
            continue
    return msg_id, timestamp, given


def verify_hmac_sha256(
    secret: str,
    headers: Headers,
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Check an ``hmac-sha256`` (ConsentProof) request; ``secret`` is the webhook's secret string."""
    if (problem := secret_problem(secret, SignatureScheme.HMAC_SHA256)) is not None:
        raise VerificationError(f"the secret {problem}")
    names = _lowercase(headers)
    given = (names.get("x-signature") or "").strip()
    raw_timestamp = names.get("x-timestamp")
    if not (given and raw_timestamp):
        raise VerificationError("missing X-Signature or X-Timestamp")
    _timestamp("X-Timestamp", raw_timestamp, tolerance, now)
    expected = sign_hmac_sha256(secret, _bytes(body))
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise VerificationError("X-Signature does not match")


def _lowercase(headers: Headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def _timestamp(header: str, raw: str, tolerance: float, now: float | None) -> float:
    """The header's unix seconds, when they are within ``tolerance`` of ``now``."""
    try:
        timestamp = float(raw)
    except ValueError:
        timestamp = math.nan
    if not math.isfinite(timestamp):
        raise VerificationError(f"{header} is not unix seconds")
    skew = (time.time() if now is None else now) - timestamp
    if skew > tolerance:
        raise VerificationError(f"{header} is {skew:.0f}s old (tolerance {tolerance:g}s)")
    if -skew > tolerance:
        raise VerificationError(f"{header} is {-skew:.0f}s in the future (tolerance {tolerance:g}s)")
    return timestamp
