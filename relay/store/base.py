"""The storage seam: the records that cross it and the protocols the rest of the daemon needs of a store.

Domain words only: events, deliveries, leases, webhooks, refresh tokens. No connection, no rowid, no writer
thread. A backend (``relay/store/sqlite.py``; the in-memory fake in ``tests/support/memory_store.py``)
implements :class:`Store`; ``relay.store.open_store`` is the one place that picks one. Callers take the
narrowest protocol they need: the scheduler an :class:`Outbox`, the dashboard and the API's reads a
:class:`History`, an OAuth2 authenticator a :class:`RefreshTokens`, the dashboard's sign-out a :class:`Sessions`.

Leases are what make a store shareable: a claim hands out a :class:`Lease` (whose claim it is, until when, and the
store's own handle on the delivery), and a result is recorded only while that lease is still the one the
delivery holds. A relay that stalled past its lease, while the delivery was claimed again, cannot overwrite the
newer state (fencing).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from relay.models import EVERYTHING, Attempt, Claim, Delivery, DeliveryStatus, Event, EventSummary, Lease, Scope


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class NewEvent:
    """An accepted, validated event with the webhooks it fans out to (decided at ingest)."""

    id: str
    type: str
    created_at: str
    data: bytes
    webhook_ids: tuple[str, ...]
    generated: bool = False  # relay made the id up (the producer sent none): it must not match a stored event
    tenant: str | None = None
    ordering_key: str | None = None
    # With an ordering key: each webhook's ``Ordering`` ("none", "fifo", "latest"), in the order of ``webhook_ids``.
    orderings: tuple[str, ...] = ()


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class IngestResult:
    id: str
    deliveries: int
    created: bool  # False: the id existed, this is the first answer again
    leased: tuple[Claim, ...] = ()  # deliveries committed already leased to the caller (see ``Outbox.ingest``)
    taken: bool = False  # the id is another tenant's event (or one of no tenant): nothing of the request was stored


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Room:
    """Up to ``count`` of a webhook's new deliveries may be committed leased until ``until``, for the caller to
    attempt at once (the scheduler reserved the room)."""

    count: int
    until: float


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class AttemptResult:
    """One finished attempt under ``lease``, and the decision taken after it."""

    lease: Lease
    delivery_id: str
    webhook_id: str  # the delivery's webhook: the attempt counts in its activity (``History.activity``)
    attempt: Attempt
    status: DeliveryStatus
    due_at: float | None
    # A keyed lease's result: when it lets its key's next delivery be due, the store may lease that one to the
    # caller until then, in the same commit, and hand it back from ``record`` (no claim, no second commit).
    lease_next_until: float | None = None


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """A webhook created through the API, as stored: its definition and its rotation state."""

    id: str
    spec: bytes  # the JSON body it was created from with every later change merged in (secrets included)
    created_at: float
    updated_at: float
    previous_secret: str | None
    previous_secret_until: float | None


@dataclass(frozen=True, slots=True)
class TenantKey:
    """A tenant's API key as listed: never the key, which is shown once and stored only as its SHA-256."""

    id: str
    tenant: str
    prefix: str  # the key's first characters, to tell keys apart
    description: str | None
    created_at: float
    last_used_at: float | None


@dataclass(frozen=True, slots=True)
class TenantSummary:
    """A tenant as ``GET /v1/tenants`` lists it."""

    id: str
    webhooks: int
    keys: int
    deliveries: dict[str, int]  # by status, of its webhooks' deliveries


@dataclass(frozen=True, slots=True)
class TenantRemoved:
    """What ``delete_tenant`` removed: its API webhooks (ids), their unfinished deliveries (cancelled), its keys."""

    webhook_ids: list[str]
    cancelled: int
    keys: int


@dataclass(frozen=True, slots=True)
class HourCount:
    """Attempts that started in one hour, all webhooks inside the scope together."""

    start: float  # the hour's start, epoch seconds, a multiple of 3600
    attempts: int
    failures: int  # attempts that did not succeed (the result's status is not ``succeeded``)


