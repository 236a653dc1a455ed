"""Config-declared webhooks when several relays share one store (CONTRACT §8).

Each relay declares the webhooks its own file lists, in ``webhook_declarations`` under its owner id. A relay
never removes a webhook because its own file lacks it while another live relay still declares it: a config webhook
leaves the store when no live relay (registered in ``relays`` and seen within ``alive_within`` seconds) declares it
any more. Relays that declare one id differently log ``config_conflict`` with the webhook id; the webhook's stored
shape is then the last one declared.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from relay.store.postgres_outbox import Conn, cancel_queued
from relay.store.rows import spec_tenant

log = structlog.get_logger()

_ALIVE = "SELECT owner FROM relays WHERE seen_at >= extract(epoch FROM clock_timestamp()) - $1"


async def sync_config_webhooks(
    conn: Conn, owner: str, specs: Mapping[str, bytes], now: float, alive_within: float
) -> list[str]:
    """Inside a transaction: make ``specs`` this relay's declarations, upsert them, and remove the config webhooks
    no live relay declares; the removed ids (their queued deliveries are cancelled)."""
    # One sync at a time across the group: two relays reloading at once must not each remove what the other adds.
    await conn.execute("LOCK TABLE webhook_declarations IN SHARE ROW EXCLUSIVE MODE")
    gone = f"DELETE FROM webhook_declarations WHERE owner <> $2 AND owner NOT IN ({_ALIVE})"  # relays found dead
    await conn.execute(gone, alive_within, owner)
    await conn.execute("DELETE FROM webhook_declarations WHERE owner = $1", owner)
    ids, values = list(specs), list(specs.values())
    await conn.execute(
        "INSERT INTO webhook_declarations (webhook_id, owner, spec, declared_at)"
        " SELECT v.id, $3, v.spec, $4::float8 FROM unnest($1::text[], $2::bytea[]) AS v(id, spec)",
        ids,
        values,
        owner,
        now,
    )
    conflicts = await conn.fetch(
        "SELECT DISTINCT mine.webhook_id FROM webhook_declarations mine JOIN webhook_declarations other"
        " ON other.webhook_id = mine.webhook_id AND other.owner <> mine.owner AND other.spec <> mine.spec"
        " WHERE mine.owner = $1 ORDER BY 1",
        owner,
    )
    for row in conflicts:
        log.warning("config_conflict", webhook_id=row[0], reason="relays declare this webhook differently")
    rows = await conn.fetch(
        "DELETE FROM webhooks w WHERE w.source = 'config'"
        " AND NOT EXISTS (SELECT 1 FROM webhook_declarations d WHERE d.webhook_id = w.id) RETURNING w.id"
    )
    removed = sorted(r[0] for r in rows)
    for webhook_id in removed:
        await cancel_queued(conn, webhook_id, now)
    await conn.execute(
        "INSERT INTO webhooks (id, source, spec, created_at, updated_at, tenant)"
        " SELECT v.id, 'config', v.spec, $3::float8, $3::float8, v.tenant"
        " FROM unnest($1::text[], $2::bytea[], $4::text[]) AS v(id, spec, tenant)"
        " ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at,"
        " tenant = excluded.tenant WHERE webhooks.source = 'config'",
        ids,
        values,
        now,
        [spec_tenant(spec) for spec in values],
    )
    return removed
