"""``relay migrate --config PATH``: the store's schema brought up to date and nothing else, for deploys that migrate
before they start relays; on PostgreSQL (``storage.url``) and on SQLite (``storage.path``)."""

from __future__ import annotations

from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from relay.store import postgres_schema, sqlite_schema
from relay.store.postgres import PostgresStore
from tests.integration.store_contract import T0, event
from tests.support.postgres import PostgresServer
from tests.support.process import run_relay, write_config

SERVER = '[server]\napi_keys = ["k"]\n'


async def test_migrate_brings_a_postgres_store_up_to_date_once(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer
) -> None:
    path = write_config(tmp_path / "relay.toml", SERVER + '[storage]\nurl = "env:RELAY_DATABASE_URL"\n')
    env = {"RELAY_DATABASE_URL": postgres_url}
    latest = len(postgres_schema.MIGRATIONS)
    code, out, err = await run_relay("migrate", "--config", str(path), env=env)
    assert (code, err) == (0, "")
    assert f"migrated from schema version 0 to {latest}" in out and postgres_server.password not in out
    assert out.startswith("postgresql://postgres:***@127.0.0.1:")
    code, out, _ = await run_relay("migrate", "--config", str(path), env=env)
    assert code == 0 and f"schema version {latest}, up to date" in out

    conn = await asyncpg.connect(postgres_url)
    try:  # the schema only: no relay registered, no event
        assert await conn.fetchval("SELECT count(*) FROM relays") == 0
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
    finally:
        await conn.close()
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        assert [r.created for r in await store.ingest([event("e1", "a")], T0)] == [True]
    finally:
        await store.close()


async def test_migrate_reports_an_unreachable_database_without_its_password(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.url().replace(f":{postgres_server.port}/", ":1/")
    path = write_config(tmp_path / "relay.toml", SERVER + f'[storage]\nurl = "{url}"\n')
    code, out, err = await run_relay("migrate", "--config", str(path))
    assert code == 1 and out == ""
    assert "cannot reach the database" in err and postgres_server.password not in err
    assert "Traceback" not in err


async def test_migrate_creates_and_migrates_a_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "state" / "relay.db"
    path = write_config(tmp_path / "relay.toml", SERVER + f'[storage]\npath = "{db}"\n')
    code, out, err = await run_relay("migrate", "--config", str(path))
    assert (code, err) == (0, "")
    assert out == f"{db}: migrated from schema version 0 to {len(sqlite_schema.MIGRATIONS)}\n"
    assert db.stat().st_mode & 0o777 == 0o600
    code, out, _ = await run_relay("migrate", "--config", str(path))
    assert (code, out) == (0, f"{db}: schema version {len(sqlite_schema.MIGRATIONS)}, up to date\n")


async def test_migrate_with_an_invalid_config_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path / "relay.toml", SERVER + '[storage]\npath = "x.db"\nurl = "postgresql://h/d"\n')
    code, out, err = await run_relay("migrate", "--config", str(path))
    assert (code, out) == (2, "")
    assert "storage: set either storage.path or storage.url, not both" in err
