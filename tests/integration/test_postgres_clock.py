"""One clock for a group (CLUSTERING point 3): relays sharing a PostgreSQL store read the database's clock, so
leases, due times and rate windows written by any relay of the group compare on one clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from structlog.testing import capture_logs

from relay.clock import SystemClock
from relay.daemon import Daemon
from relay.store.postgres import PostgresStore
from tests.integration.test_postgres_group import group_config


async def test_the_store_measures_its_clock_against_this_machine(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, pool_size=2)
    await store.open()
    try:
        offset = store.clock_offset()
        assert offset is not None and abs(offset) < 0.5  # one machine: the same clock, give or take a round trip
    finally:
        await store.close()


async def test_a_relay_moves_its_clock_to_the_stores(tmp_path: Path, postgres_url: str) -> None:
    daemon = Daemon(group_config(tmp_path, postgres_url, []))
    daemon.store.clock_offset = lambda: 100.0  # type: ignore[method-assign]  # a database 100 s ahead
    with capture_logs() as logs:
        await daemon.start()
    try:
        assert isinstance(daemon.clock, SystemClock)
        assert abs(daemon.clock.now() - time.time() - 100.0) < 0.01
        assert [e["seconds"] for e in logs if e["event"] == "clock_offset"] == [100.0]
    finally:
        await daemon.shutdown()


async def test_an_offset_clock_waits_on_its_own_time() -> None:
    clock = SystemClock()
    clock.offset = 3600.0
    assert abs(clock.now() - time.time() - 3600.0) < 0.01
    began = time.monotonic()
    await clock.wait(asyncio.Event(), clock.now() + 0.05)  # a deadline on the moved clock, 50 ms away
    assert 0.04 <= time.monotonic() - began < 1.0
