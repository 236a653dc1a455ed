"""The ``[storage]`` table: where the outbox lives, a SQLite file (``path``) or a PostgreSQL database (``url``)
that several relays share (CONTRACT §8); and how a database URL is shown without its password."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from relay.config_fields import Fields, SecretResolver, as_nonempty_str, int_at_least, one_of, positive_duration
from relay.errors import Problem
from relay.models import Durability, Secret

_STORAGE_KEYS = ("path", "durability", "retention", "url", "pool_size")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
MAX_POOL_SIZE = 100


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where the outbox lives: a SQLite file (``path``, the default) or, with ``url``, a PostgreSQL database that
    several relays share (CONTRACT §8). ``durability`` is SQLite's alone: on PostgreSQL a commit is as durable as
    the server's ``synchronous_commit`` makes it (on by default; relay never turns it off)."""

    path: Path = Path("var/relay.db")
    durability: Durability = Durability.FULL
    retention: float = 7 * 86400.0
    url: Secret | None = None  # postgresql://user:password@host:5432/db
    pool_size: int = 10  # PostgreSQL connections of this relay

    def describe(self) -> str:
        """Where the store is, for logs and summaries: the path, or the URL without its password."""
        return str(self.path) if self.url is None else redact_url(self.url.reveal())


def parse_storage(raw: Mapping[str, object], problems: list[Problem], secrets: SecretResolver) -> StorageConfig:
    """The ``[storage]`` table; each problem goes into ``problems`` with its key path."""
    f = Fields(raw, "storage", problems, known=_STORAGE_KEYS)
    default = StorageConfig()
    path = f.get("path", as_nonempty_str)
    durability = f.get("durability", one_of(*Durability))
    url = f.get("url", lambda value: _as_postgres_url(secrets(value)))
    pool_size = f.get("pool_size", _as_pool_size)
    if f.present("path") and f.present("url"):
        problems.append(Problem("storage", "set either storage.path or storage.url, not both"))
    elif f.present("url"):
        if f.present("durability"):
            f.problem("durability", "applies to SQLite (storage.path) only: PostgreSQL commits as the server does")
    elif f.present("pool_size"):
        f.problem("pool_size", "applies to PostgreSQL (storage.url) only")
    return StorageConfig(
        path=Path.cwd() / (path if path is not None else default.path),  # relative to the working directory
        durability=Durability(durability) if durability is not None else default.durability,
        retention=f.get("retention", positive_duration) or default.retention,
        url=url,
        pool_size=default.pool_size if pool_size is None else pool_size,
    )


def resolve_storage_url(value: str, *, environ: Mapping[str, str] | None = None) -> Secret:
    """A PostgreSQL URL given outside the file (``relay store copy --to``), read as ``storage.url`` is: literally or
    in a secret form (``env:NAME``, ``file:/path``, ``cred:NAME``, from ``environ``, default ``os.environ``). Raises
    ``ValueError`` saying what is wrong, never showing the value."""
    return _as_postgres_url(SecretResolver(os.environ if environ is None else environ)(value))


def _as_postgres_url(url: Secret) -> Secret:
    """The URL of a PostgreSQL database (the rest of it is the driver's to read, when the store opens); the error
    never shows the value, which holds a password."""
    if not url.reveal().startswith(_POSTGRES_SCHEMES):
        raise ValueError(f"must start with {' or '.join(_POSTGRES_SCHEMES)}")
    return url


def _as_pool_size(value: object) -> int:
    size = int_at_least(1)(value)
    if size > MAX_POOL_SIZE:
        raise ValueError(f"must be at most {MAX_POOL_SIZE}")
    return size


def redact_url(url: str) -> str:
    """A database URL as it may be shown: its password, and a ``password=`` parameter, replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unreadable (the store will say so when it opens): nothing of it is shown
        return "postgresql://***"
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    pairs = [pair for pair in parts.query.split("&") if pair]
    hidden = [f"{name}=***" if (name := pair.partition("=")[0]).lower() == "password" else pair for pair in pairs]
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(hidden)))
