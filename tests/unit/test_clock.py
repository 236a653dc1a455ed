"""The fake clock: sleepers wake exactly when advanced past their absolute deadline."""

from __future__ import annotations

import asyncio

from relay.clock import FakeClock


async def test_sleep_wakes_only_when_the_clock_reaches_the_deadline() -> None:
    clock = FakeClock(start=1000.0)
    sleeper = asyncio.ensure_future(clock.sleep(60))
    await asyncio.sleep(0)
    clock.advance(59)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, 1)


async def test_wait_registers_its_deadline_before_the_clock_moves() -> None:
    # The deadline is absolute: advancing before the waiter first runs must not push it out.
    clock = FakeClock(start=1000.0)
    waiter = asyncio.ensure_future(clock.wait(asyncio.Event(), 1001.0))
    await asyncio.sleep(0)
    clock.advance(1)
    await asyncio.wait_for(waiter, 1)


async def test_wait_returns_when_the_event_is_set_or_the_deadline_has_passed() -> None:
    clock = FakeClock(start=1000.0)
    event = asyncio.Event()
    waiter = asyncio.ensure_future(clock.wait(event, 5000.0))
    await asyncio.sleep(0)
    event.set()
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(clock.wait(asyncio.Event(), 999.0), 1)


def test_the_default_start_is_a_whole_second() -> None:
    assert FakeClock().now() == int(FakeClock().now())
