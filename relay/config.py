"""The configuration: ``load_config(path) -> Config``, the only place that reads files or the environment.

Every problem is reported with its key path (``webhooks[1].auth.token_url``); TOML syntax errors with line and
column. The types below are frozen; the running daemon swaps a whole ``Config`` on reload.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import relay
from relay.config_fields import (
    Fields,
    SecretResolver,
    as_bool,
    as_nonempty_str,
    int_at_least,
    one_of,
    positive_duration,
)
from relay.config_storage import StorageConfig, parse_storage
from relay.config_webhooks import MAX_RETRY_STEPS, WEBHOOK_ID, parse_webhook
from relay.errors import ConfigError, Problem
from relay.models import Ordering, Secret, Webhook
from relay.units import parse_duration, parse_size

__all__ = [
    "Config",
    "DeliveryConfig",
    "Listen",
    "ServerConfig",
    "StorageConfig",
    "load_config",
    "parse_listen",
    "parse_webhook",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class Listen:
    """Where a server listens: a TCP ``host:port`` or a ``unix:/path`` socket."""

    host: str | None = None
    port: int | None = None
    path: str | None = None  # unix socket

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if self.host and ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: Listen = field(default_factory=lambda: Listen("127.0.0.1", 8080))
    health_listen: Listen | None = None
    api_keys: tuple[Secret, ...] = ()
    max_body_size: int = 1024 * 1024
    max_batch: int = 1000
    request_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    max_connections: int = 1024
    event_loop: str = "auto"  # "auto": uvloop when installed, else asyncio's own; "asyncio"; "uvloop"
    metrics_cache_ttl: float = 10.0  # how long a count of the store's deliveries serves scrapes of /metrics


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
class TenantsConfig:
    max_webhooks: int = 50  # webhooks one tenant may have (API-created and config-declared together)


@dataclass(frozen=True, slots=True)
class UiConfig:
    enabled: bool = True
    session_ttl: float = 8 * 3600.0
    # Where portal links point: "https://relay.example.com" behind a proxy; None: the address the request came to.
    public_url: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    webhooks: tuple[Webhook, ...] = ()
    source_path: Path | None = None
    tenants: TenantsConfig = field(default_factory=TenantsConfig)
    ui: UiConfig = field(default_factory=UiConfig)

    def webhook_map(self) -> Mapping[str, Webhook]:
        return {w.id: w for w in self.webhooks}


_TOP_KEYS = ("server", "storage", "delivery", "webhooks", "tenants", "ui")
# fmt: off
_SERVER_KEYS = (
    "listen", "health_listen", "api_keys", "max_body_size", "max_batch", "request_timeout",
    "shutdown_timeout", "max_connections", "event_loop", "metrics_cache_ttl",
)
_DELIVERY_KEYS = (
    "timeout", "concurrency", "per_webhook_concurrency", "retry_schedule", "jitter", "redrive_interval",
    "redrive_max_age", "allow_http", "allow_private_networks", "user_agent",
)
# fmt: on
T = TypeVar("T")
_TOML_ERROR = re.compile(r"^(?P<message>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$")


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the TOML file at ``path``; raise one ``ConfigError`` listing every problem.

    Secret references (``env:``, ``file:``, ``cred:``) are read from ``environ`` (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    raw = _read_toml(Path(path))
    problems: list[Problem] = []
    secrets = SecretResolver(environ)
    top = Fields(raw, "", problems, known=_TOP_KEYS)
    server = _server(top.table("server") or {}, problems, secrets)
    storage = parse_storage(top.table("storage") or {}, problems, secrets)
    delivery = _delivery(top.table("delivery") or {}, problems)
    webhooks = _webhooks(raw.get("webhooks"), problems, delivery, environ)
    tenants = _tenants(top.table("tenants") or {}, problems)
    ui = _ui(top.table("ui") or {}, problems)
    if problems:
        raise ConfigError(problems)
    return Config(server, storage, delivery, webhooks, source_path=Path(path).absolute(), tenants=tenants, ui=ui)


def _read_toml(path: Path) -> dict[str, object]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("", f"{path}: no such file")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem("", f"{path}: not UTF-8 text")]) from None
    except OSError as exc:
        raise ConfigError([Problem("", f"{path}: cannot read: {exc.strerror or exc}")]) from None
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:  # ValueError: an integer over 4300 digits
        match = _TOML_ERROR.match(str(exc))
        if match is None:
            where, message = "", str(exc)
        elif match["line"] is None:
            where, message = " at end of document", match["message"]
        else:
            where, message = f" at line {match['line']}, column {match['column']}", match["message"]
        raise ConfigError([Problem("", f"{path}: TOML syntax error{where}: {message}")]) from None


def parse_listen(value: object) -> Listen:
    """``host:port`` (IPv6 as ``[::1]:8080``, port 0-65535) or ``unix:/path``."""
    text = as_nonempty_str(value)
    if text.startswith("unix:"):
        if not text[5:]:
            raise ValueError('must name a socket path after "unix:"')
        return Listen(path=text[5:])
    expected = 'must be "host:port" (IPv6 as "[::1]:8080") or "unix:/path"'
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdecimal() or not port.isascii():
        raise ValueError(expected)
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError(f"{host} is not an IPv6 address") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(expected)
    if len(port) > 5 or int(port) > 65535:
        raise ValueError("port must be 0-65535")
    return Listen(host=host, port=int(port))


def _server(raw: Mapping[str, object], problems: list[Problem], secrets: SecretResolver) -> ServerConfig:
    f = Fields(raw, "server", problems, known=_SERVER_KEYS)
    default = ServerConfig()
    listen = f.get("listen", parse_listen) or default.listen
    health_listen = f.get("health_listen", parse_listen)
    if health_listen == listen and (listen.path or listen.port):
        f.problem("health_listen", "must differ from server.listen (omit it to serve health on listen)")
    api_keys = f.items(
        "api_keys", secrets, required='required: a list of keys such as ["env:RELAY_API_KEY"]', non_empty=True
    )
    return ServerConfig(
        listen=listen,
        health_listen=health_listen,
        api_keys=tuple(api_keys or ()),
        max_body_size=_or(f.get("max_body_size", parse_size), default.max_body_size),
        max_batch=_or(f.get("max_batch", int_at_least(1)), default.max_batch),
        request_timeout=_or(f.get("request_timeout", positive_duration), default.request_timeout),
        shutdown_timeout=_or(f.get("shutdown_timeout", parse_duration), default.shutdown_timeout),
        max_connections=_or(f.get("max_connections", int_at_least(1)), default.max_connections),
        event_loop=_event_loop(f),
        metrics_cache_ttl=_or(f.get("metrics_cache_ttl", parse_duration), default.metrics_cache_ttl),
    )


def _event_loop(f: Fields) -> str:
    choice = _or(f.get("event_loop", one_of("auto", "asyncio", "uvloop")), "auto")
    if choice == "uvloop" and not uvloop_installed():
        install = "pip install 'relay-webhooks[uvloop]'"
        f.problem("event_loop", f'uvloop is not installed ({install}), use "auto" or "asyncio"')
    return choice


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop ``server.event_loop`` asks for: None for asyncio's own."""
    if choice == "asyncio" or (choice == "auto" and not uvloop_installed()):
        return None
    import uvloop

    return uvloop.new_event_loop


