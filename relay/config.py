"""The configuration: ``load_config(path) -> Config``, the only place that reads files or the environment.

Every problem is reported with its key path (``webhooks[1].auth.token_url``); TOML syntax errors with line and
column. The types below are frozen; the running daemon swaps a whole ``Config`` on reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from relay.models import Durability, Secret, Webhook


@dataclass(frozen=True, slots=True)
class Listen:
    """Where a server listens: a TCP ``host:port`` or a ``unix:/path`` socket."""

    host: str | None = None
    port: int | None = None
    path: str | None = None  # unix socket

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: Listen = field(default_factory=lambda: Listen("127.0.0.1", 8080))
    health_listen: Listen | None = None
    api_keys: tuple[Secret, ...] = ()
    max_body_size: int = 1024 * 1024
    max_batch: int = 1000
    request_timeout: float = 30.0
    shutdown_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    path: Path = Path("var/relay.db")
    durability: Durability = Durability.FULL
    retention: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    timeout: float = 10.0
    concurrency: int = 256
    per_webhook_concurrency: int = 16
    retry_schedule: tuple[float, ...] = (0.0, 60.0, 300.0, 1800.0, 7200.0)
    jitter: float = 0.1
    redrive_interval: float = 3600.0
    redrive_max_age: float = 7 * 86400.0
    allow_http: bool = False
    allow_private_networks: bool = False
    user_agent: str = "relay/{version}"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    webhooks: tuple[Webhook, ...] = ()
    source_path: Path | None = None

    def webhook_map(self) -> Mapping[str, Webhook]:
        return {w.id: w for w in self.webhooks}
