"""Value types shared by every module: statuses, webhooks, events, deliveries, attempts, ids, timestamps.

Values are frozen slotted dataclasses, except the hot-path records made once per event or per attempt (events,
claims, attempts, ingest and attempt results, retry decisions): building a frozen one costs about 1 µs against
0.3 µs, several times per delivery. Nothing changes them after they are built.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]  # 10 bits -> two characters
_RANDOM_BITS = (1 << 80) - 1
# Ids need to be unique and sorted, not secret. The random part starts at 80 bits drawn from the OS and counts up
# by one per id (the spec's monotonic ULIDs): ids made in the same millisecond sort in the order they were made,
# and only the last two characters change from one id to the next, so the rest of the text is encoded once per
# 1,024 ids. ``next()`` on a count is atomic, so the store's writer thread can make ids alongside the event loop.
_COUNTER = itertools.count(int.from_bytes(os.urandom(10)))
_time_part: tuple[int, str] = (-1, "")  # the last millisecond seen and its 10 characters
_high_part: tuple[int, str] = (-1, "")  # the random part's top 70 bits last seen and their 14 characters


def new_ulid(now: float | None = None) -> str:
    """26 Crockford base32 chars (lowercase): 48 bits of milliseconds then 80 bits of a counter that started at
    a random value, so ids sort by time, and by creation within one millisecond."""
    global _time_part, _high_part
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    part = _time_part  # each global is read once: another thread may replace it meanwhile
    if part[0] != millis:  # ids come in bursts: the time part is encoded once per millisecond
        part = _time_part = (millis, "".join([_PAIRS[(millis >> shift) & 1023] for shift in (40, 30, 20, 10, 0)]))
    bits = next(_COUNTER) & _RANDOM_BITS
    top = bits >> 10
    high = _high_part
    if high[0] != top:
        high = _high_part = (top, "".join([_PAIRS[(top >> shift) & 1023] for shift in (60, 50, 40, 30, 20, 10, 0)]))
    return part[1] + high[1] + _PAIRS[bits & 1023]


def new_id(prefix: str, now: float | None = None) -> str:
    return f"{prefix}_{new_ulid(now)}"


def new_event_id(now: float | None = None) -> str:
    """The id relay gives an event posted without one."""
    return new_id("evt", now)


_last_time: tuple[int, str] = (-1, "")  # the last millisecond formatted, and its text


def format_time(ts: float | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, millisecond precision."""
    global _last_time
    if ts is None:
        return None
    # The millisecond datetime.fromtimestamp lands in: microseconds rounded half to even, carried into the second.
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    millis = int(whole) * 1000 + micros // 1000
    last = _last_time  # read once: the store's writer thread formats times too
    if last[0] != millis:  # times come in bursts: ~1.5 µs saved for each one in the same millisecond
        text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        last = _last_time = (millis, text)
    return last[1]


