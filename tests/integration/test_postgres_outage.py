"""The database goes away under a running relay and comes back (CONTRACT §8): ingest answers 503, never a false 202;
``/readyz`` answers 503 with the reason; both recover by themselves, and what was acknowledged is delivered."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_postgres_group import group_config
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver
from tests.support.relay_harness import running_relay, webhook


async def test_ingest_and_readyz_answer_503_while_the_database_is_down_and_recover(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer, receiver: Receiver
) -> None:
    config = group_config(tmp_path, postgres_url, [webhook(receiver.url())])
    async with running_relay(tmp_path, [], config=config) as relay:
        status, body = await relay.post({"id": "before", "type": "consent.created", "data": {}})
        assert status == 202, body
        await receiver.wait_for(1, timeout=5)

        await postgres_server.stop_async()
        status, body = await relay.post({"id": "during", "type": "consent.created", "data": {}})
        assert status == 503, body
        assert body["error"]["code"] == "unavailable"
        async with relay.http.get(f"{relay.url}/readyz") as response:
            ready = await response.json()
        assert response.status == 503
        assert ready["status"] == "unavailable" and "database" in ready["reason"], ready

        await postgres_server.start_async()

        async def ready_again() -> bool:
            async with relay.http.get(f"{relay.url}/readyz") as response:
                return response.status == 200

        await relay.wait_until(ready_again, timeout=10)
        status, body = await relay.post({"id": "after", "type": "consent.created", "data": {}})
        assert status == 202, body
        requests = await receiver.wait_for(2, timeout=10)
    assert [r.headers["x-event-id"] for r in requests] == ["before", "after"]  # "during" was never acknowledged