@dataclass(frozen=True, slots=True)
class WebhookActivity:
    """One webhook's attempts inside a window, and its newest attempt whenever it was."""

    attempts: int  # inside the window
    failures: int  # inside the window
    last_attempt_at: float | None  # its newest attempt's start among all rows kept (not only the window)
    last_succeeded: bool | None  # whether that newest attempt succeeded


@dataclass(frozen=True, slots=True)
class Activity:
    """What the dashboard charts (CONTRACT §10): attempts and failures hour by hour, and per webhook."""

    hours: list[HourCount]  # every hour from floor(since) to floor(until - tiny), oldest first, zeros included
    webhooks: dict[str, WebhookActivity]  # the webhooks inside the scope with any row kept


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, newest first; ``next_cursor`` (opaque) fetches the next, None on the last."""

    deliveries: list[Delivery]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of events, newest first; ``next_cursor`` as in :class:`Page`."""

    events: list[EventSummary]
    next_cursor: str | None


class Outbox(Protocol):
    """Events in, deliveries out: what ingest and the scheduler need."""

    def submit_ingest(
        self,
        events: Sequence[NewEvent],
        now: float,
        rooms: Mapping[str, Room] | None = None,
        on_commit: Callable[[list[IngestResult] | None], None] | None = None,
    ) -> asyncio.Future[list[IngestResult]]:
        """Commit the events and their deliveries (all or nothing); a future of the answers, in order, that
        resolves once the commit is durable. With ``rooms``, the first new deliveries of each webhook named there
        (up to its count) are committed already leased and come back as claims in ``IngestResult.leased``. An id
        already stored answers as the first time did.

        ``on_commit`` runs on the loop the moment the commit is durable (with the answers) or has failed (with
        None), before the future resolves, and also when the future was cancelled: cancelling the future never
        cancels the commit."""
        ...

    async def ingest(
        self, events: Sequence[NewEvent], now: float, rooms: Mapping[str, Room] | None = None
    ) -> list[IngestResult]: ...

    async def claim(
        self, webhook_id: str, limit: int, now: float, lease_until: float
    ) -> tuple[list[Claim], float | None]:
        """Lease up to ``limit`` due deliveries of one webhook, oldest due first, skipping any another holds;
        also the earliest due time of its deliveries still queued after the claim (None when none are)."""
        ...

    async def record(
        self, results: Sequence[AttemptResult], on_leased: Callable[[list[Claim]], None] | None = None
    ) -> list[Claim]:
        """Record finished attempts and the decisions after them. A result whose lease the delivery no longer
        holds (it ran out and was claimed again, or the delivery was cancelled) changes nothing. The deliveries
        leased to the caller as results asked (``lease_next_until``): a backend may lease none, and those are then
        due at once like any other.

        ``on_leased`` hears them as soon as the store decided, possibly before the commit is durable, so that the
        caller may start them at once: a crash before the commit undoes the lease with the result, the earlier
        delivery of the key is attempted again first (at least once, first deliveries still in order), and the
        attempt of a lease that never committed records nothing."""
        ...

    async def release(self, claims: Sequence[Claim], now: float) -> None:
        """Give claimed deliveries back, due again at once (shutdown before their attempts finished); one whose
        lease it no longer holds is left as it is."""
        ...

    async def renew(self, claims: Sequence[Claim], now: float, until: float) -> list[Claim]:
        """Extend the leases of claims whose attempts still run to ``until``, in one statement; the claims renewed
        (the caller sets their ``lease.until``). A claim whose lease the delivery no longer holds (it ran out and
        another relay took it over, or it was cancelled) is not renewed, and its later result is ignored."""
        ...

    async def reclaim_abandoned(self, now: float) -> int:
        """At startup: deliveries whose lease no live relay holds (this relay's earlier life, or expired) are due
        again at once; how many."""
        ...

    async def take_over(self, now: float) -> list[str]:
        """While running, on a store several relays share: deliveries whose lease ran out (its relay died, or
        stalled) or whose relay is gone are due again at once, and the other relays are told; the webhooks they
        belong to (each once). A store one relay owns has no one to take over from (its ``reclaim_abandoned``
        at startup covers a crash): nothing."""
        ...

    async def due_by_webhook(self) -> dict[str, float]:
        """The earliest due time of each webhook that has queued deliveries."""
        ...

    async def replay(
        self,
        event_id: str,
        webhook_ids: Sequence[str],
        now: float,
        *,
        scope: Scope,
        orderings: Sequence[str] = (),
    ) -> list[Delivery] | None:
        """New deliveries of a stored event, due now; None when there is no such event inside ``scope``. To a webhook
        whose ``orderings`` entry (in the order of ``webhook_ids``) is "fifo" or "latest", an event with an ordering
        key takes a new place at the end of its key's queue (``relay.store.ordering``)."""
        ...

    async def cancel(self, delivery_id: str, now: float, *, scope: Scope) -> Delivery | None:
        """Cancel one delivery inside ``scope`` that is pending or parked (kept, as ``cancelled``); a key it held
        moves on. None when there is no such delivery in ``scope``; raises ``Conflict`` when it has ended or is
        being attempted right now."""
        ...

    async def redrive(self, now: float, webhook_ids: Sequence[str], *, include_dead: bool) -> dict[str, int]:
        """Parked (and, with ``include_dead``, dead) deliveries of these webhooks are due again now; how many per
        webhook."""
        ...

    async def prune(self, cutoff: float) -> int:
        """Delete events ingested before ``cutoff`` whose deliveries all ended delivered or cancelled, and the
        hourly attempt counts (``History.activity``) of hours that ended by ``cutoff``; how many events."""
        ...


