"""The I/O-free half of relay's client (``relay.client``): what an accepted event is, how events get their ids
and are split into requests, what an answer means, and when a request is tried again (its errors are in
``relay.client_errors``).

``Client`` (standard library) and ``AsyncClient`` (aiohttp) do the I/O around these, so the two behave alike.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

import orjson
from tenacity import RetryCallState, retry_if_exception_type, stop_before_delay, wait_exponential, wait_random

from relay import __version__
from relay.client_errors import (
    PartialBatchError,
    RejectedError,
    RelayClientError,
    ServerError,
    Transient,
    UnavailableError,
)
from relay.models import format_datetime, new_event_id

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_MAX_BATCH = 1000  # relay's server.max_batch default
DEFAULT_MAX_BODY_SIZE = 1024 * 1024  # relay's server.max_body_size default
RETRIED_STATUSES = frozenset({502, 503, 504})  # the relay (or a proxy before it) cannot take the request now
USER_AGENT = f"relay-client/{__version__}"
EVENTS_PATH = "/v1/events"

log = logging.getLogger("relay.client")  # a library inside someone's application: the standard logging module


# -- where the relay is ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A relay URL, parsed once: ``http://host:port``, ``https://…`` (an optional path prefix) or ``unix:/path``."""

    url: str  # as given, without a trailing slash: for messages
    unix_path: str | None
    scheme: str
    host: str
    port: int | None
    prefix: str  # a path the API is mounted under, without a trailing slash ("" for none)


def parse_url(url: str) -> Target:
    """Raises ``ValueError`` for anything but ``http://host[:port][/prefix]``, ``https://…`` or ``unix:/path``."""
    url = url.rstrip("/")
    if url.startswith("unix:"):
        if not url[5:]:
            raise ValueError(f"{url!r} names no socket (unix:/path/to/relay.sock)")
        return Target(url, url[5:], "http", "localhost", None, "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not a relay URL (http://host:port, https://… or unix:/path)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return Target(url, None, parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def describe(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is `relay serve` running?)"
    if isinstance(exc, FileNotFoundError):
        return "no such socket (is `relay serve` running?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# -- what is sent ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event the relay stored: its id, and how many deliveries it fanned out to."""

    id: str
    deliveries: int


@dataclass(frozen=True, slots=True)
class Encoded:
    """One event ready to send: its id (made before the first try) and its JSON."""

    id: str
    body: bytes


def new_event(
    type: str,
    data: Any,
    *,
    id: str | None = None,
    tenant: str | None = None,
    ordering_key: str | None = None,
    created_at: str | datetime | None = None,
) -> Encoded:
    """``send``'s arguments as one event (see ``encode_event``)."""
    fields = {"type": type, "data": data, "id": id, "tenant": tenant, "ordering_key": ordering_key}
    return encode_event({**fields, "created_at": created_at})


def encode_event(event: Mapping[str, Any]) -> Encoded:
    """The event with its id (``evt_`` + a ULID when it has none: the same on every try) as compact JSON.

    Fields that are None are left out; ``created_at`` may be a timezone-aware ``datetime``. Raises ``TypeError``
    or ``ValueError`` for what cannot be sent at all, before anything is.
    """
    if not isinstance(event, Mapping):
        raise TypeError(f"an event must be a mapping with 'type' and 'data', not {type(event).__name__}")
    fields = {key: value for key, value in event.items() if value is not None}
    if "id" not in fields:
        fields["id"] = new_event_id()
    event_id = fields["id"]
    if not isinstance(event_id, str):
        raise TypeError(f"an event id must be a string, not {type(event_id).__name__}")
    created_at = fields.get("created_at")
    if isinstance(created_at, datetime):
        if created_at.utcoffset() is None:
            raise ValueError(f"created_at {created_at.isoformat()} has no timezone")
        fields["created_at"] = format_datetime(created_at)
    try:
        body = orjson.dumps(fields)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"event {event_id!r} cannot be sent as JSON: {exc}") from exc
    return Encoded(event_id, body)


def split_batch(events: Sequence[Encoded], max_batch: int, max_body_size: int) -> Iterator[Sequence[Encoded]]:
    """Consecutive runs of at most ``max_batch`` events whose JSON array fits ``max_body_size`` bytes (an event
    too large for it alone goes alone, and the relay refuses it with a 413)."""
    start, size = 0, 2  # the array's brackets
    for index, event in enumerate(events):
        added = len(event.body) + (1 if index > start else 0)  # its comma
        if index > start and (index - start >= max_batch or size + added > max_body_size):
            yield events[start:index]
            start, size, added = index, 2, len(event.body)
        size += added
    if start < len(events):
        yield events[start:]


def batch_body(events: Iterable[Encoded]) -> bytes:
    return b"[" + b",".join(event.body for event in events) + b"]"


def batch_failed(done: Sequence[Accepted], events: Sequence[Encoded], error: RelayClientError) -> NoReturn:
    """Raise for a batch whose request failed after ``done`` were accepted: ``error`` itself when none were, else a
    ``PartialBatchError``; either way ``event_ids`` are the ids not accepted. Call it in the ``except`` block."""
    remaining = [event.id for event in events[len(done) :]]
    if not done:
        error.event_ids = tuple(remaining)
        raise error
    raise PartialBatchError(done, remaining, error) from error


# -- what an answer means ----------------------------------------------------------------------------------------


