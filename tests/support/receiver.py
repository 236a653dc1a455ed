"""A real aiohttp webhook endpoint on 127.0.0.1 for tests: records every request, answers as scripted.

    async with Receiver() as receiver:
        receiver.script("/hook", [500, Reply(503, headers={"Retry-After": "1"}), 200])
        ...  # point the relay at receiver.url("/hook")
        await receiver.wait_for(3)
        assert receiver.requests[0].headers["x-event-id"] == "evt_1"

Every request is recorded as soon as its body has been read, before any delay, hang or drop, so ``wait_for``
also sees requests that are never answered. Register the ``receiver`` fixture with
``pytest_plugins = ["tests.support.receiver"]`` in the root ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pytest_asyncio
from aiohttp import web

__all__ = ["DROP", "HANG", "Headers", "Received", "Receiver", "Reply", "receiver"]


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive request headers; keys are stored (and iterate) lowercase.

    A header sent several times is joined with ``", "`` (RFC 9110 §5.3).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        merged: dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        self._items = merged

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


async def serve_locally(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Start ``app`` on 127.0.0.1 at a free port, without an access log; the runner (``cleanup()`` stops it) and
    the port."""
    runner = web.AppRunner(app, **{"access_log": None, **runner_options})
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    received_at: float  # time.time() when the body had been read

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer.

    ``delay`` seconds are waited before answering, on top of ``Receiver.delay``. ``hang`` never answers (until
    the receiver stops); ``drop`` closes the connection without answering.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    hang: bool = False
    drop: bool = False


HANG = Reply(hang=True)
DROP = Reply(drop=True)


def _as_reply(entry: int | Reply) -> Reply:
    return entry if isinstance(entry, Reply) else Reply(entry)


class Receiver:
    """A webhook endpoint on 127.0.0.1 and a free port, started by ``start()`` or ``async with``.

    Unscripted paths answer ``default_status`` after ``delay`` seconds, or hang / drop when ``hang`` or
    ``drop`` is set. ``script(path, [...])`` answers a path's requests from a list, then its last entry.
    """

    def __init__(self, *, default_status: int = 200) -> None:
        self.default_status = default_status
        self.delay = 0.0
        self.hang = False
        self.drop = False
        self.requests: list[Received] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("receiver already started")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self._port = await serve_locally(app, shutdown_timeout=1.0)
        self._stopping.clear()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()  # wakes hanging and delayed handlers so shutdown does not wait for them
        await runner.cleanup()

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # what tests use

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("receiver not started")
        return self._port

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, replies: Sequence[int | Reply]) -> None:
        """Answer requests to ``path`` with ``replies`` in turn, then the last one forever."""
        if not replies:
            raise ValueError("a script needs at least one reply")
        self._scripts[path] = [_as_reply(entry) for entry in replies]
        self._served[path] = 0

    def requests_to(self, path: str) -> list[Received]:
        return [request for request in self.requests if request.path == path]

    def clear(self) -> None:
        self.requests.clear()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived; answer them all. AssertionError on timeout."""
        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)
        except TimeoutError:
            arrived = [f"{r.method} {r.path} ({len(r.body)} bytes)" for r in self.requests]
            raise AssertionError(
                f"expected {count} request(s) within {timeout}s, got {len(arrived)}: {arrived}"
            ) from None
        return list(self.requests)

    async def wait_until(self, predicate: Callable[[list[Received]], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate(requests)`` holds, re-checked as each request arrives."""
        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: predicate(self.requests))
        except TimeoutError:
            raise AssertionError(f"condition not met within {timeout}s ({len(self.requests)} requests)") from None

    # serving

    def _next_reply(self, path: str) -> Reply:
        replies = self._scripts.get(path)
        if replies is None:
            return Reply(self.default_status, hang=self.hang, drop=self.drop)
        served = self._served[path]
        self._served[path] = served + 1
        return replies[min(served, len(replies) - 1)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=Headers(request.headers.items()),
            body=body,
            received_at=time.time(),
        )
        reply = self._next_reply(request.path)
        async with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()

        delay = self.delay + reply.delay
        if reply.hang:
            await self._stopping.wait()
            return self._close(request)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        if reply.drop or self._stopping.is_set():
            return self._close(request)
        return web.Response(status=reply.status, headers=dict(reply.headers), body=reply.body)

    @staticmethod
    def _close(request: web.Request) -> web.StreamResponse:
        """Close the connection without an answer (aiohttp ignores the response it can no longer write)."""
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A started ``Receiver`` on 127.0.0.1, stopped after the test."""
    async with Receiver() as started:
        yield started
