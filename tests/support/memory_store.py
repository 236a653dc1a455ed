"""An in-memory ``relay.store.Store``: the same observable behaviour as the SQLite backend, in plain dicts.

The scheduler's unit tests run on it, and ``tests/integration/test_store_memory.py`` holds it to the same contract
as SQLite. What a file would keep lives in a ``MemoryData`` that a new ``MemoryStore`` can open again (a restart);
the store itself only adds the lifecycle. Every write counts as one commit. ``unavailable`` set to a reason makes
every write raise ``StoreUnavailable`` with it (a full disk, a lost file), until it is cleared.

A lease's ``ref`` is the delivery's position in creation order (never reused; events and deliveries count on one
counter); its ``until`` is the delivery's
``due_at`` while it is ``delivering``. As in SQLite, a result or a release counts only while the delivery is still
``delivering`` under that ``until`` (an attempt is kept whenever its delivery still exists).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from relay.errors import Problem, StoreUnavailable, ValidationError
from relay.models import (
    EVERYTHING,
    Attempt,
    Claim,
    Delivery,
    DeliveryStatus,
    Event,
    EventSummary,
    Lease,
    Scope,
    new_event_id,
    new_id,
    parse_datetime,
)
from relay.store.activity import HOUR, activity_of, hour_rows, window
from relay.store.base import (
    Activity,
    AttemptResult,
    EventPage,
    IngestResult,
    NewEvent,
    Page,
    RefreshTokenSession,
    Room,
    StoredWebhook,
    TenantKey,
    TenantRemoved,
    TenantSummary,
    local_refresh_session,
)
from relay.store.ordering import ORDERED, KeyQueue, move_on, superseded_on_redrive, superseded_on_replay
from relay.store.rows import check_cancellable, check_quota, foreign_ids, spec_tenant

S = DeliveryStatus
QUEUED = (S.PENDING, S.FAILED, S.DELIVERING)  # still owed an attempt (a delivering one, when its lease runs out)
ENDED_FOR_PRUNE = (S.SUCCEEDED, S.CANCELLED, S.SUPERSEDED)
Moment = TypeVar("Moment", float, datetime)  # a list's bound: a delivery's unix time, an event's created_at


@dataclass
class StoredDelivery:
    ref: int
    id: str
    event_id: str
    webhook_id: str
    status: S
    due_at: float | None  # pending/failed: when the next attempt is due; delivering: when the lease runs out
    created_at: float
    updated_at: float
    attempt_count: int = 0
    attempts: dict[int, Attempt] = field(default_factory=dict)  # by number: a later one of a number replaces it
    ordering_key: str | None = None  # set for a delivery of an ordered webhook and a keyed event ...
    ordering: str | None = None  # ... with the webhook's ordering then ("fifo", "latest")

    def shown(self) -> Delivery:
        due = self.due_at if self.status in (S.PENDING, S.FAILED) else None
        attempts = tuple(self.attempts[n] for n in sorted(self.attempts))
        return Delivery(
            self.id,
            self.event_id,
            self.webhook_id,
            self.status,
            self.attempt_count,
            due,
            self.created_at,
            self.updated_at,
            attempts,
        )


@dataclass
class StoredEvent:
    event: Event
    delivery_count: int  # how many webhooks it matched when first stored (what a repeat of its id answers)
    ref: int  # its position in the order events were stored (never reused), for paging


@dataclass
class MemoryData:
    """What a store file would hold."""

    events: dict[str, StoredEvent] = field(default_factory=dict)
    deliveries: dict[int, StoredDelivery] = field(default_factory=dict)  # by ref, in creation order
    webhooks: dict[str, tuple[str, StoredWebhook]] = field(default_factory=dict)  # id -> (source, stored)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    refs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    tenant_keys: dict[bytes, TenantKey] = field(default_factory=dict)  # by digest
    tenant_removals: dict[str, float] = field(default_factory=dict)
    ended_sessions: dict[str, float] = field(default_factory=dict)  # nonce -> when its cookie expires
    signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    # The hourly attempt counts (relay/store/activity.py): (webhook id, hour, node) -> attempts, failures, newest
    # attempt's start and whether it succeeded, kept and pruned as the SQL backends keep theirs.
    hours: dict[tuple[str, int, str], tuple[int, int, float, bool]] = field(default_factory=dict)

    def webhook_tenant(self, webhook_id: str) -> str | None:
        found = self.webhooks.get(webhook_id)
        return None if found is None else spec_tenant(found[1].spec)


def _position(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise ValidationError([Problem("cursor", "is not a cursor this list gave")])
    return int(cursor)


def _within(moment: Moment | None, since: Moment | None, until: Moment | None) -> bool:
    """``moment`` is in [since, until) (an open end where a bound is None)."""
    return moment is not None and (since is None or moment >= since) and (until is None or moment < until)


class MemoryStore:
    def __init__(self, data: MemoryData | None = None) -> None:
        self.data = data if data is not None else MemoryData()
        self.owner = f"memory:{secrets.token_hex(4)}"
        self.unavailable: str | None = None
        self.commits = 0
        self._open = False
        self._closed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._open = True
        self._closed = asyncio.Event()

    async def close(self) -> None:
        self._open = False
        self._closed.set()

    async def stopped(self) -> None:
        if self._open:
            await self._closed.wait()

    @property
    def rescan_interval(self) -> float | None:
        return None

    def on_signals(
        self,
        due: Callable[[list[str]], None],
        webhooks_changed: Callable[[], None],
        rescan: Callable[[], None],
    ) -> None:
        pass

    async def claim_job(self, name: str, now: float, interval: float) -> bool:
        return True

    def clock_offset(self) -> float | None:
        return None

    async def take_starts(self, webhook_id: str, want: int, now: float, rate: float) -> tuple[int, float]:
        return want, now  # never asked: one relay, and its own window is the group's

    async def give_back_starts(self, webhook_id: str, count: int, now: float) -> None:
        pass

    async def check_writable(self) -> None:
        self._write()

    def _write(self) -> MemoryData:
        """The data, for one write (one commit); raises as SQLite would when none can be made."""
        if not self._open:
            raise StoreUnavailable("the store is closed")
        if self.unavailable is not None:
            raise StoreUnavailable(self.unavailable)
        self.commits += 1
        return self.data

    def _read(self) -> MemoryData:
        if not self._open:
            raise StoreUnavailable("the store is closed")
        return self.data

    def _add_delivery(
        self, event_id: str, webhook_id: str, now: float, due_at: float | None, status: S
    ) -> StoredDelivery:
        ref = next(self.data.refs)
        delivery = StoredDelivery(ref, new_id("dlv", now), event_id, webhook_id, status, due_at, now, now)
        self.data.deliveries[ref] = delivery
        return delivery

    # -- ordering keys (relay.store.ordering), as the SQL backends keep them --------------------------------

    def _queue(self, webhook_id: str, key: str, mode: str) -> KeyQueue:
        """The key's unfinished deliveries, in creation order."""
        queue = KeyQueue(mode)
        for d in self.data.deliveries.values():
            if d.webhook_id == webhook_id and d.ordering_key == key and d.status in QUEUED:
                queue.load(d.ref, d.status, d.due_at is not None)
        return queue

    def _arrive(self, event_id: str, webhook_id: str, key: str, mode: str, now: float) -> tuple[StoredDelivery, bool]:
        """A new delivery of an ordering key, waiting at first: whether it is its key's head; the ones it
        supersedes end so."""
        queue = self._queue(webhook_id, key, mode)
        d = self._add_delivery(event_id, webhook_id, now, None, S.PENDING)
        d.ordering_key, d.ordering = key, mode
        holds, superseded = queue.arrive(d.ref)
        for ref in superseded:
            self._end(ref, S.SUPERSEDED, now)
        if holds:
            d.due_at = now
        return d, holds

    def _end(self, ref: object, status: S, now: float) -> None:
        d = self.data.deliveries[ref] if isinstance(ref, int) else None
        if d is not None and d.status in (S.PENDING, S.FAILED):
            d.status, d.due_at, d.updated_at = status, None, now

    def _move_on(self, d: StoredDelivery, at: float) -> None:
        """After a result or a cancellation of ``d``, which holds its key: the key moves on."""
        if d.ordering_key is None or d.ordering is None:
            return
        superseded, head = move_on(self._queue(d.webhook_id, d.ordering_key, d.ordering), d.ref, d.status)
        if superseded is not None:
            self._end(superseded, S.SUPERSEDED, at)
        if isinstance(head, int):
            promoted = self.data.deliveries[head]
            promoted.due_at = promoted.updated_at = at

    # -- the outbox --------------------------------------------------------------------------------------

    def submit_ingest(
        self,
        events: Sequence[NewEvent],
        now: float,
        rooms: Mapping[str, Room] | None = None,
        on_commit: Callable[[list[IngestResult] | None], None] | None = None,
    ) -> asyncio.Future[list[IngestResult]]:
        future: asyncio.Future[list[IngestResult]] = asyncio.get_running_loop().create_future()
        results = self._ingest(events, now, rooms or {})
        if on_commit is not None:
            on_commit(results)
        future.set_result(results)
        return future

    async def ingest(
        self, events: Sequence[NewEvent], now: float, rooms: Mapping[str, Room] | None = None
    ) -> list[IngestResult]:
        return await self.submit_ingest(events, now, rooms)

    def _ingest(self, events: Sequence[NewEvent], now: float, rooms: Mapping[str, Room]) -> list[IngestResult]:
        data = self._write()
        ids = {e.id for e in events}
        budget = {webhook_id: room.count for webhook_id, room in rooms.items()}
        tenants = {i: (s.delivery_count, s.event.tenant) for i, s in data.events.items() if i in ids}
        if taken := foreign_ids(events, tenants):
            return [IngestResult(e.id, 0, False, taken=e.id in taken) for e in events]
        results = []
        for e in events:
            event_id = e.id
            if e.generated:
                while event_id in data.events:  # a producer posted it first: relay's event is another one
                    event_id = new_event_id(now)
            known = data.events.get(event_id)
            if known is not None:
                results.append(IngestResult(event_id, known.delivery_count, False))
                continue
            event = Event(event_id, e.type, e.created_at, e.data, now, e.tenant, e.ordering_key)
            data.events[event_id] = StoredEvent(event, len(e.webhook_ids), next(data.refs))
            leased = []
            for index, webhook_id in enumerate(e.webhook_ids):
                mode = e.orderings[index] if index < len(e.orderings) else None
                if e.ordering_key is not None and mode in ORDERED:
                    assert mode is not None
                    d, holds = self._arrive(event_id, webhook_id, e.ordering_key, mode, now)
                    if holds and budget.get(webhook_id, 0) > 0:
                        budget[webhook_id] -= 1
                        d.status, d.due_at = S.DELIVERING, rooms[webhook_id].until
                        leased.append(Claim(d.id, webhook_id, 1, now, event, Lease(self.owner, d.due_at, d.ref, True)))
                    continue
                if budget.get(webhook_id, 0) > 0:
                    budget[webhook_id] -= 1
                    until = rooms[webhook_id].until
                    d = self._add_delivery(event_id, webhook_id, now, until, S.DELIVERING)
                    leased.append(Claim(d.id, webhook_id, 1, now, event, Lease(self.owner, until, d.ref)))
                else:
                    self._add_delivery(event_id, webhook_id, now, now, S.PENDING)
            results.append(IngestResult(event_id, len(e.webhook_ids), True, tuple(leased)))
        return results

    async def claim(
        self, webhook_id: str, limit: int, now: float, lease_until: float
    ) -> tuple[list[Claim], float | None]:
        data = self._write()
        mine = [d for d in data.deliveries.values() if d.webhook_id == webhook_id and d.status in QUEUED]
        due = [d for d in mine if d.due_at is not None and d.due_at <= now]
        taken = sorted(sorted(due, key=lambda d: (d.due_at, d.ref))[:limit], key=lambda d: d.ref)
        claims = []
        for d in taken:
            d.status, d.due_at, d.updated_at = S.DELIVERING, lease_until, now
            event = data.events[d.event_id].event
            claims.append(
                Claim(
                    d.id,
                    webhook_id,
                    d.attempt_count + 1,
                    d.created_at,
                    event,
                    Lease(self.owner, lease_until, d.ref, d.ordering_key is not None),
                )
            )
        next_due = min((d.due_at for d in mine if d.due_at is not None), default=None)
        return claims, next_due

    def _holds(self, lease: Lease) -> StoredDelivery | None:
        """The delivery still under ``lease``, if it is."""
        d = self.data.deliveries.get(lease.ref)
        if d is None or d.status is not S.DELIVERING or d.due_at != lease.until:
            return None
        return d

    async def record(
        self, results: Sequence[AttemptResult], on_leased: Callable[[list[Claim]], None] | None = None
    ) -> list[Claim]:
        data = self._write()
        for webhook_id, hour, node, attempts, failures, last_at, last_ok in hour_rows(results):
            held = data.hours.get((webhook_id, hour, node))
            if held is not None:
                attempts, failures = held[0] + attempts, held[1] + failures
                if last_at < held[2]:
                    last_at, last_ok = held[2], held[3]
            data.hours[(webhook_id, hour, node)] = (attempts, failures, last_at, last_ok)
        for r in results:
            d = data.deliveries.get(r.lease.ref)
            if d is None or d.id != r.delivery_id:
                continue  # pruned while its attempt was in flight (counted in its hour all the same)
            d.attempts[r.attempt.number] = r.attempt
            ended_at = r.attempt.started_at + r.attempt.duration_ms / 1000
            if self._holds(r.lease) is d:
                d.status, d.attempt_count, d.due_at = r.status, r.attempt.number, r.due_at
                d.updated_at = ended_at
            if r.lease.keyed:
                self._move_on(d, ended_at)
        return []  # a key's next delivery is made due, not leased: a claim takes it

    async def release(self, claims: Sequence[Claim], now: float) -> None:
        self._write()
        for claim in claims:
            if (d := self._holds(claim.lease)) is not None and d.id == claim.delivery_id:
                d.status, d.due_at, d.updated_at = S.PENDING, now, now

    async def renew(self, claims: Sequence[Claim], now: float, until: float) -> list[Claim]:
        self._write()
        renewed = []
        for claim in claims:
            if (d := self._holds(claim.lease)) is not None and d.id == claim.delivery_id:
                d.due_at, d.updated_at = until, now
                renewed.append(claim)
        return renewed

    async def reclaim_abandoned(self, now: float) -> int:
        data = self._write()
        delivering = [d for d in data.deliveries.values() if d.status is S.DELIVERING]
        for d in delivering:
            d.status, d.due_at, d.updated_at = S.PENDING, now, now
        return len(delivering)

    async def take_over(self, now: float) -> list[str]:
        return []  # one relay's store, as SQLite

    async def due_by_webhook(self) -> dict[str, float]:
        due: dict[str, float] = {}
        for d in self._read().deliveries.values():
            if d.status in QUEUED and d.due_at is not None:
                due[d.webhook_id] = min(due.get(d.webhook_id, d.due_at), d.due_at)
        return due

    async def replay(
        self,
        event_id: str,
        webhook_ids: Sequence[str],
        now: float,
        *,
        scope: Scope,
        orderings: Sequence[str] = (),
    ) -> list[Delivery] | None:
        stored = self._write().events.get(event_id)
        if stored is None or not _event_in(stored.event, scope):
            return None
        key = stored.event.ordering_key
        made = []
        for index, webhook_id in enumerate(webhook_ids):
            mode = orderings[index] if index < len(orderings) else None
            if key is not None and mode in ORDERED:
                assert mode is not None
                events = self.data.events
                newer = any(
                    d.webhook_id == webhook_id and d.ordering_key == key and events[d.event_id].ref > stored.ref
                    for d in self.data.deliveries.values()
                    if d.event_id in events
                )
                if superseded_on_replay(mode, newer):  # never follows, nor replaces, a newer event of its key
                    made.append(self._add_delivery(event_id, webhook_id, now, now, S.SUPERSEDED))
                    made[-1].due_at, made[-1].ordering_key, made[-1].ordering = None, key, mode
                    continue
                made.append(self._arrive(event_id, webhook_id, key, mode, now)[0])
            else:
                made.append(self._add_delivery(event_id, webhook_id, now, now, S.PENDING))
        return [d.shown() for d in made]

    async def cancel(self, delivery_id: str, now: float, *, scope: Scope) -> Delivery | None:
        data = self._write()
        found = [d for d in data.deliveries.values() if d.id == delivery_id and self._delivery_in(d, scope)]
        if not found:
            return None
        [d] = found
        check_cancellable(delivery_id, d.status)
        d.status, d.due_at, d.updated_at = S.CANCELLED, None, now
        self._move_on(d, now)
        return d.shown()

    async def redrive(self, now: float, webhook_ids: Sequence[str], *, include_dead: bool) -> dict[str, int]:
        data = self._write()
        statuses = (S.FAILED, S.DEAD) if include_dead else (S.FAILED,)
        counts: dict[str, int] = {}
        for d in data.deliveries.values():
            if d.webhook_id in webhook_ids and d.status in statuses:
                if d.status is S.DEAD and d.ordering_key is not None and d.ordering is not None:
                    newer = any(
                        o.webhook_id == d.webhook_id and o.ordering_key == d.ordering_key and o.ref > d.ref
                        for o in data.deliveries.values()
                    )
                    if superseded_on_redrive(d.ordering, newer):  # an older event never follows a newer one
                        d.status, d.due_at, d.updated_at = S.SUPERSEDED, None, now
                        continue
                    # Back into its key's queue (oldest first): the head when the key has none, else waiting.
                    queue = self._queue(d.webhook_id, d.ordering_key, d.ordering)
                    holds = queue.in_flight is None and queue.head is None
                    d.status, d.due_at, d.updated_at = S.PENDING, now if holds else None, now
                else:
                    d.status, d.due_at, d.updated_at = S.PENDING, now, now
                counts[d.webhook_id] = counts.get(d.webhook_id, 0) + 1
        return counts

    async def prune(self, cutoff: float) -> int:
        data = self._write()
        by_event: dict[str, list[StoredDelivery]] = {}
        for d in data.deliveries.values():
            by_event.setdefault(d.event_id, []).append(d)
        gone = [
            event_id
            for event_id, stored in data.events.items()
            if stored.event.ingested_at < cutoff
            and all(d.status in ENDED_FOR_PRUNE for d in by_event.get(event_id, []))
        ]
        for event_id in gone:
            del data.events[event_id]
            for d in by_event.get(event_id, []):
                del data.deliveries[d.ref]
        data.hours = {key: row for key, row in data.hours.items() if key[1] + HOUR > cutoff}
        return len(gone)

    def _cancel_queued(self, webhook_id: str, now: float) -> int:
        cancelled = 0
        for d in self.data.deliveries.values():
            if d.webhook_id == webhook_id and d.status in QUEUED:
                d.status, d.due_at, d.updated_at = S.CANCELLED, None, now
                cancelled += 1
        return cancelled

    # -- webhooks and refresh tokens ---------------------------------------------------------------------

    async def sync_config_webhooks(self, specs: Mapping[str, bytes], now: float) -> list[str]:
        data = self._write()
        removed = [w for w, (source, _) in data.webhooks.items() if source == "config" and w not in specs]
        for webhook_id in removed:
            del data.webhooks[webhook_id]
            self._cancel_queued(webhook_id, now)
        for webhook_id, spec in specs.items():
            found = data.webhooks.get(webhook_id)
            if found is None:
                data.webhooks[webhook_id] = ("config", StoredWebhook(webhook_id, spec, now, now, None, None))
            elif found[0] == "config":
                old = found[1]
                data.webhooks[webhook_id] = ("config", StoredWebhook(webhook_id, spec, old.created_at, now, None, None))
        return removed

    async def webhook_created_at(self) -> dict[str, float]:
        return {w: stored.created_at for w, (_, stored) in self._read().webhooks.items()}

    async def api_webhooks(self) -> list[StoredWebhook]:
        found = [stored for source, stored in self._read().webhooks.values() if source == "api"]
        return sorted(found, key=lambda w: (w.created_at, w.id))

    async def api_webhook(self, webhook_id: str) -> StoredWebhook | None:
        found = self._read().webhooks.get(webhook_id)
        return found[1] if found is not None and found[0] == "api" else None

    async def insert_api_webhook(
        self, webhook_id: str, spec: bytes, now: float, *, max_per_tenant: int | None = None
    ) -> bool:
        data = self._write()
        tenant = spec_tenant(spec)
        if tenant is not None and max_per_tenant is not None:
            check_quota(tenant, sum(data.webhook_tenant(w) == tenant for w in data.webhooks), max_per_tenant)
        if webhook_id in data.webhooks:
            return False
        data.webhooks[webhook_id] = ("api", StoredWebhook(webhook_id, spec, now, now, None, None))
        return True

    async def update_api_webhook(
        self, webhook_id: str, spec: bytes, now: float, *, rotation: tuple[str | None, float | None] | None = None
    ) -> bool:
        data = self._write()
        found = data.webhooks.get(webhook_id)
        if found is None or found[0] != "api":
            return False
        old = found[1]
        previous, until = rotation if rotation is not None else (old.previous_secret, old.previous_secret_until)
        data.webhooks[webhook_id] = ("api", StoredWebhook(webhook_id, spec, old.created_at, now, previous, until))
        return True

    async def delete_api_webhook(self, webhook_id: str, now: float) -> int | None:
        data = self._write()
        found = data.webhooks.get(webhook_id)
        if found is None or found[0] != "api":
            return None
        del data.webhooks[webhook_id]
        data.refresh_tokens.pop(webhook_id, None)
        return self._cancel_queued(webhook_id, now)

    async def load_refresh_token(self, webhook_id: str) -> str | None:
        return self._read().refresh_tokens.get(webhook_id)

    async def save_refresh_token(self, webhook_id: str, token: str) -> None:
        self._write().refresh_tokens[webhook_id] = token

    def refresh_token_session(self, webhook_id: str) -> AbstractAsyncContextManager[RefreshTokenSession]:
        return local_refresh_session(self, webhook_id)

    # -- reads -------------------------------------------------------------------------------------------

    def _delivery_in(self, d: StoredDelivery, scope: Scope) -> bool:
        return scope.tenant is None or self.data.webhook_tenant(d.webhook_id) == scope.tenant

    async def get_event(self, event_id: str, *, scope: Scope) -> tuple[Event, list[Delivery]] | None:
        stored = self._read().events.get(event_id)
        if stored is None or not _event_in(stored.event, scope):
            return None
        deliveries = self.data.deliveries.values()
        return stored.event, [d.shown() for d in deliveries if d.event_id == event_id and self._delivery_in(d, scope)]

    async def list_events(
        self,
        *,
        event_type: str | None,
        since: datetime | None,
        until: datetime | None,
        cursor: str | None,
        limit: int,
        scope: Scope,
    ) -> EventPage:
        before = _position(cursor)
        data = self._read()
        counts: dict[str, int] = {}
        for d in data.deliveries.values():
            if self._delivery_in(d, scope):
                counts[d.event_id] = counts.get(d.event_id, 0) + 1
        found = [
            stored
            for stored in sorted(data.events.values(), key=lambda stored: stored.ref, reverse=True)
            if (event_type is None or stored.event.type == event_type)
            and _event_in(stored.event, scope)
            and _within(parse_datetime(stored.event.created_at), since, until)
            and (before is None or stored.ref < before)
        ][: limit + 1]
        page = [
            EventSummary(e.id, e.type, e.created_at, e.ingested_at, counts.get(e.id, 0), e.tenant)
            for e in (stored.event for stored in found[:limit])
        ]
        return EventPage(page, str(found[limit - 1].ref) if len(found) > limit else None)

    async def list_deliveries(
        self,
        *,
        webhook_id: str | None,
        status: str | None,
        since: float | None,
        until: float | None,
        cursor: str | None,
        limit: int,
        scope: Scope,
    ) -> Page:
        before = _position(cursor)
        found = [
            d
            for d in sorted(self._read().deliveries.values(), key=lambda d: d.ref, reverse=True)
            if (webhook_id is None or d.webhook_id == webhook_id)
            and self._delivery_in(d, scope)
            and (status is None or d.status == status)
            and _within(d.created_at, since, until)
            and (before is None or d.ref < before)
        ][: limit + 1]
        page = found[:limit]
        return Page([d.shown() for d in page], str(page[-1].ref) if len(found) > limit else None)

    async def status_counts(self, *, scope: Scope) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for d in self._read().deliveries.values():
            if not self._delivery_in(d, scope):
                continue
            mine = counts.setdefault(d.webhook_id, {})
            mine[d.status.value] = mine.get(d.status.value, 0) + 1
        return counts

    async def status_totals(self, *, scope: Scope = EVERYTHING, succeeded: bool = True) -> dict[str, int]:
        totals: dict[str, int] = {}
        for d in self._read().deliveries.values():
            if not self._delivery_in(d, scope) or (not succeeded and d.status is DeliveryStatus.SUCCEEDED):
                continue
            totals[d.status.value] = totals.get(d.status.value, 0) + 1
        return totals

    async def earliest_due(self) -> float | None:
        waiting = (S.PENDING, S.FAILED)
        deliveries = self._read().deliveries.values()
        return min((d.due_at for d in deliveries if d.status in waiting and d.due_at is not None), default=None)

    async def activity(self, since: float, until: float, *, scope: Scope) -> Activity:
        first, end = window(since, until)
        tenant_of = self._read().webhook_tenant
        kept = {key: row for key, row in self.data.hours.items() if scope.tenant in (None, tenant_of(key[0]))}
        newest_hour: dict[str, int] = {}
        for webhook_id, hour, _ in kept:
            newest_hour[webhook_id] = max(newest_hour.get(webhook_id, hour), hour)
        counted = [(w, hour, a, f) for (w, hour, _), (a, f, _, _) in kept.items() if first <= hour < end]
        newest = [(w, at, ok) for (w, hour, _), (_, _, at, ok) in kept.items() if hour == newest_hour[w]]
        return activity_of(since, until, counted, newest)

    # -- tenants -----------------------------------------------------------------------------------------

    async def insert_tenant_key(self, key: TenantKey, digest: bytes) -> None:
        self._write().tenant_keys[digest] = key

    async def tenant_keys(self, tenant: str) -> list[TenantKey]:
        found = [k for k in self._read().tenant_keys.values() if k.tenant == tenant]
        return sorted(found, key=lambda k: (k.created_at, k.id))

    async def delete_tenant_key(self, tenant: str, key_id: str) -> bool:
        data = self._write()
        for digest, key in data.tenant_keys.items():
            if key.id == key_id and key.tenant == tenant:
                del data.tenant_keys[digest]
                return True
        return False

    async def tenant_key_by_digest(self, digest: bytes) -> TenantKey | None:
        return self._read().tenant_keys.get(digest)

    async def touch_tenant_key(self, key_id: str, now: float) -> None:
        data = self._write()
        for digest, key in data.tenant_keys.items():
            if key.id == key_id:
                data.tenant_keys[digest] = replace(key, last_used_at=now)

    async def tenant_summaries(self, tenant: str | None = None) -> list[TenantSummary]:
        data = self._read()
        webhooks: dict[str, int] = {}
        for webhook_id in data.webhooks:
            if (owner := data.webhook_tenant(webhook_id)) is not None:
                webhooks[owner] = webhooks.get(owner, 0) + 1
        keys: dict[str, int] = {}
        for key in data.tenant_keys.values():
            keys[key.tenant] = keys.get(key.tenant, 0) + 1
        deliveries: dict[str, dict[str, int]] = {}
        for d in data.deliveries.values():
            if (owner := data.webhook_tenant(d.webhook_id)) is not None:
                mine = deliveries.setdefault(owner, {})
                mine[d.status.value] = mine.get(d.status.value, 0) + 1
        return [
            TenantSummary(t, webhooks.get(t, 0), keys.get(t, 0), deliveries.get(t, {}))
            for t in sorted(webhooks.keys() | keys.keys())
            if tenant is None or t == tenant
        ]

    async def delete_tenant(self, tenant: str, now: float) -> TenantRemoved:
        data = self._write()
        ids = sorted(
            w for w, (source, _) in data.webhooks.items() if source == "api" and data.webhook_tenant(w) == tenant
        )
        cancelled = 0
        for webhook_id in ids:
            del data.webhooks[webhook_id]
            data.refresh_tokens.pop(webhook_id, None)
            cancelled += self._cancel_queued(webhook_id, now)
        gone = [digest for digest, key in data.tenant_keys.items() if key.tenant == tenant]
        for digest in gone:
            del data.tenant_keys[digest]
        data.tenant_removals[tenant] = now
        return TenantRemoved(ids, cancelled, len(gone))

    async def tenant_removed_at(self, tenant: str) -> float | None:
        return self._read().tenant_removals.get(tenant)

    async def signing_key(self) -> bytes:
        return self._read().signing_key

    # -- dashboard sessions ------------------------------------------------------------------------------

    async def end_session(self, nonce: str, expires_at: float, now: float) -> None:
        data = self._write()
        for gone in [n for n, until in data.ended_sessions.items() if until <= now]:
            del data.ended_sessions[gone]
        data.ended_sessions.setdefault(nonce, expires_at)

    async def session_ended(self, nonce: str) -> bool:
        return nonce in self._read().ended_sessions


def _event_in(event: Event, scope: Scope) -> bool:
    return scope.tenant is None or event.tenant == scope.tenant