def _delivery(raw: Mapping[str, object], problems: list[Problem]) -> DeliveryConfig:
    f = Fields(raw, "delivery", problems, known=_DELIVERY_KEYS)
    default = DeliveryConfig()
    retry_schedule = f.items("retry_schedule", parse_duration, non_empty=True, max_items=MAX_RETRY_STEPS)
    user_agent = f.get("user_agent", _as_user_agent) or default.user_agent
    return DeliveryConfig(
        timeout=_or(f.get("timeout", positive_duration), default.timeout),
        concurrency=_or(f.get("concurrency", int_at_least(1)), default.concurrency),
        per_webhook_concurrency=_or(f.get("per_webhook_concurrency", int_at_least(1)), default.per_webhook_concurrency),
        retry_schedule=tuple(retry_schedule) if retry_schedule is not None else default.retry_schedule,
        jitter=_or(f.get("jitter", _as_jitter), default.jitter),
        redrive_interval=_or(f.get("redrive_interval", positive_duration), default.redrive_interval),
        redrive_max_age=_or(f.get("redrive_max_age", positive_duration), default.redrive_max_age),
        allow_http=_or(f.get("allow_http", as_bool), default.allow_http),
        allow_private_networks=_or(f.get("allow_private_networks", as_bool), default.allow_private_networks),
        user_agent=user_agent.replace("{version}", relay.__version__),
    )


def _tenants(raw: Mapping[str, object], problems: list[Problem]) -> TenantsConfig:
    f = Fields(raw, "tenants", problems, known=("max_webhooks",))
    return TenantsConfig(max_webhooks=_or(f.get("max_webhooks", int_at_least(1)), TenantsConfig().max_webhooks))


def _ui(raw: Mapping[str, object], problems: list[Problem]) -> UiConfig:
    f = Fields(raw, "ui", problems, known=("enabled", "session_ttl", "public_url"))
    default = UiConfig()
    return UiConfig(
        enabled=_or(f.get("enabled", as_bool), default.enabled),
        session_ttl=_or(f.get("session_ttl", positive_duration), default.session_ttl),
        public_url=f.get("public_url", _as_public_url),
    )


