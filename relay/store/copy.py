"""``relay store copy``: a SQLite outbox copied into an empty PostgreSQL store (CONTRACT §8, "Moving up").

What goes across: every event, every delivery (its status, attempt count and due time; a delivery that was being
attempted, ``delivering``, becomes ``pending`` and due at once, as a restart would make it), every attempt and the
hourly attempt counts the dashboard reads, the webhooks created through the API (their whole spec, secrets included,
and their rotation state), the stored OAuth2 refresh tokens, and the tenants' keys (their SHA-256), deletions and the
portal links' signing key, so keys and links go on working, and the dashboard sessions signed out, so the cookie of
one (still signed with that key) does not open again on the target. Config-declared webhooks are not copied: the
relays on PostgreSQL declare them from their own files when they start; their deliveries are copied all the same.

Seqs are kept as they are (events and deliveries keep their order, attempts and deliveries their references, list
cursors their meaning) and the target's identity counters are set past the copied maxima, so new rows follow.

Safety:
- the source must not be in use: the copy takes the SQLite file's lock (``take_lock``) as a relay does and holds it
  to the end, so a running relay makes it fail, and a relay started meanwhile cannot open the file;
- the target's schema is brought up to date first (``postgres_schema.migrate``), then everything is written in one
  transaction that first locks the tables against writers and refuses a target that holds any event, delivery,
  attempt, API webhook or refresh token: a copy that fails or is refused leaves the target as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed

from relay.errors import Problem, StoreError, ValidationError
from relay.models import Secret
from relay.store import postgres_schema, sqlite_schema
from relay.store.sqlite import take_lock

BATCH = 5000  # rows per statement
CONNECT_TIMEOUT = 5.0  # seconds to reach the target: an unreachable database fails fast
LOCK_TIMEOUT = "10s"  # how long the copy waits for the target's tables (a relay's transaction in progress)

Conn = Any  # an asyncpg connection (asyncpg has no types)
Row = tuple[Any, ...]


class CopyRefused(StoreError):
    """The copy would not be safe (the source is in use, the target is not empty); nothing was written."""


@dataclass(frozen=True, slots=True)
class CopySummary:
    """What a copy wrote: rows per table, and how long it took."""

    events: int
    deliveries: int
    requeued: int  # deliveries that were being attempted, now pending and due at once
    attempts: int
    webhooks: int  # API webhooks
    refresh_tokens: int
    tenant_keys: int
    schema: tuple[int, int]  # the source's schema version before and after (migrated first when older)
    seconds: float


@dataclass(frozen=True, slots=True)
class _Table:
    """One table's copy: the SQLite query (in seq order), the PostgreSQL statement taking one array per column."""

    name: str
    select: str
    insert: str


