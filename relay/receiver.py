"""The development receiver behind ``relay receive``: listens locally, verifies, prints, answers.

Every POST, on any path, is checked against the secret (when one is given) with the scheme named or, when none
is, the one its headers and the secret show (``webhook-signature``: standard, or standard-ed25519 when the secret
is a ``whpk_`` or ``whsk_`` key; ``X-Signature``: hmac-sha256), printed as a readable block, and answered ``401``
when the signature does not verify, else ``--fail-with`` or ``200``. The secret and the signature values are never
printed.

Signatures are checked by ``relay.verify``, as a Python receiver would: a standard one exactly as the reference
``standardwebhooks`` library does (the key is the strict base64 decoding of the secret, which is that library's
for every secret the rules accept); a standard-ed25519 one as a ``v1a,`` entry that verifies with the ``whpk_``
public key (or the ``whsk_`` key's); for every scheme the timestamp must be within 5 minutes. A secret the rules
refuse for every scheme it may be checked with is refused at start (``ValueError`` naming ``--secret``); one that
fits only another scheme fails each request of that one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from aiohttp import web

from relay.clock import Clock, SystemClock
from relay.models import SignatureScheme, format_time
from relay.signing import PUBLIC_KEY_PREFIX, SIGNING_KEY_PREFIX, ed25519_verifying_key, secret_problem
from relay.verify import VerificationError, verify_hmac_sha256, verify_standard, verify_standard_ed25519

_NO_BODY_STATUSES = frozenset({204, 205, 304})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one request's signature; ``reason`` is printable (it holds no secret)."""

    valid: bool
    scheme: SignatureScheme | None
    reason: str

    def describe(self) -> str:
        scheme = f" ({self.scheme})" if self.scheme else ""
        return f"{'valid' if self.valid else 'INVALID'}{scheme}: {self.reason}"


def detect_scheme(headers: Mapping[str, str], secret: str = "") -> SignatureScheme | None:
    """The scheme a request's headers show, or None; of the two that sign ``webhook-signature``, the one the
    ``secret`` is for. ``headers`` must be case-insensitive (aiohttp's are)."""
    if "webhook-signature" in headers:
        return SignatureScheme.STANDARD_ED25519 if is_ed25519_key(secret) else SignatureScheme.STANDARD
    if "x-signature" in headers:
        return SignatureScheme.HMAC_SHA256
    return None


def is_ed25519_key(secret: str) -> bool:
    """Whether ``secret`` is written as a Standard Webhooks ed25519 key (``whpk_`` public, ``whsk_`` signing)."""
    return secret.startswith((PUBLIC_KEY_PREFIX, SIGNING_KEY_PREFIX))


def key_problem(secret: str, scheme: SignatureScheme) -> str | None:
    """Why ``secret`` cannot check ``scheme``'s signatures, or None: ``relay.signing.secret_problem``, except that
    the ``whpk_`` public key checks standard-ed25519 signatures as well as the ``whsk_`` key does."""
    if scheme is not SignatureScheme.STANDARD_ED25519:
        return secret_problem(secret, scheme)
    try:
        ed25519_verifying_key(secret)
    except ValueError as exc:
        return str(exc)
    return None


def verify_signature(
    secret: str,
    scheme: SignatureScheme | None,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
) -> Verdict:
    """Check one request against ``secret``; ``scheme=None`` detects the scheme from ``headers``.

    ``headers`` must look names up case-insensitively, as aiohttp's do.
    """
    scheme = scheme or detect_scheme(headers, secret)
    if scheme is None:
        return Verdict(False, None, "no webhook-signature or X-Signature header")
    if (problem := key_problem(secret, scheme)) is not None:
        return Verdict(False, scheme, f"--secret {problem}")
    verify = _VERIFIERS.get(scheme)
    if verify is None:
        return Verdict(False, scheme, f"signature {scheme!s} is not checked here")
    try:
        verify(secret, headers, body, now=now)
    except VerificationError as exc:
        return Verdict(False, scheme, exc.reason)
    return Verdict(True, scheme, "signature matches")


_VERIFIERS = {
    SignatureScheme.STANDARD: verify_standard,
    SignatureScheme.STANDARD_ED25519: verify_standard_ed25519,
    SignatureScheme.HMAC_SHA256: verify_hmac_sha256,
}


def format_body(body: bytes) -> str:
    """Pretty-printed JSON, or the raw text when the body is not JSON."""
    if not body:
        return "(empty body)"
    text = body.decode("utf-8", "replace")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


