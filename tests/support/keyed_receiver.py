"""A webhook endpoint on 127.0.0.1 that keeps a per-ordering-key ledger (CONTRACT §11), for ordering tests.

Each event's ``data`` is ``{"key": K, "n": N}``, N counting a key's events in ingest order from 0. ``decide(key, n,
seen)`` (``seen``: how many requests of that event arrived, this one included) scripts the answer. The receiver
records each event's first success per key and these violations:

- two requests of one key in flight at once (a request the relay gave up on, its connection closed, no longer
  counts);
- with ``strict``, a request of event N of a key before each earlier event of that key first succeeded (fifo with
  every event delivered: a duplicate of an event that already succeeded is allowed, at least once).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.receiver import Reply, serve_locally

Decide = Callable[[str, int, int], Reply]


def always_ok(key: str, n: int, seen: int) -> Reply:
    return Reply(200)


@dataclass
class KeyedReceiver:
    decide: Decide = always_ok
    strict: bool = True
    arrivals: list[tuple[str, int]] = field(default_factory=list)
    successes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # first successes, in order
    violations: list[str] = field(default_factory=list)
    _seen: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    _in_flight: dict[str, web.Request] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> KeyedReceiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner, self.port = await serve_locally(app, shutdown_timeout=0.5)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/keyed") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self, key: str) -> list[int]:
        return self.successes.get(key, [])

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, tick: Callable[[], None] | None = None
    ) -> None:
        """Until ``predicate()`` holds; ``tick`` (e.g. moving a fake clock) runs every 20 ms meanwhile."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if tick is not None:
                    tick()
                self._changed.clear()
                try:
                    async with asyncio.timeout(0.02):
                        await self._changed.wait()
                except TimeoutError:
                    pass

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key, n = body["data"]["key"], body["data"]["n"]
        self.arrivals.append((key, n))
        self._seen[(key, n)] += 1
        reply = self.decide(key, n, self._seen[(key, n)])
        if (other := self._in_flight.get(key)) is not None:
            await asyncio.sleep(0.005)  # a connection the relay just closed: let its loss be seen first
            if _open(other):
                self.violations.append(f"{key}: {n} arrived while another request of the key was in flight")
        if self.strict:
            done = set(self.successes.get(key, []))
            if missing := [m for m in range(n) if m not in done]:
                self.violations.append(f"{key}: {n} arrived before {missing[:3]} first succeeded")
        self._in_flight[key] = request
        try:
            if reply.delay:
                # The relay may give up (its timeout): the connection closes, and the request stops counting.
                loop = asyncio.get_running_loop()
                until = loop.time() + reply.delay
                while loop.time() < until and _open(request):  # noqa: ASYNC110 (no event tells a closed peer)
                    await asyncio.sleep(0.005)
            if not _open(request):
                return web.Response(status=500)
            if 200 <= reply.status < 300 and n not in self.successes[key]:
                self.successes[key].append(n)
            return web.Response(status=reply.status)
        finally:
            if self._in_flight.get(key) is request:
                del self._in_flight[key]
            self._changed.set()


def _open(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()
