"""Both of relay's clients behind one async face, so a test runs the same steps with each: the sync ``Client``
runs in a thread, so the relay (or stub) under test keeps serving on the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from relay.client import Accepted, AsyncClient, Client, RetryPolicy

KINDS = ["sync", "async"]  # pytest.fixture(params=KINDS): a test runs once with each client


FAST = RetryPolicy(total=5.0, initial=0.01, maximum=0.05)  # backoff in milliseconds


class Either:
    """``Client`` or ``AsyncClient`` (``kind``), with ``FAST`` retries unless ``retry=`` says otherwise."""

    def __init__(self, kind: str, url: str, key: str, **options: Any) -> None:
        options.setdefault("retry", FAST)
        self.sync = Client(url, key, **options) if kind == "sync" else None
        self.aio = AsyncClient(url, key, **options) if kind == "async" else None

    async def send(self, type: str, data: Any, **fields: Any) -> Accepted:
        if self.sync is not None:
            return await asyncio.to_thread(self.sync.send, type, data, **fields)
        assert self.aio is not None
        return await self.aio.send(type, data, **fields)

    async def send_batch(self, events: Iterable[Mapping[str, Any]]) -> list[Accepted]:
        if self.sync is not None:
            return await asyncio.to_thread(self.sync.send_batch, events)
        assert self.aio is not None
        return await self.aio.send_batch(events)

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        if self.sync is not None:
            return await asyncio.to_thread(self.sync.call, method, path, body, **kwargs)
        assert self.aio is not None
        return await self.aio.call(method, path, body, **kwargs)

    async def close(self) -> None:
        if self.aio is not None:
            await self.aio.close()
