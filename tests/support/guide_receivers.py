"""Receivers written from the seed guides' own instructions, for the profile tests.

- ``NodeVerifier``: ConsentProof's ``verifyWebhookSignature`` (verbatim in verify-webhook.mjs) in one long-lived
  ``node`` process, asked once per request.
- ``ConsentProofEndpoint``: the guide's Express handler, in aiohttp: verify ``X-Signature`` over the raw body with
  the guide's Node.js function, answer 401 ``{"error": "Invalid signature"}`` when it fails, otherwise parse the
  event, handle it once per event id ("Use the event ID to deduplicate in case of retries") and answer
  ``{"received": true}``.
- ``expressconsent_signature_ok``: ExpressConsent's "HMAC signature verification", as relay's ``hmac-sha256``
  scheme defines it (the guide names no header or encoding).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pytest
from aiohttp import web

from tests.support.node_verify import NODE_MISSING, SCRIPT
from tests.support.receiver import Headers, serve_locally


def expressconsent_signature_ok(body: bytes, signature: str, secret: str) -> bool:
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class NodeVerifier:
    """``async with NodeVerifier() as verify: await verify(body, signature, secret)``; skips without ``node``."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> NodeVerifier:
        node = shutil.which("node")
        if node is None:
            pytest.skip(NODE_MISSING)
        self._proc = await asyncio.create_subprocess_exec(
            node, str(SCRIPT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def __call__(self, body: bytes, signature: str, secret: str) -> bool:
        """True when the guide's function returns true (the raw body passed as a UTF-8 string, as Express does)."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None, "not started"
        line = json.dumps({"payload": body.decode("utf-8"), "signature": signature, "secret": secret})
        async with self._lock:
            proc.stdin.write(line.encode() + b"\n")
            await proc.stdin.drain()
            verdict = await asyncio.wait_for(proc.stdout.readline(), 10)
        return verdict.strip() == b"true"


@dataclass(frozen=True, slots=True)
class Seen:
    """One request to the endpoint: what arrived and how it was answered."""

    headers: Headers
    body: bytes
    verified: bool
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class ConsentProofEndpoint:
    """The ConsentProof guide's receiver on 127.0.0.1 (see the module docstring).

    ``lose_answer_for``: event ids whose first delivery is handled but answered 500, as when the handler commits
    and then the answer never reaches the sender; the retry must then be recognised as a duplicate.
    """

    def __init__(self, verify: NodeVerifier, secret: str, *, lose_answer_for: Iterable[str] = ()) -> None:
        self.verify = verify
        self.secret = secret
        self.lose_answer_for = set(lose_answer_for)
        self.seen: list[Seen] = []
        self.handled: dict[str, dict[str, Any]] = {}  # event id -> the event, handled once
        self.duplicates: list[str] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0

    async def __aenter__(self) -> ConsentProofEndpoint:
        app = web.Application()
        app.router.add_post("/webhooks/consentproof", self._handle)
        self._runner, self._port = await serve_locally(app, shutdown_timeout=1.0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/webhooks/consentproof"

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.seen) >= count)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # express.raw({type: 'application/json'})
        signature = request.headers.get("X-Signature", "")
        verified = await self.verify(body, signature, self.secret)
        if not verified:
            return await self._answer(
                request, body, verified, web.json_response({"error": "Invalid signature"}, status=401)
            )
        event = json.loads(body)
        if event["id"] in self.handled:
            self.duplicates.append(event["id"])
        else:
            self.handled[event["id"]] = event  # handleConsentCreated(event.data), … once per event id
            if event["id"] in self.lose_answer_for:
                return await self._answer(request, body, verified, web.Response(status=500))
        return await self._answer(request, body, verified, web.json_response({"received": True}))

    async def _answer(self, request: web.Request, body: bytes, verified: bool, response: web.Response) -> web.Response:
        async with self._arrived:
            self.seen.append(Seen(Headers(request.headers.items()), body, verified, response.status))
            self._arrived.notify_all()
        return response
