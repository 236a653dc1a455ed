"""Ingest: turn a request body into validated events and their fan-out, or a list of problems by path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from relay.errors import Problem, RelayError, ValidationError
from relay.models import (
    EVENT_TOKEN,
    ORDERING_KEY,
    ORDERING_KEY_RULE,
    TENANT_ID,
    TENANT_ID_RULE,
    format_datetime,
    format_time,
    new_event_id,
    parse_datetime,
)
from relay.registry import Registry
from relay.scheduler import Scheduler
from relay.store import IngestResult, NewEvent, Outbox

_FIELDS = frozenset({"type", "data", "id", "created_at", "tenant", "ordering_key"})
MAX_DEPTH = 253  # levels of arrays and objects in ``data`` (see ``_encode_data``)


class InvalidJson(RelayError):
    """The body does not parse as JSON; the message says where."""


class TooLarge(RelayError):
    """A batch holds more events than ``max_batch``."""


@dataclass(frozen=True, slots=True)
class Parsed:
    events: list[NewEvent]
    batch: bool


def parse_body(body: bytes, *, now: float, max_batch: int, registry: Registry, tenant: str | None = None) -> Parsed:
    """Parse and validate an ingest body (one event object or an array of them), all or nothing.

    ``tenant``: the tenant of the key that posted it. Its events belong to that tenant; one naming another is a
    problem on ``tenant``. An admin key (None) posts events of any tenant, or of none."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from exc
    if isinstance(value, list):
        if len(value) > max_batch:
            raise TooLarge(f"a batch holds at most {max_batch} events, this one {len(value)}")
        if not value:
            raise ValidationError([Problem("", "a batch must hold at least one event")])
        items, batch = value, True
    elif isinstance(value, dict):
        items, batch = [value], False
    else:
        raise ValidationError([Problem("", "the body must be an event object or an array of events")])

    problems: list[Problem] = []
    events: list[NewEvent] = []
    seen: dict[str, int] = {}  # id -> index of the item that first had it
    ingest_time = format_time(now) or ""
    for index, item in enumerate(items):
        event = _valid_event(item, now, ingest_time, registry, tenant)
        if event is None:  # something is wrong with it: the checked path names every problem
            event = _parse_event(item, _path(index, batch), now, ingest_time, problems, registry, tenant)
            if event is None:
                continue
        if event.id in seen:
            first = _path(seen[event.id], batch) or "the body"
            problems.append(Problem(_join(_path(index, batch), "id"), f"duplicates the id of {first}"))
            continue
        seen[event.id] = index
        events.append(event)
    if problems:
        raise ValidationError(problems)
    return Parsed(events, batch)


def _path(index: int, batch: bool) -> str:
    return f"[{index}]" if batch else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _valid_event(item: Any, now: float, ingest_time: str, registry: Registry, tenant: str | None) -> NewEvent | None:
    """The event, when ``item`` is one with nothing wrong; None otherwise (``_parse_event`` then says what).

    The fast path of a large batch: the same checks as ``_parse_event``, without collecting problems.
    """
    if type(item) is not dict or not _FIELDS.issuperset(item):
        return None
    event_type = item.get("type")
    if type(event_type) is not str or not _valid_type(event_type):
        return None
    data = item.get("data")
    if type(data) is not dict and type(data) is not list:
        return None
    encoded = _encode_data(data)
    if encoded is None:
        return None
    event_id = item.get("id")
    generated = event_id is None
    if generated:
        event_id = new_event_id(now)
    elif type(event_id) is not str or not EVENT_TOKEN.fullmatch(event_id):
        return None
    created_at = ingest_time
    if (raw_created := item.get("created_at")) is not None:
        if (parsed := _parse_time(raw_created)) is None:
            return None
        created_at = parsed
    if (named := item.get("tenant")) is not None:
        if type(named) is not str or (named != tenant if tenant is not None else not TENANT_ID.fullmatch(named)):
            return None
        tenant = named
    webhook_ids = registry.subscribers(event_type, tenant)
    if (key := item.get("ordering_key")) is None:
        return NewEvent(event_id, event_type, created_at, encoded, webhook_ids, generated, tenant)
    if type(key) is not str or not ORDERING_KEY.fullmatch(key):
        return None
    return NewEvent(
        event_id, event_type, created_at, encoded, webhook_ids, generated, tenant, key, registry.orderings(webhook_ids)
    )


_known_types: set[str] = set()  # event types that passed the check: a batch holds few distinct ones


def _valid_type(event_type: str) -> bool:
    if event_type in _known_types:
        return True
    if not EVENT_TOKEN.fullmatch(event_type):
        return False
    if len(_known_types) < 10_000:
        _known_types.add(event_type)
    return True


