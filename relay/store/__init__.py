"""Storage: ``open_store`` picks the backend for the configuration; everything else imports the seam
(``relay.store.base``), never a backend module."""

from __future__ import annotations

from relay.config import StorageConfig
from relay.store.base import (
    AttemptResult,
    EventPage,
    History,
    IngestResult,
    NewEvent,
    Outbox,
    Page,
    RefreshTokens,
    Room,
    Store,
    StoredWebhook,
    Webhooks,
)

__all__ = [
    "AttemptResult",
    "EventPage",
    "History",
    "IngestResult",
    "NewEvent",
    "Outbox",
    "Page",
    "RefreshTokens",
    "Room",
    "Store",
    "StoredWebhook",
    "Webhooks",
    "open_store",
]


def open_store(config: StorageConfig) -> Store:
    """The store the configuration names (not yet opened: the daemon calls ``open``)."""
    from relay.store.sqlite import SqliteStore

    return SqliteStore(config.path, config.durability)
