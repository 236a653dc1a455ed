"""tests/support/postgres.py: the private PostgreSQL server that the PostgreSQL store's tests run against."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.support import postgres
from tests.support.postgres import PostgresError, PostgresServer, database_name

REPO = Path(__file__).resolve().parents[2]


async def test_connects_with_asyncpg_and_runs_a_query(postgres_url: str, postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT 1 + 1") == 2
        assert await conn.fetchval("SELECT current_database()") == database_name(postgres_url)
        assert await conn.fetchval("SELECT current_user") == postgres_server.user
        # The harness leaves durability as the product will find it.
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
    finally:
        await conn.close()
    assert postgres_url.startswith(
        f"postgresql://postgres:{postgres_server.password}@127.0.0.1:{postgres_server.port}/"
    )


async def test_each_postgres_url_is_a_database_of_its_own(postgres_server: PostgresServer, postgres_url: str) -> None:
    other_url = await postgres_server.create_database()
    try:
        assert database_name(other_url) != database_name(postgres_url)
        first = await asyncpg.connect(postgres_url)
        second = await asyncpg.connect(other_url)
        try:
            await first.execute("CREATE TABLE outbox (id text PRIMARY KEY)")
            await first.execute("INSERT INTO outbox VALUES ('evt_1')")
            assert await second.fetchval("SELECT to_regclass('outbox')") is None
            await second.execute("CREATE TABLE outbox (id text PRIMARY KEY)")
            assert await second.fetchval("SELECT count(*) FROM outbox") == 0
            assert await first.fetchval("SELECT count(*) FROM outbox") == 1
        finally:
            await first.close()
            await second.close()
    finally:
        await postgres_server.drop_database(database_name(other_url))
    assert not await _database_exists(postgres_server, database_name(other_url))


async def test_a_wrong_password_is_refused(postgres_server: PostgresServer, postgres_url: str) -> None:
    wrong = postgres_url.replace(f":{postgres_server.password}@", ":not-the-password@")
    assert wrong != postgres_url
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)
    with pytest.raises(asyncpg.InvalidPasswordError):  # no trust for local connections either
        await asyncpg.connect(host=str(postgres_server.socket_dir), port=postgres_server.port, user="postgres")


async def test_stop_makes_connections_fail_and_start_brings_the_same_url_back(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    conn = await asyncpg.connect(postgres_url)
    await conn.execute("CREATE TABLE outbox (id text PRIMARY KEY)")
    await conn.execute("INSERT INTO outbox VALUES ('evt_1')")

    await postgres_server.stop_async()
    try:
        assert not postgres_server.running
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT 1")  # fast shutdown closed the open session
        with pytest.raises(OSError):  # ConnectionRefusedError: nothing listens on the port
            await asyncpg.connect(postgres_url, timeout=5)
    finally:
        await conn.close()
        await postgres_server.start_async()

    assert postgres_server.running
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT id FROM outbox") == "evt_1"  # committed rows survive the outage
    finally:
        await conn.close()


async def test_the_event_loop_keeps_running_while_the_server_restarts(postgres_server: PostgresServer) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        await postgres_server.restart_async()
    finally:
        ticker.cancel()
    assert ticks > 1
    conn = await asyncpg.connect(postgres_server.url())
    await conn.close()


def test_a_sync_test_gets_a_database_too(postgres_server: PostgresServer, postgres_url: str) -> None:
    async def query() -> object:
        conn = await asyncpg.connect(postgres_url)
        try:
            return await conn.fetchval("SELECT current_database()")
        finally:
            await conn.close()

    assert asyncio.run(query()) == database_name(postgres_url)
    data = postgres_server.data_dir.stat()
    assert stat.S_IMODE(data.st_mode) == 0o700
    if os.geteuid() == 0:  # PostgreSQL refuses root: the harness runs it as the postgres OS user
        assert data.st_uid == pwd.getpwnam("postgres").pw_uid


def test_a_failed_start_says_why_with_the_server_log() -> None:
    server = PostgresServer(name="relay-pg-broken")
    try:
        server.start()
        server.stop()
        with (server.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("shared_buffers = 'plenty'\n")
        with pytest.raises(PostgresError) as failure:
            server.start()
        message = str(failure.value)
        assert "pg_ctl start failed" in message
        assert f"last lines of {server.log_file}" in message
        assert "shared_buffers" in message  # the server's own complaint, from its log
        assert not server.running
    finally:
        server.cleanup()
    assert server._dir is None


def test_a_server_left_behind_by_a_killed_test_process_is_reaped() -> None:
    orphan = textwrap.dedent(
        """
        import os, signal
        from tests.support.postgres import PostgresServer
        server = PostgresServer(name="relay-pg-orphan")
        server.start()
        print(server.data_dir, server.port, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no teardown, no atexit
        """
    )
    done = subprocess.run([sys.executable, "-c", orphan], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    data_dir, port = Path(done.stdout.split()[0]), int(done.stdout.split()[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the orphan's server outlived it

    assert data_dir.parent in postgres.reap_stale_servers()
    assert not data_dir.parent.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_the_newest_server_is_used_and_a_missing_one_points_at_make_tools(tmp_path: Path) -> None:
    with pytest.raises(PostgresError, match="make tools"):
        postgres.find_bindir(tmp_path)
    (tmp_path / "16" / "bin").mkdir(parents=True)  # a client-only install: no pg_ctl
    with pytest.raises(PostgresError, match="make tools"):
        postgres.find_bindir(tmp_path)
    for version in ("9.6", "15", "17", "16"):
        (tmp_path / version / "bin").mkdir(parents=True, exist_ok=True)
        (tmp_path / version / "bin" / "pg_ctl").touch()
    assert postgres.find_bindir(tmp_path) == tmp_path / "17" / "bin"


async def _database_exists(server: PostgresServer, name: str) -> bool:
    conn = await asyncpg.connect(server.url())
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()
