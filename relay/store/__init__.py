"""Storage: ``open_store`` picks the backend for the configuration; everything else imports the seam
(``relay.store.base``), never a backend module."""

from __future__ import annotations

from relay.config import StorageConfig
from relay.store.base import (
    Activity,
    AttemptResult,
    EventPage,
    History,
    HourCount,
    IngestResult,
    Jobs,
    NewEvent,
    Outbox,
    Page,
    RefreshTokens,
    Room,
    Sessions,
    Signals,
    Store,
    StoredWebhook,
    TenantKey,
    TenantRemoved,
    Tenants,
    TenantSummary,
    WebhookActivity,
    Webhooks,
)

__all__ = [
    "Activity",
    "AttemptResult",
    "EventPage",
    "History",
    "HourCount",
    "IngestResult",
    "Jobs",
    "NewEvent",
    "Outbox",
    "Page",
    "RefreshTokens",
    "Room",
    "Sessions",
    "Signals",
    "Store",
    "StoredWebhook",
    "TenantKey",
    "TenantRemoved",
    "TenantSummary",
    "Tenants",
    "WebhookActivity",
    "Webhooks",
    "migrate_store",
    "open_store",
]


def open_store(config: StorageConfig) -> Store:
    """The store the configuration names (not yet opened: the daemon calls ``open``): PostgreSQL when
    ``storage.url`` is set, else the SQLite file at ``storage.path``."""
    if config.url is not None:
        from relay.store.postgres import PostgresStore

        return PostgresStore(config.url, config.pool_size)
    from relay.store.sqlite import SqliteStore

    return SqliteStore(config.path, config.durability)


async def migrate_store(config: StorageConfig) -> tuple[int, int]:
    """``relay migrate``: bring the configured store's schema up to date and nothing else (no writer, no
    scheduler); the schema versions before and after. Raises ``StoreError`` (``StoreUnavailable``) as ``open``."""
    if config.url is not None:
        from relay.store.postgres import migrate_only

        return await migrate_only(config.url)
    from relay.store.sqlite import SqliteStore

    return await SqliteStore(config.path, config.durability).migrate_only()