_EVENTS = _Table(
    "events",
    "SELECT seq, id, type, created_at, data, ingested_at, delivery_count, tenant, ordering_key FROM events"
    " ORDER BY seq",
    # created_us as the PostgreSQL store's ingest computes it (postgres_outbox._INSERT_EVENTS).
    """
    INSERT INTO events (seq, id, type, created_at, created_us, data, ingested_at, delivery_count, tenant,
                        ordering_key)
    SELECT v.seq, v.id, v.type, v.created_at, (extract(epoch FROM v.created_at::timestamptz) * 1000000)::bigint,
           v.data, v.ingested_at, v.delivery_count, v.tenant, v.ordering_key
    FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::float8[], $7::int4[], $8::text[],
                $9::text[])
         AS v(seq, id, type, created_at, data, ingested_at, delivery_count, tenant, ordering_key)
    """,
)
_DELIVERIES = _Table(
    "deliveries",
    "SELECT seq, id, event_seq, webhook_id, status, attempt_count, due_at, created_at, updated_at, ordering_key,"
    " ordering FROM deliveries ORDER BY seq",
    """
    INSERT INTO deliveries (seq, id, event_seq, webhook_id, status, attempt_count, due_at, created_at, updated_at,
                            ordering_key, ordering)
    SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int4[], $7::float8[],
                         $8::float8[], $9::float8[], $10::text[], $11::text[])
    """,
)
_ATTEMPTS = _Table(
    "attempts",
    "SELECT delivery_seq, number, started_at, duration_ms, status_code, error, error_detail, response_body,"
    " next_attempt_at FROM attempts ORDER BY delivery_seq, number",
    """
    INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status_code, error, error_detail,
                          response_body, next_attempt_at)
    SELECT * FROM unnest($1::int8[], $2::int4[], $3::float8[], $4::float8[], $5::int4[], $6::text[], $7::text[],
                         $8::text[], $9::float8[])
    """,
)
# The hourly attempt counts (relay/store/activity.py), under the node names of the source's relay. A target that ran
# relays and pruned everything else may hold counts already: the copied ones add up with them, as a record would.
_ATTEMPT_HOURS = _Table(
    "attempt_hours",
    "SELECT webhook_id, hour, node, attempts, failures, last_at, last_ok FROM attempt_hours"
    " ORDER BY webhook_id, hour, node",
    """
    INSERT INTO attempt_hours AS h (webhook_id, hour, node, attempts, failures, last_at, last_ok)
    SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::float8[], $7::bool[])
    ON CONFLICT (webhook_id, hour, node) DO UPDATE SET
        attempts = h.attempts + excluded.attempts, failures = h.failures + excluded.failures,
        last_at = CASE WHEN excluded.last_at >= h.last_at THEN excluded.last_at ELSE h.last_at END,
        last_ok = CASE WHEN excluded.last_at >= h.last_at THEN excluded.last_ok ELSE h.last_ok END
    """,
)
_WEBHOOKS = _Table(
    "webhooks",
    "SELECT id, spec, created_at, updated_at, previous_secret, previous_secret_until, tenant FROM webhooks"
    " WHERE source = 'api' ORDER BY created_at, id",
    """
    INSERT INTO webhooks (id, source, spec, created_at, updated_at, previous_secret, previous_secret_until, tenant)
    SELECT v.id, 'api', v.spec, v.created_at, v.updated_at, v.previous_secret, v.previous_secret_until, v.tenant
    FROM unnest($1::text[], $2::bytea[], $3::float8[], $4::float8[], $5::text[], $6::float8[], $7::text[])
         AS v(id, spec, created_at, updated_at, previous_secret, previous_secret_until, tenant)
    """,
)
_TENANT_KEYS = _Table(
    "tenant_keys",
    "SELECT id, tenant, digest, prefix, description, created_at, last_used_at FROM tenant_keys ORDER BY id",
    """
    INSERT INTO tenant_keys (id, tenant, digest, prefix, description, created_at, last_used_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::float8[], $7::float8[])
    """,
)
_TENANT_REMOVALS = _Table(
    "tenant_removals",
    "SELECT tenant, removed_at FROM tenant_removals ORDER BY tenant",
    "INSERT INTO tenant_removals (tenant, removed_at) SELECT * FROM unnest($1::text[], $2::float8[])",
)
# The target's own signing key (made when a relay first ran on it) gives way to the source's.
_SETTINGS = _Table(
    "settings",
    "SELECT name, value FROM settings ORDER BY name",
    "INSERT INTO settings (name, value) SELECT * FROM unnest($1::text[], $2::bytea[])"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
)
# Ended dashboard sessions (``Sessions.end_session``), expired ones included: the target's next sign-out deletes
# those. A target whose relays ran may hold some of its own: a nonce is random, one on both sides is the same session.
_ENDED_SESSIONS = _Table(
    "ended_sessions",
    "SELECT nonce, expires_at FROM ended_sessions ORDER BY nonce",
    "INSERT INTO ended_sessions (nonce, expires_at) SELECT * FROM unnest($1::text[], $2::float8[])"
    " ON CONFLICT (nonce) DO NOTHING",
)
_REFRESH_TOKENS = _Table(
    "oauth_tokens",
    "SELECT webhook_id, refresh_token, updated_at FROM oauth_tokens ORDER BY webhook_id",
    """
    INSERT INTO oauth_tokens (webhook_id, refresh_token, updated_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])
    """,
)

