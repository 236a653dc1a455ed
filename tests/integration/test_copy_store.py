"""``relay.store.copy.copy_store`` called directly: rows go across a few per statement, a delivery that was being
attempted falls due at the ``now`` given, and a copy that fails or is refused part-way leaves the target empty."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from relay.errors import StoreError
from relay.models import Secret
from relay.store.copy import (
    _ATTEMPT_HOURS,
    _ATTEMPTS,
    _DELIVERIES,
    _ENDED_SESSIONS,
    _EVENTS,
    _REFRESH_TOKENS,
    _SETTINGS,
    _TENANT_KEYS,
    _TENANT_REMOVALS,
    _WEBHOOKS,
    CopyRefused,
    copy_store,
)
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from tests.integration.store_contract import T0
from tests.support.outboxes import CONFIG_SPEC, EVENT_IDS, contents, fill_sqlite, requeued


async def _rows(url: str, table: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
        return count
    finally:
        await conn.close()


async def test_a_copy_in_small_batches_keeps_everything_and_requeues_at_now(tmp_path: Path, postgres_url: str) -> None:
    db = tmp_path / "relay.db"
    await fill_sqlite(db)
    source = SqliteStore(db)
    await source.open()
    try:
        before = await contents(source)
    finally:
        await source.close()

    done = await copy_store(db, Secret(postgres_url), T0 + 500, batch=3)
    assert (done.events, done.deliveries, done.requeued, done.attempts, done.webhooks, done.refresh_tokens) == (
        7,
        14,
        1,
        4,
        1,
        1,
    )
    assert done.schema == (7, 7) and done.seconds > 0

    store = PostgresStore(postgres_url)
    await store.open()
    try:
        after = await contents(store)
        for event_id in EVENT_IDS:
            expected = [
                requeued(d, T0 + 500) if (event_id, d.webhook_id) == ("e5", "cfg") else d
                for d in before["events"][event_id][1]
            ]
            assert after["events"][event_id] == (before["events"][event_id][0], expected)
        assert after["list"] == before["list"] and after["webhooks"] == before["webhooks"]
        assert after["activity"] == before["activity"] and before["activity"].webhooks["cfg"].attempts == 4
        assert before["signed_out"] and after["signed_out"]  # its cookie, signed with the copied key, stays refused
        claims, _ = await store.claim("cfg", 10, T0 + 500, T0 + 560)
        assert [c.event.id for c in claims] == ["e2", "e5", "e6", "e7"]  # e3 is parked until T0 + 3600
    finally:
        await store.close()


async def test_a_copy_that_fails_part_way_leaves_the_target_empty(tmp_path: Path, postgres_url: str) -> None:
    db = tmp_path / "relay.db"
    await fill_sqlite(db)
    with sqlite3.connect(db) as conn:  # the last event's time cannot be read by PostgreSQL: its batch fails
        conn.execute("UPDATE events SET created_at = 'not a time' WHERE id = 'e7'")
    with pytest.raises(StoreError, match="not a time"):
        await copy_store(db, Secret(postgres_url), T0, batch=2)
    assert await _rows(postgres_url, "events") == 0  # the first batches went back with the rest
    assert await _rows(postgres_url, "schema_version") == 1  # migrated: that part stays


async def test_an_api_webhook_whose_id_the_target_declares_is_refused(tmp_path: Path, postgres_url: str) -> None:
    db = tmp_path / "relay.db"
    await fill_sqlite(db)
    target = PostgresStore(postgres_url)
    await target.open()
    try:  # a relay already started on the target, declaring a webhook "api-hook" in its file
        await target.sync_config_webhooks({"api-hook": CONFIG_SPEC}, T0)
    finally:
        await target.close()
    with pytest.raises(CopyRefused, match="declares webhooks with the ids of API webhooks copied: api-hook"):
        await copy_store(db, Secret(postgres_url), T0)
    assert await _rows(postgres_url, "events") == 0


async def test_an_older_sqlite_store_is_migrated_first(tmp_path: Path, postgres_url: str) -> None:
    db = tmp_path / "relay.db"
    await fill_sqlite(db)
    # As a relay of schema version 2 left it (3 added indexes and a column; 4, tenants, columns and tables; 5,
    # ordering keys, columns and an index; 6, the hourly attempt counts, a table; 7, ended sessions, a table).
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "DROP INDEX events_type; DROP INDEX events_created; DROP INDEX deliveries_status;"
            " DROP INDEX deliveries_created; ALTER TABLE events DROP COLUMN created_us;"
            " DROP INDEX events_tenant; DROP INDEX webhooks_tenant; ALTER TABLE events DROP COLUMN tenant;"
            " ALTER TABLE webhooks DROP COLUMN tenant; DROP TABLE tenant_keys; DROP TABLE tenant_removals;"
            " DROP TABLE settings; DROP INDEX deliveries_key; ALTER TABLE events DROP COLUMN ordering_key;"
            " ALTER TABLE deliveries DROP COLUMN ordering_key; ALTER TABLE deliveries DROP COLUMN ordering;"
            " DROP TABLE attempt_hours; DROP TABLE ended_sessions; UPDATE schema_version SET version = 2;"
        )
    done = await copy_store(db, Secret(postgres_url), T0)
    assert done.schema == (2, 7) and done.events == 7


async def test_every_sqlite_column_has_a_place_in_the_copy(tmp_path: Path) -> None:
    """A migration that adds a table, or a column to a copied table, must teach ``relay.store.copy`` about it: this
    lists what the copy reads (``created_us`` is computed from ``created_at``; ``webhooks.source`` is 'api' for every
    row)."""
    db = tmp_path / "relay.db"
    store = SqliteStore(db)
    await store.open()
    await store.close()
    tables = {
        "events": (_EVENTS, {"created_us"}),
        "deliveries": (_DELIVERIES, set()),
        "attempts": (_ATTEMPTS, set()),
        "attempt_hours": (_ATTEMPT_HOURS, set()),
        "webhooks": (_WEBHOOKS, {"source"}),
        "oauth_tokens": (_REFRESH_TOKENS, set()),
        "tenant_keys": (_TENANT_KEYS, set()),
        "tenant_removals": (_TENANT_REMOVALS, set()),
        "settings": (_SETTINGS, set()),
        "ended_sessions": (_ENDED_SESSIONS, set()),
    }
    with sqlite3.connect(db) as conn:
        every = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert every - {"schema_version"} == tables.keys()  # the target's own version is migrate's
        for name, (table, derived) in tables.items():
            columns = {r[1] for r in conn.execute(f"SELECT * FROM pragma_table_xinfo('{name}')")}
            read = set(table.select.partition(" FROM ")[0].removeprefix("SELECT ").split(", "))
            assert columns - derived == read, name
