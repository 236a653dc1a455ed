"""The PostgreSQL backend's tenants (CONTRACT §9), as on SQLite (``relay.store.sqlite_tenants``): keys by their
SHA-256, the admin's view of tenants, offboarding, the key that signs portal links and dashboard sessions, and the
sessions signed out (``PostgresStore`` inherits them). A key revoked, or a session signed out, on one relay is
refused by every relay from the next request on: both are looked up in the database for each request, never
cached."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from relay.store.base import TenantKey, TenantRemoved, TenantSummary
from relay.store.postgres_outbox import cancel_queued
from relay.store.postgres_reads import PostgresReads
from relay.store.postgres_signals import notify_webhooks_changed
from relay.store.rows import KEY_COLUMNS, summaries, tenant_key_of


class PostgresTenants(PostgresReads):
    """Tenant keys and tenants, and ended dashboard sessions; ``PostgresStore`` provides ``_transaction`` and
    ``owner``."""

    owner: str

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        raise NotImplementedError
        yield

    async def insert_tenant_key(self, key: TenantKey, digest: bytes) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO tenant_keys (id, tenant, digest, prefix, description, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                key.id,
                key.tenant,
                digest,
                key.prefix,
                key.description,
                key.created_at,
            )

    async def tenant_keys(self, tenant: str) -> list[TenantKey]:
        rows = await self._fetch(
            f'SELECT {KEY_COLUMNS} FROM tenant_keys WHERE tenant = $1 ORDER BY created_at, id COLLATE "C"', tenant
        )
        return [tenant_key_of(r) for r in rows]

    async def delete_tenant_key(self, tenant: str, key_id: str) -> bool:
        async with self._connection() as conn:
            status = await conn.execute("DELETE FROM tenant_keys WHERE id = $1 AND tenant = $2", key_id, tenant)
        return bool(status == "DELETE 1")

    async def tenant_key_by_digest(self, digest: bytes) -> TenantKey | None:
        rows = await self._fetch(f"SELECT {KEY_COLUMNS} FROM tenant_keys WHERE digest = $1", digest)
        return tenant_key_of(rows[0]) if rows else None

    async def touch_tenant_key(self, key_id: str, now: float) -> None:
        async with self._connection() as conn:
            await conn.execute("UPDATE tenant_keys SET last_used_at = $2 WHERE id = $1", key_id, now)

    async def tenant_summaries(self, tenant: str | None = None) -> list[TenantSummary]:
        only, args = ("= $1", [tenant]) if tenant is not None else ("IS NOT NULL", [])
        webhooks, keys = [
            await self._fetch(f"SELECT tenant, count(*) FROM {table} WHERE tenant {only} GROUP BY tenant", *args)
            for table in ("webhooks", "tenant_keys")
        ]
        deliveries = await self._fetch(
            "SELECT w.tenant, d.status, count(*) FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id"
            f" WHERE w.tenant {only} GROUP BY w.tenant, d.status",
            *args,
        )
        return summaries(webhooks, keys, deliveries)

    async def delete_tenant(self, tenant: str, now: float) -> TenantRemoved:
        async with self._transaction() as conn:
            rows = await conn.fetch("DELETE FROM webhooks WHERE tenant = $1 AND source = 'api' RETURNING id", tenant)
            ids = sorted(r[0] for r in rows)
            cancelled = 0
            for webhook_id in ids:
                await conn.execute("DELETE FROM oauth_tokens WHERE webhook_id = $1", webhook_id)
                cancelled += await cancel_queued(conn, webhook_id, now)
            status = await conn.execute("DELETE FROM tenant_keys WHERE tenant = $1", tenant)
            await conn.execute(
                "INSERT INTO tenant_removals (tenant, removed_at) VALUES ($1, $2)"
                " ON CONFLICT (tenant) DO UPDATE SET removed_at = excluded.removed_at",
                tenant,
                now,
            )
            if ids:
                await notify_webhooks_changed(conn, self.owner)
        return TenantRemoved(ids, cancelled, int(status.split()[-1]))

    async def tenant_removed_at(self, tenant: str) -> float | None:
        rows = await self._fetch("SELECT removed_at FROM tenant_removals WHERE tenant = $1", tenant)
        return float(rows[0][0]) if rows else None

    async def signing_key(self) -> bytes:
        # Read first: made once, then only read (once per process: ``Services.signing_key`` keeps it).
        if rows := await self._fetch("SELECT value FROM settings WHERE name = 'signing_key'"):
            return bytes(rows[0][0])
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO settings (name, value) VALUES ('signing_key', $1) ON CONFLICT (name) DO NOTHING",
                secrets.token_bytes(32),
            )
            return bytes(await conn.fetchval("SELECT value FROM settings WHERE name = 'signing_key'"))

    async def end_session(self, nonce: str, expires_at: float, now: float) -> None:
        # One statement: the expired rows go in the same round trip (a WITH's DELETE runs whether or not it is read).
        async with self._connection() as conn:
            await conn.execute(
                "WITH expired AS (DELETE FROM ended_sessions WHERE expires_at <= $3)"
                " INSERT INTO ended_sessions (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
                nonce,
                expires_at,
                now,
            )

    async def session_ended(self, nonce: str) -> bool:
        return bool(await self._fetch("SELECT 1 FROM ended_sessions WHERE nonce = $1", nonce))