class Webhooks(Protocol):
    """Webhooks as the store keeps them: config-declared ones (their public shape) and API ones (all of it)."""

    async def sync_config_webhooks(self, specs: Mapping[str, bytes], now: float) -> list[str]:
        """Make the config-declared webhooks exactly ``specs``; cancel what removed ones left; the removed ids."""
        ...

    async def webhook_created_at(self) -> dict[str, float]: ...

    async def api_webhooks(self) -> list[StoredWebhook]: ...

    async def api_webhook(self, webhook_id: str) -> StoredWebhook | None: ...

    async def insert_api_webhook(
        self, webhook_id: str, spec: bytes, now: float, *, max_per_tenant: int | None = None
    ) -> bool:
        """Store a new API webhook; False when the id is taken (by any webhook). Its tenant is the spec's
        ``tenant``; with ``max_per_tenant``, raises ``Conflict`` when that tenant has that many webhooks already
        (checked in the same transaction: relays sharing the store cannot together go past it)."""
        ...

    async def update_api_webhook(
        self, webhook_id: str, spec: bytes, now: float, *, rotation: tuple[str | None, float | None] | None = None
    ) -> bool:
        """Replace an API webhook's spec (and, given ``rotation``, its previous secret and until when it signs);
        False when there is no such API webhook."""
        ...

    async def delete_api_webhook(self, webhook_id: str, now: float) -> int | None:
        """Delete an API webhook and cancel its unfinished deliveries, at once; how many were cancelled, or None
        when there is no such API webhook."""
        ...


class History(Protocol):
    """What the API and the dashboard read. Every read takes the caller's ``Scope``: inside one tenant, an event
    is there only if it is that tenant's, and a delivery only if its webhook is that tenant's."""

    async def get_event(self, event_id: str, *, scope: Scope) -> tuple[Event, list[Delivery]] | None:
        """The event with its deliveries (those inside ``scope``); None when there is no such event in ``scope``."""
        ...

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
        """Up to ``limit`` events, newest first in the order they were ingested: of ``event_type``, created (their
        ``created_at``) at or after ``since`` and before ``until`` (each filter only when given). ``cursor`` is a
        ``next_cursor`` this list gave (anything else raises ``ValidationError`` naming ``cursor``): the page goes
        on after it, with no event twice and none left out, whatever was ingested meanwhile."""
        ...

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
        """Up to ``limit`` deliveries with their attempts, newest first: of ``webhook_id``, in ``status``, created
        at or after ``since`` and before ``until`` (each filter only when given); ``cursor`` as in
        ``list_events``."""
        ...

    async def status_counts(self, *, scope: Scope) -> dict[str, dict[str, int]]:
        """Delivery counts by webhook and status, of the webhooks inside ``scope``."""
        ...

    async def status_totals(self, *, scope: Scope = EVERYTHING, succeeded: bool = True) -> dict[str, int]:
        """Delivery counts by status, the webhooks inside ``scope`` together. ``succeeded=False`` leaves the
        succeeded ones (the bulk) uncounted: every backend then counts from its index of the other statuses
        instead of visiting every delivery (the dashboard's overview takes succeeded ones from ``activity``)."""
        ...

    async def earliest_due(self) -> float | None:
        """The earliest due time of a pending or failed delivery, passed or not; None when there is none (a
        delivery being attempted is not waiting)."""
        ...

    async def activity(self, since: float, until: float, *, scope: Scope) -> Activity:
        """Attempts and failures of the webhooks inside ``scope``, hour by hour (by their start) from the hour
        holding ``since`` to the one before ``until`` (an hour starting at or after ``until`` is out), and per
        webhook over those hours, with its newest attempt kept. Read from the hourly counts each ``record``
        writes in its own transaction (never a scan of attempts); ``prune`` drops the hours that ended before its
        cutoff."""
        ...