def answer(url: str, status: int, raw: bytes, *, index_offset: int = 0) -> dict[str, Any] | None:
    """The JSON object of a 2xx answer (None when it has no body), else raises the error it means.

    ``index_offset`` is where the request's events start in the caller's batch: error paths are moved by it.
    """
    parsed = _json(raw)
    if 200 <= status < 300:
        if raw and not isinstance(parsed, dict):
            raise ServerError(f"{url} did not answer like a relay (HTTP {status}, not a JSON object)", status=status)
        return parsed if isinstance(parsed, dict) else None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        message = f"{url} did not answer like a relay (HTTP {status})"
        if 400 <= status < 500:
            raise RejectedError(status, "http_error", message)
        raise ServerError(message, status=status)
    code, message = str(error.get("code") or "error"), str(error.get("message") or "")
    details = [item for item in error.get("details") or [] if isinstance(item, dict)]
    if 400 <= status < 500:
        if index_offset and details:
            details = [{**item, "path": _moved(str(item.get("path", "")), index_offset)} for item in details]
            message = "; ".join(f"{item['path']}: {item.get('message', '')}" for item in details)
        raise RejectedError(status, code, message, details)
    if status in RETRIED_STATUSES:
        raise UnavailableError(f"{status} {code}: {message}", status=status)
    raise ServerError(f"{status} {code}: {message}", status=status)


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (an HTTP date is ignored: the backoff applies)."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 3600 else None


def transient_answer(status: int, raw: bytes, retry_after_header: str | None) -> Transient | None:
    """The ``Transient`` a 502, 503 or 504 answer means (worth trying again later), else None."""
    if status not in RETRIED_STATUSES:
        return None
    parsed = _json(raw)
    error = parsed.get("error") if isinstance(parsed, dict) else None
    detail = f" {error.get('code')}: {error.get('message')}" if isinstance(error, dict) else ""
    return Transient(f"HTTP {status}{detail}", status=status, retry_after=retry_after(retry_after_header))


def accepted(data: Any, sent: Sequence[Encoded], url: str) -> list[Accepted]:
    """The relay's ``data`` for ``sent`` (one object for one event, else a list in the same order)."""
    items = data if isinstance(data, list) else [data]
    if len(items) != len(sent) or not all(isinstance(item, dict) and "id" in item for item in items):
        raise ServerError(f"{url} did not answer like a relay (the accepted events do not match those sent)")
    return [Accepted(str(item["id"]), int(item.get("deliveries") or 0)) for item in items]


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


_LEADING_INDEX = re.compile(r"\[(\d+)\]")


def _moved(path: str, offset: int) -> str:
    match = _LEADING_INDEX.match(path)
    return f"[{int(match.group(1)) + offset}]{path[match.end() :]}" if match else path


# -- trying again ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long the client keeps trying a send that fails for a reason that may pass: a refused connection,
    a timeout, a 502, 503 or 504.

    No try starts more than ``total`` seconds after the first (``total=0``: one try). Waits grow from ``initial``
    by doubling, up to ``maximum``, plus up to ``initial`` of jitter; a ``Retry-After`` in seconds is waited at
    least.
    """

    total: float = 30.0
    initial: float = 0.2
    maximum: float = 5.0

    def __post_init__(self) -> None:
        if self.total < 0 or self.initial < 0 or self.maximum < self.initial:
            raise ValueError("RetryPolicy needs total >= 0 and 0 <= initial <= maximum")

    def settings(self) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying`` or ``AsyncRetrying``: give up with ``UnavailableError``."""
        wait = wait_exponential(multiplier=self.initial, max=self.maximum) + wait_random(0, self.initial)
        return {
            "stop": stop_before_delay(self.total),
            "wait": _WaitAtLeastRetryAfter(wait),
            "retry": retry_if_exception_type(Transient),
            "before_sleep": _log_retry,
            "retry_error_callback": _give_up,
        }


@dataclass(frozen=True, slots=True)
class _WaitAtLeastRetryAfter:
    backoff: Callable[[RetryCallState], float]

    def __call__(self, state: RetryCallState) -> float:
        wait = self.backoff(state)
        failure = _failure(state)
        if failure.retry_after is not None:
            wait = max(wait, failure.retry_after)
        return wait


def _failure(state: RetryCallState) -> Transient:
    """The ``Transient`` the last try raised (tenacity retries nothing else)."""
    failure = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(failure, Transient), failure
    return failure


def _log_retry(state: RetryCallState) -> None:
    log.info("relay unavailable (%s): trying again in %.2fs", _failure(state).reason, state.upcoming_sleep)


def _give_up(state: RetryCallState) -> Any:
    failure = _failure(state)
    tries = state.attempt_number
    took = state.seconds_since_start or 0.0
    raise UnavailableError(
        f"gave up after {tries} {'try' if tries == 1 else 'tries'} in {took:.1f}s: {failure.reason}",
        status=failure.status,
        attempts=tries,
    ) from failure


# -- what both clients share --------------------------------------------------------------------------------------


class BaseClient:
    """What ``Client`` and ``AsyncClient`` share: where the relay is, the key, and the limits they keep to.

    ``timeout`` bounds each request; ``retry`` says how long sends are tried again; a batch goes in requests of
    at most ``max_batch`` events and ``max_body_size`` bytes (set them to the relay's ``server`` settings).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        if max_batch < 1 or max_body_size < 1 or timeout <= 0:
            raise ValueError("timeout must be positive, max_batch and max_body_size at least 1")
        self.target = parse_url(url)
        self.url = self.target.url
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_batch = max_batch
        self.max_body_size = max_body_size

    def _headers(self, *, json_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers


def request_of(
    path: str, query: Mapping[str, str | int | None] | None, body: Mapping[str, Any] | None
) -> tuple[str, bytes | None]:
    """The target (``path?query``, None values left out) and the JSON body of one API call."""
    params = {k: str(v) for k, v in (query or {}).items() if v is not None}
    target = f"{path}?{urlencode(params)}" if params else path
    return target, None if body is None else orjson.dumps(dict(body))
