"""``relay store copy --from SQLITE_PATH --to URL`` (CONTRACT §8, "Moving up"), the command as a subprocess: a SQLite
outbox made by a real ``SqliteStore`` goes into a fresh PostgreSQL database, and a ``PostgresStore`` on it shows the
same events, deliveries and attempts, takes up the pending work and stores new events after the copied ones."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from relay.models import EVERYTHING
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from tests.integration.store_contract import event
from tests.support.outboxes import EVENT_IDS, contents, fill_sqlite, requeued
from tests.support.postgres import PostgresServer
from tests.support.process import run_relay


async def _counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        found = {}
        for table in ("events", "deliveries", "attempts", "webhooks", "oauth_tokens"):
            found[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        found["max_seq"] = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events")
        return found
    finally:
        await conn.close()


async def test_copy_moves_the_outbox_and_postgres_takes_up_its_work(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer
) -> None:
    db = tmp_path / "relay.db"
    await fill_sqlite(db)
    source = SqliteStore(db)
    await source.open()
    try:
        before = await contents(source)
    finally:
        await source.close()

    env = {"RELAY_DATABASE_URL": postgres_url}
    copy_from = time.time()
    code, out, err = await run_relay("store", "copy", "--from", str(db), "--to", "env:RELAY_DATABASE_URL", env=env)
    copy_until = time.time()
    assert (code, err) == (0, ""), err
    assert postgres_server.password not in out
    assert out.startswith(f"copied {db} into postgresql://postgres:***@127.0.0.1:{postgres_server.port}/")
    lines = [line.split() for line in out.splitlines()[1:]]
    assert lines == [
        ["events", "7"],
        ["deliveries", "14", "(1", "being", "attempted:", "pending,", "due", "now)"],
        ["attempts", "4"],
        ["API", "webhooks", "1"],
        ["refresh", "tokens", "1"],
        ["tenant", "keys", "0"],
    ]

    store = PostgresStore(postgres_url)
    await store.open()
    try:
        after = await contents(store)
        assert after["list"] == before["list"]  # the same events, newest first, in the same order
        assert after["webhooks"] == before["webhooks"]  # the API webhook, secrets and rotation included
        assert after["token"] == "refresh-1"
        assert before["totals"] == {"pending": 10, "delivering": 1, "succeeded": 1, "failed": 1, "dead": 1}
        assert after["totals"] == {"pending": 11, "succeeded": 1, "failed": 1, "dead": 1}
        for event_id in EVENT_IDS:
            event_before, deliveries_before = before["events"][event_id]
            event_after, deliveries_after = after["events"][event_id]
            assert event_after == event_before
            if event_id != "e5":
                assert deliveries_after == deliveries_before
                continue
            leased = next(d for d in deliveries_after if d.webhook_id == "cfg")
            assert leased.next_attempt_at is not None and copy_from <= leased.next_attempt_at <= copy_until
            expected = {d.id: d for d in deliveries_before}
            expected[leased.id] = requeued(expected[leased.id], leased.next_attempt_at)
            assert deliveries_after == list(expected.values())

        # What was due or leased is claimable: e2 (failed, due again), e3 (parked), e5 (was leased), e6, e7.
        now = time.time() + 1
        claims, _ = await store.claim("cfg", 10, now, now + 60)
        assert [c.event.id for c in claims] == ["e2", "e3", "e5", "e6", "e7"]
        assert [c.attempt_number for c in claims] == [2, 2, 1, 1, 1]

        await store.ingest([event("after-copy", "cfg")], now)
        page = await store.list_events(event_type=None, since=None, until=None, cursor=None, limit=2, scope=EVERYTHING)
        assert [e.id for e in page.events] == ["after-copy", "e7"]
    finally:
        await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:  # new rows follow the copied ones
        seqs = dict(await conn.fetch("SELECT id, seq FROM events"))
        assert seqs["after-copy"] > max(v for k, v in seqs.items() if k != "after-copy")
        deliveries = await conn.fetch("SELECT d.seq, e.id FROM deliveries d JOIN events e ON e.seq = d.event_seq")
        newest = max(deliveries)
        assert newest[1] == "after-copy"
    finally:
        await conn.close()

    # A second copy into the same (now used) target is refused and changes nothing.
    held = await _counts(postgres_url)
    code, out, err = await run_relay("store", "copy", "--from", str(db), "--to", postgres_url)
    assert (code, out) == (1, "")
    assert "the target is not empty: it holds events, deliveries, attempts, API webhooks, refresh tokens" in err
    assert postgres_server.password not in err and "Traceback" not in err
    assert await _counts(postgres_url) == held


async def test_a_sqlite_file_a_relay_holds_is_refused(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer
) -> None:
    db = tmp_path / "relay.db"
    await fill_sqlite(db)
    running = SqliteStore(db)
    await running.open()  # holds the file's lock, as a relay serving on it does
    try:
        code, out, err = await run_relay("store", "copy", "--from", str(db), "--to", postgres_url)
    finally:
        await running.close()
    assert (code, out) == (1, "")
    assert f"the store {db} is in use by another relay (pid " in err and "stop it first, then copy" in err
    assert postgres_server.password not in err
    conn = await asyncpg.connect(postgres_url)
    try:  # refused before the target was touched
        assert await conn.fetchval("SELECT to_regclass('events')") is None
    finally:
        await conn.close()


async def test_an_unreachable_database_is_a_failure_without_its_password(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    db = tmp_path / "relay.db"
    await fill_sqlite(db)
    url = postgres_server.url().replace(f":{postgres_server.port}/", ":1/")
    code, out, err = await run_relay("store", "copy", "--from", str(db), "--to", url)
    assert (code, out) == (1, "")
    assert err.startswith("relay store copy: postgresql://postgres:***@127.0.0.1:1/postgres: cannot reach the database")
    assert postgres_server.password not in err and "Traceback" not in err


async def test_wrong_arguments_exit_2(tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.url()
    missing = tmp_path / "nothing.db"
    code, out, err = await run_relay("store", "copy", "--from", str(missing), "--to", url)
    assert (code, out, err) == (2, "", f"relay store copy: --from: {missing}: no such file\n")
    assert not missing.exists()  # not created

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    code, _, err = await run_relay("store", "copy", "--from", str(junk), "--to", url)
    assert (code, err) == (2, f"relay store copy: --from: {junk}: not a SQLite database\n")

    code, _, err = await run_relay(
        "store", "copy", "--from", str(junk), "--to", "env:RELAY_NO_SUCH_URL", env={"RELAY_NO_SUCH_URL": ""}
    )
    assert (code, err) == (2, "relay store copy: --to: environment variable RELAY_NO_SUCH_URL is empty\n")
    code, _, err = await run_relay("store", "copy", "--from", str(junk), "--to", "mysql://u:secretpw@h/d")
    assert code == 2 and "--to: must start with postgresql:// or postgres://" in err and "secretpw" not in err
    code, _, err = await run_relay("store", "copy", "--to", url)
    assert code == 2 and "--from" in err