# What a target must not hold, each as the words the refusal uses.
_HOLDINGS = (
    ("events", "SELECT EXISTS (SELECT 1 FROM events)"),
    ("deliveries", "SELECT EXISTS (SELECT 1 FROM deliveries)"),
    ("attempts", "SELECT EXISTS (SELECT 1 FROM attempts)"),
    ("API webhooks", "SELECT EXISTS (SELECT 1 FROM webhooks WHERE source = 'api')"),
    ("refresh tokens", "SELECT EXISTS (SELECT 1 FROM oauth_tokens)"),
    ("tenant keys", "SELECT EXISTS (SELECT 1 FROM tenant_keys)"),
)


async def copy_store(source: Path, target: Secret, now: float, *, batch: int = BATCH) -> CopySummary:
    """Copy the SQLite outbox at ``source`` into the empty PostgreSQL store at ``target``; ``now`` is when the
    deliveries that were being attempted fall due again. Raises ``ValidationError`` (problems named ``--from`` or
    ``--to``) when an argument is wrong, ``CopyRefused`` when the copy would not be safe, and ``StoreError``
    (``StoreUnavailable``) when a store fails; in every case the target is left as it was."""
    started = time.perf_counter()
    with _lock_source(source), contextlib.closing(await asyncio.to_thread(_open_source, source)) as reader:
        schema = await asyncio.to_thread(_migrate_source, reader, source)
        conn = await _connect(target)
        try:
            await postgres_schema.migrate(conn)
            async with conn.transaction():
                counts = await _copy(conn, reader, now, batch)
        except postgres_schema.DRIVER_ERRORS as exc:
            raise postgres_schema.translate(exc) from exc
        except sqlite3.Error as exc:
            raise sqlite_schema.translate(exc) from exc
        finally:
            with contextlib.suppress(*postgres_schema.DRIVER_ERRORS):
                await conn.close()
    return CopySummary(**counts, schema=schema, seconds=time.perf_counter() - started)


def _lock_source(source: Path) -> IO[str]:
    """The SQLite file's lock, as a relay holds it while it runs on the file (see ``copy_store``)."""
    if not source.is_file():
        reason = "no such file" if not source.exists() else "not a file"
        raise ValidationError([Problem("--from", f"{source}: {reason}")])
    try:
        return take_lock(source)
    except StoreError as exc:
        raise CopyRefused(f"{exc}: stop it first, then copy") from None
    except OSError as exc:
        raise StoreError(f"cannot take the lock of {source}: {exc.strerror or exc}") from exc