@dataclass(frozen=True, slots=True)
class _Settings:
    secret: str | None
    scheme: SignatureScheme | None
    fail_with: int | None
    out: TextIO
    clock: Clock


_SETTINGS = web.AppKey("receiver_settings", _Settings)
_SHOWN_HEADERS = ("X-Event-ID", "X-Event-Type", "X-Delivery-Attempt", "User-Agent")


def _parse_scheme(scheme: SignatureScheme | str | None) -> SignatureScheme | None:
    if scheme is None:
        return None
    parsed = SignatureScheme(scheme)
    if parsed is SignatureScheme.NONE:
        raise ValueError(
            'scheme must be "standard", "standard-ed25519" or "hmac-sha256" (omit it to detect from the headers)'
        )
    return parsed


def check_secret(secret: str, scheme: SignatureScheme | None) -> None:
    """Refuse (``ValueError`` naming ``--secret``) a secret that breaks the secret rules of ``scheme``, or, when
    the scheme is detected per request (None), of every scheme it may be checked with: standard-ed25519 for a
    ``whpk_`` or ``whsk_`` key, else standard and hmac-sha256."""
    if scheme is not None:
        schemes = [scheme]
    elif is_ed25519_key(secret):
        schemes = [SignatureScheme.STANDARD_ED25519]
    else:
        schemes = [SignatureScheme.STANDARD, SignatureScheme.HMAC_SHA256]
    problems = [problem for s in schemes if (problem := key_problem(secret, s)) is not None]
    if len(problems) == len(schemes):
        raise ValueError("; ".join(f"--secret {problem}" for problem in problems))


def build_receiver_app(
    secret: str | None,
    scheme: SignatureScheme | str | None,
    fail_with: int | None,
    out: TextIO,
    *,
    clock: Clock | None = None,
) -> web.Application:
    """An app that prints and answers every POST; ``secret=None`` accepts everything unverified."""
    if fail_with is not None and not 200 <= fail_with <= 599:
        raise ValueError(f"fail_with must be an HTTP status 200-599, got {fail_with}")
    settings = _Settings(secret or None, _parse_scheme(scheme), fail_with, out, clock or SystemClock())
    if settings.secret is not None:
        check_secret(settings.secret, settings.scheme)
    app = web.Application()
    app[_SETTINGS] = settings
    app.router.add_post("/{tail:.*}", _handle)
    return app


async def _handle(request: web.Request) -> web.Response:
    settings = request.app[_SETTINGS]
    body = await request.read()
    now = settings.clock.now()
    verdict = (
        None
        if settings.secret is None
        else verify_signature(settings.secret, settings.scheme, request.headers, body, now)
    )

    if verdict is not None and not verdict.valid:
        response = web.json_response({"error": "invalid signature"}, status=401)
    elif settings.fail_with is not None:
        status = settings.fail_with
        response = (
            web.Response(status=status)
            if status in _NO_BODY_STATUSES
            else web.json_response({"error": f"failing on purpose (--fail-with {status})"}, status=status)
        )
    else:
        response = web.json_response({"received": True})

    _print_request(settings.out, request, body, verdict, now, response.status)
    return response


def _print_request(
    out: TextIO, request: web.Request, body: bytes, verdict: Verdict | None, now: float, status: int
) -> None:
    lines = [f"--- {format_time(now)}  {request.method} {request.path_qs}"]
    for name in _SHOWN_HEADERS:
        lines.append(f"  {name + ':':<20}{request.headers.get(name, '-')}")
    signature = "not checked (no --secret)" if verdict is None else verdict.describe()
    lines.append(f"  {'Signature:':<20}{signature}")
    lines.append(f"  {'Answer:':<20}{status}")
    lines.append(format_body(body))
    lines.append("")
    out.write("\n".join(lines) + "\n")
    out.flush()


async def run_receiver(
    host: str,
    port: int,
    secret: str | None,
    scheme: SignatureScheme | str | None,
    fail_with: int | None,
    out: TextIO,
) -> None:
    """Serve the development receiver on ``host:port`` until cancelled (port 0 picks a free one)."""
    app = build_receiver_app(secret, scheme, fail_with, out)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"
        checking = "verifying signatures" if secret else "NOT verifying signatures (no --secret)"
        out.write(f"relay receive: listening on http://{bound_host}:{bound_port}, {checking}\n\n")
        out.flush()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
