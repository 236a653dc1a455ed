"""The one seam for time: the scheduler and retry logic read the clock, tests advance a fake one."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        """Return when ``event`` is set or the clock reaches ``deadline`` (None: no deadline)."""
        ...


class SystemClock:
    """This machine's clock, moved by ``offset`` seconds: relays sharing a store set it to the store's clock minus
    their own, so leases, due times and rate windows written by any relay of a group are on one clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        timeout = None if deadline is None else max(0.0, deadline - self.now())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


class FakeClock:
    """A clock that only moves when told to; sleepers wake when ``advance`` passes their deadline."""

    def __init__(self, start: float | None = None) -> None:
        # A whole second, so that advancing by whole seconds lands exactly on computed due times.
        self._now = float(int(time.time())) if start is None else start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> float:
        return self._now

    def _deadline(self, deadline: float) -> asyncio.Future[None]:
        """A future resolved when the clock reaches ``deadline``, registered now (not when first awaited)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._counter), future))
        return future

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await self._deadline(self._now + seconds)

    async def wait(self, event: asyncio.Event, deadline: float | None) -> None:
        if deadline is None:
            await event.wait()
            return
        if deadline <= self._now or event.is_set():
            await asyncio.sleep(0)
            return
        sleeper = self._deadline(deadline)
        waiter: asyncio.Future[None] = asyncio.ensure_future(self._until_set(event))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    @staticmethod
    async def _until_set(event: asyncio.Event) -> None:
        await event.wait()

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
