"""A stub of relay's ingest API on 127.0.0.1 (TCP or a unix socket), for the client's tests.

``POST /v1/events`` takes one event or a batch, as relay does: it stores each event by id (the first post of an
id wins, later ones are no-ops), answers ``202`` with ``{"id", "deliveries"}`` per event, and records every
request. ``script([...])`` meets the next requests with other steps first:

    stub.script([Step.refuse(503), Step.accept(drop=True), Step.accept()])

- ``accept(delay=, drop=)``: store the events, then wait ``delay`` seconds and answer (or close unanswered);
- ``refuse(status, code=, message=, details=, headers=)``: answer relay's error envelope, store nothing;
- ``raw(status, body)``: answer ``body`` as it is (a proxy's page, not relay's envelope).

Any other request answers ``{"success": true, "data": {"method", "path", "query"}}``, for ``call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from tests.support.receiver import Headers

__all__ = ["Posted", "Step", "StubRelay"]


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # "accept" | "refuse" | "raw"
    status: int = 202
    delay: float = 0.0
    drop: bool = False
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def accept(cls, *, delay: float = 0.0, drop: bool = False) -> Step:
        return cls("accept", delay=delay, drop=drop)

    @classmethod
    def refuse(
        cls,
        status: int,
        code: str = "unavailable",
        message: str = "scripted",
        details: Sequence[Mapping[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> Step:
        error = {"code": code, "message": message, "details": list(details)}
        body = json.dumps({"success": False, "error": error}).encode()
        return cls("refuse", status=status, body=body, headers=headers or {})

    @classmethod
    def raw(cls, status: int, body: bytes) -> Step:
        return cls("raw", status=status, body=body)


@dataclass(frozen=True, slots=True)
class Posted:
    """One request to ``/v1/events`` as the stub saw it."""

    headers: Headers
    body: Any  # the parsed JSON

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.body if isinstance(self.body, list) else [self.body]

    @property
    def ids(self) -> list[str]:
        return [event["id"] for event in self.events]


class StubRelay:
    def __init__(self, *, port: int = 0, unix_path: Path | None = None) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.posted: list[Posted] = []
        self.others: list[tuple[str, str]] = []  # (method, path?query) of requests to other routes
        self._port = port
        self._unix_path = unix_path
        self._script: list[Step] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    def script(self, steps: Sequence[Step]) -> None:
        self._script = list(steps)

    @property
    def url(self) -> str:
        if self._unix_path is not None:
            return f"unix:{self._unix_path}"
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> StubRelay:
        app = web.Application()
        app.router.add_post("/v1/events", self._events)
        app.router.add_route("*", "/{tail:.*}", self._other)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site: web.BaseSite
        if self._unix_path is not None:
            site = web.UnixSite(self._runner, str(self._unix_path))
        else:
            site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        if self._unix_path is None:
            self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _events(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        posted = Posted(Headers(request.headers.items()), body)
        self.posted.append(posted)
        step = self._script.pop(0) if self._script else Step.accept()
        if step.kind == "refuse":
            return web.Response(
                status=step.status, body=step.body, headers=step.headers, content_type="application/json"
            )
        if step.kind == "raw":
            return web.Response(status=step.status, body=step.body)
        for event in posted.events:
            self.stored.setdefault(event["id"], event)
        data = [{"id": event_id, "deliveries": 1} for event_id in posted.ids]
        if step.delay:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step.delay):
                    await self._stopping.wait()
        if step.drop or self._stopping.is_set():
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never written: the connection is closed
        answer = {"success": True, "data": data if isinstance(body, list) else data[0]}
        return web.json_response(answer, status=202)

    async def _other(self, request: web.Request) -> web.StreamResponse:
        self.others.append((request.method, request.path_qs))
        if request.method == "DELETE":
            return web.Response(status=204)
        data = {"method": request.method, "path": request.path, "query": dict(request.query)}
        if request.can_read_body:
            data["body"] = json.loads(await request.read())
        return web.json_response({"success": True, "data": data})