def _as_public_url(value: object) -> str:
    url = as_nonempty_str(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError('must be an http(s) URL with no query, such as "https://relay.example.com"')
    return url.rstrip("/")


def _webhooks(
    raw: object, problems: list[Problem], delivery: DeliveryConfig, environ: Mapping[str, str]
) -> tuple[Webhook, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem("webhooks", "must be an array of tables ([[webhooks]])"))
        return ()
    webhooks: list[Webhook] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw):
        path = f"webhooks[{index}]"
        before = len(problems)
        webhook = parse_webhook(
            item, path, problems, delivery=delivery, resolve_secrets=True, source="config", environ=environ
        )
        webhook_id = item.get("id") if isinstance(item, Mapping) else None
        if isinstance(webhook_id, str) and WEBHOOK_ID.fullmatch(webhook_id):
            # Name the webhook too: in a long file its id is easier to find than its index. The key path stays whole.
            problems[before:] = [Problem(p.path, f'{p.message} (webhook "{webhook_id}")') for p in problems[before:]]
        if isinstance(webhook_id, str) and webhook_id in first_index:
            problems.append(
                Problem(f"{path}.id", f'duplicate id "{webhook_id}" (also webhooks[{first_index[webhook_id]}])')
            )
        elif isinstance(webhook_id, str):
            first_index[webhook_id] = index
        if webhook is not None:
            webhooks.append(webhook)
    return tuple(webhooks)


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _as_jitter(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if not 0 <= value < 1:
        raise ValueError("must be at least 0 and less than 1")
    return float(value)


def _as_user_agent(value: object) -> str:
    text = as_nonempty_str(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError("must not contain control characters")
    return text


def summarize(config: Config) -> str:
    """What ``relay check-config`` prints: where it listens and stores, one line per webhook, no secret."""
    server, storage, delivery = config.server, config.storage, config.delivery
    health = str(server.health_listen) if server.health_listen else "on listen"
    retries = " ".join(format_duration(d) for d in delivery.retry_schedule)
    kept = f"durability {storage.durability}" if storage.url is None else f"{storage.pool_size} connections"
    lines = [
        f"listen: {server.listen} (health: {health}), {len(server.api_keys)} API key(s)",
        f"store: {storage.describe()} ({kept}, retention {format_duration(storage.retention)})",
        f"delivery: timeout {format_duration(delivery.timeout)}, concurrency {delivery.concurrency} "
        f"({delivery.per_webhook_concurrency} per webhook), retries {retries}, "
        f"redrive every {format_duration(delivery.redrive_interval)} "
        f"until {format_duration(delivery.redrive_max_age)} old"
        + (", http allowed" if delivery.allow_http else "")
        + (", private networks allowed" if delivery.allow_private_networks else ""),
        f"tenants: at most {config.tenants.max_webhooks} webhooks each; dashboard "
        + (f"on /ui/ (sessions {format_duration(config.ui.session_ttl)})" if config.ui.enabled else "off"),
        f"webhooks: {len(config.webhooks)}",
    ]
    for w in config.webhooks:
        auth = type(w.auth).__name__.removesuffix("Auth").lower() if w.auth is not None else "none"
        events = ",".join(w.events) if w.events else "*"
        inactive = " (inactive)" if not w.is_active else ""
        body = f"format={w.format}" + (f" sent_at_field={w.sent_at_field}" if w.sent_at_field else "")
        # What the webhook does, its own settings or [delivery]'s.
        schedule = ",".join(format_duration(d) for d in w.retry_schedule or delivery.retry_schedule)
        timeout = format_duration(w.timeout if w.timeout is not None else delivery.timeout)
        rate = f" rate_limit={w.rate_limit:g}/s" if w.rate_limit is not None else ""
        tenant = f" tenant={w.tenant}" if w.tenant is not None else ""
        tenant += f" ordering={w.ordering}" if w.ordering is not Ordering.NONE else ""
        lines.append(
            f"  {w.id}{inactive}: {_redact_query(w.url)} events={events} signature={w.signature} {body} "
            f"auth={auth} retries={schedule} timeout={timeout}{rate}{tenant}"
        )
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """``90.0`` -> ``"90s"``, ``3600.0`` -> ``"1h"``, ``0.25`` -> ``"250ms"``: the config file's own units."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _redact_query(url: str) -> str:
    """Query strings often carry tokens: show their keys, never their values."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    keys = "&".join(f"{pair.partition('=')[0]}=***" for pair in parts.query.split("&"))
    return urlunsplit(parts._replace(query=keys))


def load_client_settings(path: str | Path, *, environ: Mapping[str, str] | None = None) -> tuple[Listen, Secret | None]:
    """What the management commands need from the file: where the daemon listens, and its first API key.

    Only ``server.listen`` and ``server.api_keys[0]`` are read (the key's ``env:``/``file:``/``cred:`` reference
    resolved), so the CLI works where the webhooks' own secrets are not set.
    """
    environ = os.environ if environ is None else environ
    raw = _read_toml(Path(path))
    server = raw.get("server", {})
    if not isinstance(server, Mapping):
        raise ConfigError([Problem("server", "must be a table")])
    problems: list[Problem] = []
    listen = ServerConfig().listen
    try:
        listen = parse_listen(server["listen"]) if "listen" in server else listen
    except ValueError as exc:
        problems.append(Problem("server.listen", str(exc)))
    key = None
    keys = server.get("api_keys")
    if isinstance(keys, list) and keys:
        try:
            key = SecretResolver(environ)(keys[0])
        except ValueError as exc:
            problems.append(Problem("server.api_keys[0]", str(exc)))
    if problems:
        raise ConfigError(problems)
    return listen, key
