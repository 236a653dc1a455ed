"""The SQLite backend's tenants (CONTRACT §9): keys by their SHA-256, the admin's view of tenants, offboarding,
the key that signs portal links and dashboard sessions, and the sessions signed out (``SqliteStore`` inherits
them)."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from relay.store import sqlite_outbox as outbox
from relay.store.base import TenantKey, TenantRemoved, TenantSummary
from relay.store.rows import KEY_COLUMNS, summaries, tenant_key_of
from relay.store.sqlite_reads import SqliteReads

T = TypeVar("T")


class SqliteTenants(SqliteReads):
    """Tenant keys and tenants, and ended dashboard sessions; ``SqliteStore`` provides the connections (``_write``:
    one write transaction)."""

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def insert_tenant_key(self, key: TenantKey, digest: bytes) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO tenant_keys (id, tenant, digest, prefix, description, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key.id, key.tenant, digest, key.prefix, key.description, key.created_at),
            )

        await self._write(run)

    async def tenant_keys(self, tenant: str) -> list[TenantKey]:
        rows = await self._read(
            f"SELECT {KEY_COLUMNS} FROM tenant_keys WHERE tenant = ? ORDER BY created_at, id", (tenant,)
        )
        return [tenant_key_of(r) for r in rows]

    async def delete_tenant_key(self, tenant: str, key_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM tenant_keys WHERE id = ? AND tenant = ?", (key_id, tenant)).rowcount == 1

        return await self._write(run)

    async def tenant_key_by_digest(self, digest: bytes) -> TenantKey | None:
        rows = await self._read(f"SELECT {KEY_COLUMNS} FROM tenant_keys WHERE digest = ?", (digest,))
        return tenant_key_of(rows[0]) if rows else None

    async def touch_tenant_key(self, key_id: str, now: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE tenant_keys SET last_used_at = ? WHERE id = ?", (now, key_id))

        await self._write(run)

    async def tenant_summaries(self, tenant: str | None = None) -> list[TenantSummary]:
        only, params = ("= ?", (tenant,)) if tenant is not None else ("IS NOT NULL", ())
        webhooks, keys = [
            await self._read(f"SELECT tenant, COUNT(*) FROM {table} WHERE tenant {only} GROUP BY tenant", params)
            for table in ("webhooks", "tenant_keys")
        ]
        deliveries = await self._read(
            "SELECT w.tenant, d.status, COUNT(*) FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id"
            f" WHERE w.tenant {only} GROUP BY w.tenant, d.status",
            params,
        )
        return summaries(webhooks, keys, deliveries)

    async def delete_tenant(self, tenant: str, now: float) -> TenantRemoved:
        def run(conn: sqlite3.Connection) -> TenantRemoved:
            ids = [
                r[0]
                for r in conn.execute(
                    "DELETE FROM webhooks WHERE tenant = ? AND source = 'api' RETURNING id", (tenant,)
                ).fetchall()
            ]
            cancelled = 0
            for webhook_id in ids:
                conn.execute("DELETE FROM oauth_tokens WHERE webhook_id = ?", (webhook_id,))
                cancelled += outbox.cancel_queued(conn, webhook_id, now)
            keys = conn.execute("DELETE FROM tenant_keys WHERE tenant = ?", (tenant,)).rowcount
            conn.execute(
                "INSERT INTO tenant_removals (tenant, removed_at) VALUES (?, ?)"
                " ON CONFLICT (tenant) DO UPDATE SET removed_at = excluded.removed_at",
                (tenant, now),
            )
            return TenantRemoved(sorted(ids), cancelled, keys)

        return await self._write(run)

    async def tenant_removed_at(self, tenant: str) -> float | None:
        rows = await self._read("SELECT removed_at FROM tenant_removals WHERE tenant = ?", (tenant,))
        return float(rows[0][0]) if rows else None

    async def signing_key(self) -> bytes:
        # Read first: made once, then only read (once per process: ``Services.signing_key`` keeps it).
        if rows := await self._read("SELECT value FROM settings WHERE name = 'signing_key'"):
            return bytes(rows[0][0])

        def run(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT INTO settings (name, value) VALUES ('signing_key', ?) ON CONFLICT (name) DO NOTHING",
                (secrets.token_bytes(32),),
            )
            return bytes(conn.execute("SELECT value FROM settings WHERE name = 'signing_key'").fetchone()[0])

        return await self._write(run)

    async def end_session(self, nonce: str, expires_at: float, now: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM ended_sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO ended_sessions (nonce, expires_at) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING",
                (nonce, expires_at),
            )

        await self._write(run)

    async def session_ended(self, nonce: str) -> bool:
        return bool(await self._read("SELECT 1 FROM ended_sessions WHERE nonce = ?", (nonce,)))