class Tenants(Protocol):
    """Tenants' keys and what an admin sees of tenants (CONTRACT §9). A tenant is not created: it exists while it
    has webhooks or keys."""

    async def insert_tenant_key(self, key: TenantKey, digest: bytes) -> None:
        """Store a new key of ``key.tenant`` by the SHA-256 of its text."""
        ...

    async def tenant_keys(self, tenant: str) -> list[TenantKey]:
        """The tenant's keys, oldest first."""
        ...

    async def delete_tenant_key(self, tenant: str, key_id: str) -> bool:
        """Revoke one of the tenant's keys (refused from the next request on); False when it has no such key."""
        ...

    async def tenant_key_by_digest(self, digest: bytes) -> TenantKey | None:
        """The key whose SHA-256 is ``digest``; None when no (unrevoked) key has it."""
        ...

    async def touch_tenant_key(self, key_id: str, now: float) -> None:
        """Record that the key was used at ``now``."""
        ...

    async def tenant_summaries(self, tenant: str | None = None) -> list[TenantSummary]:
        """Every tenant that has webhooks or keys, by id (or only ``tenant``, when it has): counts of its webhooks
        and keys, and of its webhooks' deliveries by status."""
        ...

    async def delete_tenant(self, tenant: str, now: float) -> TenantRemoved:
        """Offboard a tenant, in one transaction: its API webhooks removed and their unfinished deliveries
        cancelled, its keys revoked, and its portal links ended (``tenant_removed_at``)."""
        ...

    async def tenant_removed_at(self, tenant: str) -> float | None:
        """When the tenant was last deleted (a portal link made before that no longer opens); None: never."""
        ...

    async def signing_key(self) -> bytes:
        """The key that signs portal links and dashboard sessions: made at random the first time, then kept in the
        store, so every relay of a group signs and checks with the same one."""
        ...


class Sessions(Protocol):
    """Dashboard sessions signed out before they expire (CONTRACT §10, ``relay.ui.session``). A session is a signed
    cookie: the store keeps only the nonces of those ended early, so a copy of the cookie is refused by every relay
    of a group from the next request on, and forgets each one once its cookie has expired anyway."""

    async def end_session(self, nonce: str, expires_at: float, now: float) -> None:
        """Record that the session ``nonce`` (whose cookie expires at ``expires_at``) has ended; in the same
        write, forget the ended sessions whose cookies expired at or before ``now``."""
        ...

    async def session_ended(self, nonce: str) -> bool:
        """Whether the session ``nonce`` was ended (and its cookie had not expired at the last ``end_session``)."""
        ...


class RefreshTokenSession(Protocol):
    """One refresh of a webhook's OAuth2 token, between reading the stored refresh token and saving a rotated one."""

    current: str | None  # the refresh token stored when the session began; None when none is

    async def save(self, token: str) -> None:
        """Store a rotated refresh token (durable once the session ends without an error)."""
        ...


