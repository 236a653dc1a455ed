"""``rm relay.db relay.db-wal relay.db-shm`` under a running ``relay serve``: 503 from then on, never a 202."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support.process import RelayProcess, minimal_config, post_events, write_config

KEY = "store-lost-test-key"


def remove_store_files(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink()


async def test_deleting_the_store_files_stops_acknowledging(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    relay = await RelayProcess(write_config(tmp_path / "relay.toml", minimal_config(KEY, db))).start()
    try:
        status, _ = await post_events(relay.url, KEY, {"type": "t", "data": {}, "id": "before"})
        assert status == 202
        remove_store_files(db)
        for event_id in ("after", "again"):
            status, answer = await post_events(relay.url, KEY, {"type": "t", "data": {}, "id": event_id})
            assert status == 503 and answer["error"]["code"] == "unavailable"
        async with aiohttp.ClientSession() as http, http.get(f"{relay.health_url}/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert f"store file was removed or replaced: {db}" in body["reason"]
    finally:
        assert await relay.stop() == 0
    [lost] = relay.events("store_lost")
    assert lost["level"] == "error"

    again = await RelayProcess(write_config(tmp_path / "relay.toml", minimal_config(KEY, db))).start()
    try:  # a fresh store: nothing was acknowledged after the loss, so nothing acknowledged is missing from it
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{again.url}/v1/events/after", headers={"Authorization": f"Bearer {KEY}"}) as response,
        ):
            assert response.status == 404
    finally:
        assert await again.stop() == 0