def _parse_event(
    item: Any,
    path: str,
    now: float,
    ingest_time: str,
    problems: list[Problem],
    registry: Registry,
    key_tenant: str | None,
) -> NewEvent | None:
    if not isinstance(item, dict):
        problems.append(Problem(path, "must be an object with at least 'type' and 'data'"))
        return None
    before = len(problems)
    for key in item:
        if key not in _FIELDS:
            allowed = "type, data, id, created_at, tenant, ordering_key"
            problems.append(Problem(_join(path, key), f"unknown field (allowed: {allowed})"))

    event_type = item.get("type")
    if event_type is None:
        problems.append(Problem(_join(path, "type"), "required"))
    elif not isinstance(event_type, str) or not _valid_type(event_type):
        problems.append(Problem(_join(path, "type"), "must be 1-128 characters of [A-Za-z0-9_.:-]"))

    data: bytes | None = None
    if "data" not in item:
        problems.append(Problem(_join(path, "data"), "required"))
    elif not isinstance(item["data"], dict | list):
        problems.append(Problem(_join(path, "data"), "must be a JSON object or array"))
    else:
        data = _encode_data(item["data"])
        if data is None:
            problems.append(Problem(_join(path, "data"), f"nests arrays and objects deeper than {MAX_DEPTH} levels"))

    event_id = item.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not EVENT_TOKEN.fullmatch(event_id)):
        problems.append(Problem(_join(path, "id"), "must be 1-128 characters of [A-Za-z0-9_.:-]"))

    created_at: str | None = ingest_time
    raw_created = item.get("created_at")
    if raw_created is not None:
        created_at = _parse_time(raw_created)
        if created_at is None:
            problems.append(
                Problem(_join(path, "created_at"), "must be an RFC 3339 timestamp such as 2024-01-15T10:35:00Z")
            )

    tenant = item.get("tenant")
    if tenant is None:
        tenant = key_tenant
    elif key_tenant is not None and tenant != key_tenant:
        problems.append(Problem(_join(path, "tenant"), f'must be "{key_tenant}", the tenant of this key, or absent'))
    elif not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        problems.append(Problem(_join(path, "tenant"), TENANT_ID_RULE))
    ordering_key = item.get("ordering_key")
    if ordering_key is not None and (not isinstance(ordering_key, str) or not ORDERING_KEY.fullmatch(ordering_key)):
        problems.append(Problem(_join(path, "ordering_key"), ORDERING_KEY_RULE))

    if len(problems) > before:
        return None
    assert isinstance(event_type, str) and created_at is not None and data is not None
    webhook_ids = registry.subscribers(event_type, tenant)
    return NewEvent(
        id=event_id if isinstance(event_id, str) else new_event_id(now),
        type=event_type,
        created_at=created_at,
        data=data,
        webhook_ids=webhook_ids,
        generated=not isinstance(event_id, str),
        tenant=tenant,
        ordering_key=ordering_key,
        orderings=registry.orderings(webhook_ids) if ordering_key is not None else (),
    )


def _encode_data(value: Any) -> bytes | None:
    """``data`` as compact JSON; None when it nests too deeply for every body format to be rendered from it.

    orjson encodes at most 254 levels and the envelope adds one, so ``data`` may have ``MAX_DEPTH`` = 253:
    encoding it inside a one-element array checks exactly that.
    """
    try:
        wrapped = orjson.dumps([value])
    except orjson.JSONEncodeError:
        return None
    return wrapped[1:-1]


def _parse_time(value: Any) -> str | None:
    moment = parse_datetime(value)
    return None if moment is None else format_datetime(moment)


async def commit_events(
    store: Outbox, scheduler: Scheduler, events: list[NewEvent], now: float, on_ingest: list[Callable[[int], None]]
) -> list[IngestResult]:
    """Commit the events, and tell the scheduler what to deliver the moment the commit lands.

    Where a webhook's lane has room, its new deliveries are committed already leased and start at once, with no
    claim; the rest are announced as due. The store runs that bookkeeping from its commit (``on_commit``), even if
    this request is gone by then (its client left, the handler was cancelled), so nothing committed waits for a
    lease to run out or for the next event to wake its lane; and the request awaits the commit itself, with no
    shield or done-callback hop in between.
    """
    wanted = _wanted(events)
    rooms = scheduler.reserve(wanted, now) if wanted else {}

    def committed(results: list[IngestResult] | None) -> None:
        if rooms:  # the room the commit did not use goes back (all of it when the commit failed)
            scheduler.start(rooms, () if results is None else [claim for r in results for claim in r.leased])
        if results is None:
            return
        created = 0
        for event, result in zip(events, results, strict=True):
            if result.created:
                created += 1
                queued = event.webhook_ids
                if result.leased:
                    started = {claim.webhook_id for claim in result.leased}
                    queued = tuple(w for w in queued if w not in started)
                if queued:
                    scheduler.notify(queued, now)
        for hook in on_ingest:
            hook(created)

    try:
        committing = store.submit_ingest(events, now, rooms, committed)
    except BaseException:
        scheduler.start(rooms, ())
        raise
    return await committing


def _wanted(events: list[NewEvent]) -> dict[str, int]:
    """How many new deliveries each webhook gets from ``events``."""
    if len(events) == 1:
        return dict.fromkeys(events[0].webhook_ids, 1)
    return Counter(w for event in events for w in event.webhook_ids)