class RefreshTokens(Protocol):
    """Rotated OAuth2 refresh tokens, kept so a restart never falls back to a dead one."""

    async def load_refresh_token(self, webhook_id: str) -> str | None: ...

    async def save_refresh_token(self, webhook_id: str, token: str) -> None: ...

    def refresh_token_session(self, webhook_id: str) -> AbstractAsyncContextManager[RefreshTokenSession]:
        """Hold the webhook's refresh token for one refresh: from before the token endpoint is called until a
        rotated token is saved. Where relays share the store (PostgreSQL) the others wait for it and then read the
        token now stored, so a token server never sees one refresh token used twice; a store one relay owns needs
        no lock beyond the authenticator's own (``local_refresh_session``)."""
        ...


@dataclass(slots=True)
class _LocalSession:
    current: str | None
    _save: Callable[[str], Awaitable[None]]

    async def save(self, token: str) -> None:
        await self._save(token)


@contextlib.asynccontextmanager
async def local_refresh_session(store: RefreshTokens, webhook_id: str) -> AsyncIterator[RefreshTokenSession]:
    """``refresh_token_session`` for a store one relay owns: the stored token, saved as ``save_refresh_token``
    does."""
    yield _LocalSession(
        await store.load_refresh_token(webhook_id), functools.partial(store.save_refresh_token, webhook_id)
    )


class Lifecycle(Protocol):
    @property
    def commits(self) -> int:
        """Transactions committed (metrics read it)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def check_writable(self) -> None:
        """Raise ``StoreUnavailable`` (with the reason) unless a write commits now and there is room for more."""
        ...

    async def stopped(self) -> None:
        """Return if the store's own background work ends before ``close`` (the daemon then stops)."""
        ...


class Signals(Protocol):
    """What a store shared by several relays tells each of them about the others' writes (CONTRACT §8).

    A backend one relay owns (SQLite) has nothing to tell: it takes the callbacks and never calls them, and its
    ``rescan_interval`` is None. A shared one (PostgreSQL) calls them on the loop:

    - ``due(webhook_ids)``: another relay committed deliveries of these webhooks, due now, that nobody holds;
    - ``webhooks_changed()``: another relay created, changed or deleted a webhook through its API;
    - ``rescan()``: signals may have been lost (the store's channel to the others was down and is back): the
      relay re-reads due times and webhooks as if it had missed every signal.
    """

    @property
    def rescan_interval(self) -> float | None:
        """Seconds between two safety scans of the store for work that no signal announced (None: no other relay
        writes it). A net under the signals, never the main path."""
        ...

    def on_signals(
        self,
        due: Callable[[list[str]], None],
        webhooks_changed: Callable[[], None],
        rescan: Callable[[], None],
    ) -> None:
        """Register the callbacks (again: they replace the earlier ones)."""
        ...

    def clock_offset(self) -> float | None:
        """The store's clock minus this machine's, in seconds, as last measured (None: the store has no clock of
        its own to agree on: one relay owns it). Relays of a group move their clocks by it (CLUSTERING point 3)."""
        ...


class Jobs(Protocol):
    """Periodic jobs that the group of relays sharing a store runs once per interval, not once per relay."""

    async def claim_job(self, name: str, now: float, interval: float) -> bool:
        """True when this relay is to run job ``name`` now: it was due (never run, or its last run was at least
        ``interval`` seconds before ``now``), and no other relay took this run. The next run is due at
        ``now + interval``. A store one relay owns always answers True."""
        ...


class RateWindows(Protocol):
    """A webhook's ``rate_limit`` kept for the group of relays sharing a store, not for each relay (CONTRACT §8).

    A store one relay owns is never asked: that relay's own window (``relay.ratelimit.RateWindow``) is the group's.
    """

    async def take_starts(self, webhook_id: str, want: int, now: float, rate: float) -> tuple[int, float]:
        """Take up to ``want`` attempt starts at ``now`` from the webhook's window shared by the group, the window
        ``relay.ratelimit.RateWindow`` keeps for ``rate`` attempts a second; how many were taken, and when the next
        one is free."""
        ...

    async def give_back_starts(self, webhook_id: str, count: int, now: float) -> None:
        """Give back ``count`` starts taken at ``now`` that no attempt used."""
        ...


class Store(
    Outbox, Webhooks, History, Tenants, Sessions, RefreshTokens, Signals, Jobs, RateWindows, Lifecycle, Protocol
):
    """Everything a backend provides."""