def format_datetime(dt: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; keeps the sub-second precision the producer gave."""
    dt = dt.astimezone(UTC)
    spec = "seconds" if dt.microsecond == 0 else "milliseconds" if dt.microsecond % 1000 == 0 else "microseconds"
    return dt.isoformat(timespec=spec).replace("+00:00", "Z")


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z")


def parse_datetime(value: object) -> datetime | None:
    """An RFC 3339 timestamp as a datetime in UTC; None when ``value`` is not one (or no datetime can hold it)."""
    if not isinstance(value, str) or not (match := _RFC3339.match(value)):
        return None
    leap = match.group(1) == "60"
    if leap:  # a leap second (RFC 3339 §5.7): a datetime cannot hold it, so it is read as the second before
        value = f"{value[:17]}59{value[19:]}"
    try:
        # Years 1 and 9999 with an offset fall outside what a datetime can hold once moved to UTC.
        moment = datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    if leap and (moment.hour, moment.minute) != (23, 59):
        return None  # leap seconds are inserted only at the end of a UTC day
    return moment


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # a newer event of its ordering key replaced it (``ordering = "latest"``)


class Ordering(StrEnum):
    """What a webhook does with events' ``ordering_key`` (CONTRACT §11)."""

    NONE = "none"
    FIFO = "fifo"  # per key, one attempt at a time, in ingest order
    LATEST = "latest"  # per key, only the newest event matters: older unfinished deliveries end superseded


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    TLS_ERROR = "tls_error"
    OAUTH_ERROR = "oauth_error"
    BLOCKED_DESTINATION = "blocked_destination"
    HTTP_ERROR = "http_error"
    INTERNAL_ERROR = "internal_error"  # relay could not make the attempt (a fault of its own, logged in full)


class SignatureScheme(StrEnum):
    STANDARD = "standard"  # Standard Webhooks v1: HMAC-SHA256 with a whsec_ secret
    STANDARD_ED25519 = "standard-ed25519"  # Standard Webhooks v1a: ed25519 with a whsk_ signing key
    HMAC_SHA256 = "hmac-sha256"
    NONE = "none"


class BodyFormat(StrEnum):
    ENVELOPE = "envelope"
    DATA = "data"
    FLAT = "flat"  # the envelope, flattened
    DATA_FLAT = "data-flat"  # the data, flattened


class Durability(StrEnum):
    FULL = "full"
    NORMAL = "normal"


class Secret:
    """A secret value that never shows itself in a repr, a log line or an f-string by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class BearerAuth:
    token: Secret


@dataclass(frozen=True, slots=True)
class HeaderAuth:
    name: str
    value: Secret


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: Secret


@dataclass(frozen=True, slots=True)
class OAuth2Auth:
    grant: str  # "client_credentials" | "refresh_token"
    token_url: str
    client_id: str
    client_secret: Secret | None = None
    scope: str | None = None
    audience: str | None = None
    extra_params: Mapping[str, str] = field(default_factory=dict)
    client_auth: str = "basic"  # "basic" | "post"
    refresh_token: Secret | None = None


Auth = BearerAuth | HeaderAuth | BasicAuth | OAuth2Auth


@dataclass(frozen=True, slots=True)
class Webhook:
    """A subscribed endpoint, declared in the config file (``source="config"``) or through the API."""

    id: str
    url: str
    events: tuple[str, ...] = ()
    secret: Secret | None = None
    signature: SignatureScheme = SignatureScheme.NONE
    format: BodyFormat = BodyFormat.ENVELOPE
    sent_at_field: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_schedule: tuple[float, ...] | None = None
    timeout: float | None = None
    rate_limit: float | None = None  # attempts per second
    auth: Auth | None = None
    description: str | None = None
    is_active: bool = True
    source: str = "config"  # "config" | "api"
    tenant: str | None = None  # the customer it belongs to (CONTRACT §9); None: platform-wide
    ordering: Ordering = Ordering.NONE  # what its deliveries of events with an ordering key keep (CONTRACT §11)
    created_at: float | None = None
    # During a secret rotation the previous secret keeps signing until this time.
    previous_secret: Secret | None = None
    previous_secret_until: float | None = None

    def matches(self, event_type: str) -> bool:
        return matches_filter(self.events, event_type)

    def signing_secrets(self, now: float) -> list[Secret]:
        secrets = [self.secret] if self.secret is not None else []
        if self.previous_secret is not None and (self.previous_secret_until or 0) > now:
            secrets.append(self.previous_secret)
        return secrets


# An event type or event id: 1–128 characters of ``[A-Za-z0-9_.:-]`` (CONTRACT §4), matched with ``fullmatch``.
EVENT_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# An ordering key: 1-256 characters, no control characters (Unicode Cc: C0, DEL and C1; CONTRACT §11).
ORDERING_KEY = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,256}")
ORDERING_KEY_RULE = "must be a string of 1-256 characters without control characters"
# A tenant id: 1-64 characters of ``[A-Za-z0-9_.:-]`` (CONTRACT §9), matched with ``fullmatch``.
TENANT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
TENANT_ID_RULE = "must be 1-64 characters of [A-Za-z0-9_.:-]"


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose objects a caller may see and change (CONTRACT §9): every tenant's and the platform's (``tenant`` None:
    an admin key), or one tenant's alone (a tenant key, a portal link, or an admin list asked ``?tenant=``).

    Every scoped read and write of the store and the Registry takes one and applies it itself, so that no handler
    has a filter to remember. Inside one tenant, an object of another tenant or a platform-wide one is not there.
    """

    tenant: str | None = None

    def sees(self, tenant: str | None) -> bool:
        """Whether an object of ``tenant`` (None: platform-wide) is inside this scope."""
        return self.tenant is None or tenant == self.tenant


EVERYTHING = Scope()


def matches_filter(patterns: tuple[str, ...], event_type: str) -> bool:
    """Exact types, ``prefix.*`` (any type starting ``prefix.``), ``*``; no patterns means every type."""
    if not patterns:
        return True
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Event:
    id: str
    type: str
    created_at: str  # RFC 3339, UTC, normalised
    data: bytes  # the payload as compact JSON
    ingested_at: float
    tenant: str | None = None
    ordering_key: str | None = None


@dataclass(frozen=True, slots=True)
class EventSummary:
    """An event as a list shows it: without its payload, with how many deliveries it has (replays included)."""

    id: str
    type: str
    created_at: str  # RFC 3339, UTC, normalised
    ingested_at: float
    deliveries: int
    tenant: str | None = None


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Attempt:
    number: int
    started_at: float
    duration_ms: float
    status_code: int | None
    error: ErrorKind | None
    error_detail: str | None
    response_body: str | None
    next_attempt_at: float | None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event_id: str
    webhook_id: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    attempts: tuple[Attempt, ...] = ()


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Lease:
    """A claim's hold on one delivery: whose it is, until when, and the store's own handle on the delivery (``ref``,
    for the store alone). A result is recorded only while the delivery still holds this lease."""

    owner: str
    until: float
    ref: int
    keyed: bool = False  # the delivery holds its ordering key: its result may let the key move on


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Claim:
    """A delivery leased for one attempt, with what the attempt needs."""

    delivery_id: str
    webhook_id: str
    attempt_number: int
    created_at: float
    event: Event
    lease: Lease
