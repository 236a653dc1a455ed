"""One relay owns a SQLite store: a second ``relay serve`` on the same file stops at once and says who holds it."""

from __future__ import annotations

from pathlib import Path

from tests.support.process import RelayProcess, minimal_config, post_events, write_config

KEY = "store-owner-test-key"


async def test_a_second_relay_on_the_same_store_exits_and_the_first_keeps_serving(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    first = await RelayProcess(write_config(tmp_path / "first.toml", minimal_config(KEY, db))).start()
    try:
        second = await RelayProcess(write_config(tmp_path / "second.toml", minimal_config(KEY, db))).spawn()
        assert await second.wait() == 1
        assert not second.started
        [named] = [line for line in second.lines if str(db) in str(line)]
        assert named["level"] == "error" and f"pid {first.pid}" in str(named), named
        status, _ = await post_events(first.url, KEY, {"type": "t", "data": {}, "id": "after"})
        assert status == 202
    finally:
        assert await first.stop() == 0
