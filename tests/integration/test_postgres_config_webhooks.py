"""Config-declared webhooks on a store several relays share (CONTRACT §8): a relay never removes a webhook its own
file lacks while another live relay still declares it, and relays that declare one differently log
``config_conflict``."""

from __future__ import annotations

import structlog

from relay.store.postgres import PostgresStore
from tests.integration.store_contract import T0

A = b'{"id":"a","url":"http://127.0.0.1:9/a"}'
A2 = b'{"id":"a","url":"http://127.0.0.1:9/other"}'
B = b'{"id":"b","url":"http://127.0.0.1:9/b"}'


async def _config_ids(store: PostgresStore) -> list[str]:
    return sorted(webhook_id for webhook_id in await store.webhook_created_at())


async def test_a_webhook_stays_while_another_relay_declares_it(store_pair: list[PostgresStore]) -> None:
    first, second = store_pair
    assert await first.sync_config_webhooks({"a": A, "b": B}, T0) == []
    assert await second.sync_config_webhooks({"a": A, "b": B}, T0) == []
    # The second relay's file drops "b": the first still declares it, so it stays.
    assert await second.sync_config_webhooks({"a": A}, T0 + 1) == []
    assert await _config_ids(first) == ["a", "b"]
    # The first relay reloads without "b" too: now nobody declares it, and it leaves the store.
    assert await first.sync_config_webhooks({"a": A}, T0 + 2) == ["b"]
    assert await _config_ids(first) == ["a"]


async def test_a_closed_relays_declarations_lapse_once_it_is_gone(
    store_pair: list[PostgresStore], postgres_url: str
) -> None:
    first, second = store_pair
    await first.sync_config_webhooks({"a": A, "b": B}, T0)
    await second.sync_config_webhooks({"a": A}, T0)
    await first.close()  # it leaves ``relays``: its declarations no longer count
    assert await second.sync_config_webhooks({"a": A}, T0 + 1) == ["b"]
    store_pair[0] = PostgresStore(postgres_url, pool_size=4)  # the fixture closes what it holds
    await store_pair[0].open()


async def test_relays_that_declare_one_webhook_differently_log_config_conflict(store_pair: list[PostgresStore]) -> None:
    first, second = store_pair
    await first.sync_config_webhooks({"a": A}, T0)
    with structlog.testing.capture_logs() as logs:
        await second.sync_config_webhooks({"a": A2}, T0 + 1)
    assert [(e["event"], e["webhook_id"]) for e in logs if e["event"] == "config_conflict"] == [
        ("config_conflict", "a")
    ]
    with structlog.testing.capture_logs() as logs:
        await second.sync_config_webhooks({"a": A}, T0 + 2)  # they agree again
    assert not [e for e in logs if e["event"] == "config_conflict"]