def _open_source(source: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(source, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {source}: {exc}") from exc
    return conn


def _migrate_source(conn: sqlite3.Connection, source: Path) -> tuple[int, int]:
    """Check that ``conn`` is a relay store, and bring an older one's schema up to date (as a relay starting on it
    would): the versions before and after. What is read is then one snapshot (a read transaction to the end)."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:  # not a database at all
        raise ValidationError([Problem("--from", f"{source}: not a SQLite database")]) from None
    if not {"schema_version", "events", "deliveries"} <= tables:
        raise ValidationError([Problem("--from", f"{source}: not a relay store (no relay tables in it)")])
    try:
        versions = sqlite_schema.migrate(conn, source)
        conn.execute("BEGIN")
    except sqlite3.Error as exc:
        raise sqlite_schema.translate(exc) from exc
    return versions


async def _connect(target: Secret) -> Conn:
    try:
        return await asyncpg.connect(
            target.reveal(), timeout=CONNECT_TIMEOUT, server_settings={"application_name": "relay store copy"}
        )
    except ValueError:  # the URL does not parse (asyncpg's ClientConfigurationError): its text is not shown
        raise ValidationError([Problem("--to", "not a PostgreSQL URL asyncpg can use")]) from None
    except postgres_schema.DRIVER_ERRORS as exc:
        raise postgres_schema.translate(exc) from exc


async def _copy(conn: Conn, reader: sqlite3.Connection, now: float, batch: int) -> dict[str, int]:
    """The copy itself, inside the caller's transaction: lock, check the target is empty, copy each table, move
    the identity counters on."""
    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    await conn.execute(
        "LOCK TABLE events, deliveries, attempts, attempt_hours, webhooks, oauth_tokens, tenant_keys"
        " IN SHARE ROW EXCLUSIVE MODE"
    )  # writers (relays on the target, another copy) wait for this transaction; readers do not
    held = [what for what, query in _HOLDINGS if await conn.fetchval(query)]
    if held:
        raise CopyRefused(f"the target is not empty: it holds {', '.join(held)}; relay store copy fills an empty one")
    webhooks = await asyncio.to_thread(lambda: reader.execute(_WEBHOOKS.select).fetchall())
    taken = await conn.fetch("SELECT id FROM webhooks WHERE id = ANY($1::text[])", [r[0] for r in webhooks])
    if taken:
        ids = ", ".join(sorted(r[0] for r in taken))
        raise CopyRefused(f"the target's configuration declares webhooks with the ids of API webhooks copied: {ids}")

    requeued = 0

    def requeue(row: Row) -> Row:
        """A delivery that was being attempted is due again at once (its lease ends with the source relay); one of an
        ordering key stays its key's head."""
        nonlocal requeued
        if row[4] != "delivering":
            return row
        requeued += 1
        return (*row[:4], "pending", row[5], now, row[7], now, *row[9:])

    counts = {
        "events": await _copy_table(conn, reader, _EVENTS, batch, _event_row),
        "deliveries": await _copy_table(conn, reader, _DELIVERIES, batch, requeue),
        "attempts": await _copy_table(conn, reader, _ATTEMPTS, batch),
        "webhooks": await _insert(conn, _WEBHOOKS, [_webhook_row(r) for r in webhooks]),
        "refresh_tokens": await _copy_table(conn, reader, _REFRESH_TOKENS, batch),
        "tenant_keys": await _copy_table(conn, reader, _TENANT_KEYS, batch, _key_row),
    }
    await _copy_table(conn, reader, _ATTEMPT_HOURS, batch, _hour_row)
    await _copy_table(conn, reader, _TENANT_REMOVALS, batch)
    await _copy_table(conn, reader, _SETTINGS, batch, _setting_row)
    await _copy_table(conn, reader, _ENDED_SESSIONS, batch)
    for table in ("events", "deliveries"):  # new rows follow the copied ones
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), max(seq)) FROM {table} HAVING count(*) > 0"
        )
    return {**counts, "requeued": requeued}


async def _copy_table(
    conn: Conn, reader: sqlite3.Connection, table: _Table, batch: int, convert: Callable[[Row], Row] | None = None
) -> int:
    """Every row of one SQLite table into PostgreSQL, ``batch`` rows a statement, in the source's order."""
    cursor = await asyncio.to_thread(reader.execute, table.select)
    total = 0
    while rows := await asyncio.to_thread(cursor.fetchmany, batch):
        total += await _insert(conn, table, [convert(r) for r in rows] if convert else rows)
    return total


async def _insert(conn: Conn, table: _Table, rows: Sequence[Row]) -> int:
    if rows:
        await conn.execute(table.insert, *_columns(rows))
    return len(rows)


def _columns(rows: Sequence[Row]) -> Iterator[list[Any]]:
    """Rows as one list per column: what the statements' ``unnest`` takes."""
    return (list(column) for column in zip(*rows, strict=True))


def _event_row(row: Row) -> Row:
    return (*row[:4], _bytes(row[4]), *row[5:])


def _webhook_row(row: Row) -> Row:
    return (row[0], _bytes(row[1]), *row[2:])


def _key_row(row: Row) -> Row:
    return (*row[:2], _bytes(row[2]), *row[3:])


def _hour_row(row: Row) -> Row:
    return (*row[:6], bool(row[6]))  # SQLite keeps a boolean as 0 or 1


def _setting_row(row: Row) -> Row:
    return (row[0], _bytes(row[1]))


def _bytes(value: Any) -> bytes:
    """A BLOB column's value; one written as text (by hand, or an old tool) is its UTF-8."""
    return value.encode() if isinstance(value, str) else bytes(value)
