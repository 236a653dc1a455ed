"""The SQLite outbox's schema as plain SQL migrations (``MIGRATIONS[n]`` takes the store from version n to n + 1),
and the driver's errors translated into relay's own at the backend's boundary."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import structlog

from relay.errors import StoreError, StoreUnavailable

log = structlog.get_logger()

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        data BLOB NOT NULL,
        ingested_at REAL NOT NULL,
        delivery_count INTEGER NOT NULL
    );
    CREATE INDEX events_ingested ON events (ingested_at);

    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        event_seq INTEGER NOT NULL,
        webhook_id TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt_count INTEGER NOT NULL DEFAULT 0,
        -- pending/failed: when the next attempt is due; delivering: when the lease runs out.
        due_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (webhook_id, due_at)
        WHERE status IN ('pending', 'failed', 'delivering');
    CREATE INDEX deliveries_event ON deliveries (event_seq);
    CREATE INDEX deliveries_webhook ON deliveries (webhook_id, seq);

    CREATE TABLE attempts (
        delivery_seq INTEGER NOT NULL,
        number INTEGER NOT NULL,
        started_at REAL NOT NULL,
        duration_ms REAL NOT NULL,
        status_code INTEGER,
        error TEXT,
        error_detail TEXT,
        response_body TEXT,
        next_attempt_at REAL,
        PRIMARY KEY (delivery_seq, number)
    ) WITHOUT ROWID;

    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        spec BLOB NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );

    CREATE TABLE oauth_tokens (
        webhook_id TEXT PRIMARY KEY,
        refresh_token TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 1 -> 2: webhooks created through the management API keep their whole definition in ``spec`` (secrets
    # included: the relay must sign with them) and, during a secret rotation, the previous secret and when it
    # stops signing. Config-declared webhooks never use these columns.
    """
    ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;
    ALTER TABLE webhooks ADD COLUMN previous_secret_until REAL;
    CREATE INDEX webhooks_source ON webhooks (source, created_at);
    """,
    # 2 -> 3: the lists of events and deliveries (``SqliteReads.list_events``, ``list_deliveries``). ``created_us``
    # is an event's ``created_at`` in microseconds since the epoch, read from its normalised text
    # (``YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z``), which does not sort as text ("…:00Z" after "…:00.5Z"). It is a
    # virtual column: indexed, but no stored row is rewritten. An index on one column ends with the rowid (the
    # seq), so ``events_type`` and ``deliveries_status`` give a type's or a status's rows newest first; the
    # ``*_created`` ones cover the equality filter a time range is listed with. ``deliveries_status`` leaves out
    # ``succeeded`` (the bulk, found walking newest first) and is used only where a query states its condition,
    # so no statement of the scheduler's takes it in place of ``deliveries_due``.
    """
    ALTER TABLE events ADD COLUMN created_us INTEGER GENERATED ALWAYS AS (
        CAST(strftime('%s', substr(created_at, 1, 19)) AS INTEGER) * 1000000
        + CASE WHEN substr(created_at, 20, 1) = '.'
            THEN CAST(substr(substr(created_at, 21, length(created_at) - 21) || '00000', 1, 6) AS INTEGER)
            ELSE 0 END
    ) VIRTUAL;
    CREATE INDEX events_type ON events (type);
    CREATE INDEX events_created ON events (created_us, type);
    CREATE INDEX deliveries_status ON deliveries (status) WHERE status != 'succeeded';
    CREATE INDEX deliveries_created ON deliveries (created_at, webhook_id);
    """,
    # 3 -> 4: tenants (CONTRACT §9). An event's and a webhook's tenant (NULL: platform-wide); the partial indexes
    # cost nothing for rows of no tenant. A delivery is its webhook's tenant's: scoped reads join on the webhook.
    # Tenant keys are kept by their SHA-256 only. ``tenant_removals``: when a tenant was last deleted (a portal
    # link made before that no longer opens). ``settings``: the portal links' and sessions' signing key.
    """
    ALTER TABLE events ADD COLUMN tenant TEXT;
    CREATE INDEX events_tenant ON events (tenant) WHERE tenant IS NOT NULL;
    ALTER TABLE webhooks ADD COLUMN tenant TEXT;
    CREATE INDEX webhooks_tenant ON webhooks (tenant) WHERE tenant IS NOT NULL;
    CREATE TABLE tenant_keys (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        digest BLOB NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        description TEXT,
        created_at REAL NOT NULL,
        last_used_at REAL
    );
    CREATE INDEX tenant_keys_tenant ON tenant_keys (tenant, created_at);
    CREATE TABLE tenant_removals (tenant TEXT PRIMARY KEY, removed_at REAL NOT NULL);
    CREATE TABLE settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    """,
    # 4 -> 5: ordering keys (CONTRACT §11, relay/store/ordering.py). A delivery of an ordered webhook and a keyed
    # event keeps the key and the webhook's ordering ("fifo" or "latest") as they were at ingest; one waiting behind
    # its key's head is pending with no due time. ``deliveries_key`` finds a key's head (the one entry with a due
    # time) and its oldest waiting delivery (the first entry with none: NULLs come first, then by seq) in one seek
    # each, however long the key's queue.
    """
    ALTER TABLE events ADD COLUMN ordering_key TEXT;
    ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
    ALTER TABLE deliveries ADD COLUMN ordering TEXT;
    CREATE INDEX deliveries_key ON deliveries (webhook_id, ordering_key, due_at)
        WHERE ordering_key IS NOT NULL AND status IN ('pending', 'failed', 'delivering');
    """,
    # 5 -> 6: attempts counted per webhook and hour (the dashboard's activity, relay/store/activity.py), written by
    # the transaction that records them. ``node`` is the recording relay (the lease's owner): one relay owns a
    # SQLite store, the column keeps PostgreSQL's shape. ``hour`` is the hour's start, epoch seconds; ``last_at``
    # and ``last_ok`` are the newest attempt's start and whether it succeeded. Every read goes through the key.
    """
    CREATE TABLE attempt_hours (
        webhook_id TEXT NOT NULL,
        hour INTEGER NOT NULL,
        node TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        last_at REAL NOT NULL,
        last_ok INTEGER NOT NULL,
        PRIMARY KEY (webhook_id, hour, node)
    ) WITHOUT ROWID;
    """,
    # 6 -> 7: dashboard sessions signed out before their cookie expires (``Sessions.end_session``): each session's
    # nonce, refused from then on, and when its cookie expires. Each sign-out deletes the rows past that, so the
    # table holds only the live sessions that were signed out: its scan for them needs no index on expires_at.
    """
    CREATE TABLE ended_sessions (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL);
    """,
)

# Statuses that still hold a claim on the scheduler's attention; the partial index covers exactly these.
QUEUED = "('pending', 'failed', 'delivering')"


def migrate(conn: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """Bring the store up to the newest schema, one migration per transaction; the versions before and after."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    rows = conn.execute("SELECT version FROM schema_version").fetchall()
    version = int(rows[0][0]) if rows else 0
    if version > len(MIGRATIONS):
        raise StoreError(f"the store {path} has schema version {version}, newer than this relay")
    for index in range(version, len(MIGRATIONS)):
        conn.executescript(
            "BEGIN IMMEDIATE;\n"
            + MIGRATIONS[index]
            + "\nDELETE FROM schema_version;"
            + f"\nINSERT INTO schema_version (version) VALUES ({index + 1});\nCOMMIT;"
        )
        log.info("store_migrated", version=index + 1)
    return version, len(MIGRATIONS)


_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


def translate(exc: sqlite3.Error) -> StoreError:
    """A driver error as the project's own: ``StoreUnavailable`` when retrying later may work."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if isinstance(exc, sqlite3.OperationalError) or primary in _UNAVAILABLE_CODES:
        return StoreUnavailable(str(exc))
    return StoreError(str(exc))
