"""The PostgreSQL backend's reads (``PostgresStore`` inherits them), each on a pooled connection, and the pool
itself: every statement of the backend gets its connection through ``_connection``, which turns the driver's errors
into relay's own.

A list is newest first by seq (the order rows were stored in) and its cursor is the last seq shown, as on SQLite.
A page is one statement: the filters, ``seq < cursor``, ``ORDER BY seq DESC LIMIT n + 1``, over the indexes the
schema keeps for each filter (``events_type``, ``events_created``, ``deliveries_webhook``, ``deliveries_status``,
``deliveries_created``); PostgreSQL's planner picks the walk.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from relay.errors import StoreUnavailable
from relay.models import EVERYTHING, Attempt, Delivery, DeliveryStatus, Event, EventSummary, Scope
from relay.store.activity import activity_of, window
from relay.store.base import Activity, EventPage, Page, StoredWebhook
from relay.store.paging import micros, position
from relay.store.postgres_schema import DRIVER_ERRORS, QUEUED, translate
from relay.store.rows import attempt_of, delivery_of, stored_webhook


class _Terms:
    """A WHERE clause built a term at a time, with its numbered arguments."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, template: str, value: Any) -> None:
        """``template`` with ``{}`` where the value goes, e.g. ``"type = {}"``."""
        self.terms.append(template.format(self.arg(value)))

    def where(self) -> str:
        return f" WHERE {' AND '.join(self.terms)}" if self.terms else ""

    def deliveries_in(self, scope: Scope, column: str = "d.webhook_id") -> _Terms:
        """Keep deliveries inside ``scope``: inside one tenant, the deliveries of that tenant's webhooks."""
        if scope.tenant is not None:
            self.add(f"{column} IN (SELECT id FROM webhooks WHERE tenant = {{}})", scope.tenant)
        return self

    def events_in(self, scope: Scope, column: str = "e.tenant") -> _Terms:
        """Keep events inside ``scope``: inside one tenant, that tenant's events."""
        if scope.tenant is not None:
            self.add(f"{column} = {{}}", scope.tenant)
        return self


class PostgresReads:
    """Read queries and the connection pool; ``PostgresStore`` opens and closes the pool."""

    _pool: Any  # asyncpg.Pool (asyncpg has no types); None while closed

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection for a statement or a transaction; driver errors become ``StoreUnavailable`` (the
        database cannot be reached, or cannot write now) or ``StoreError``. A connection that broke is dropped by
        the pool, which opens a new one when next asked: an outage heals by itself."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with pool.acquire() as conn:
                yield conn
        except DRIVER_ERRORS as exc:
            raise translate(exc) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as conn:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

    # -- events and deliveries ---------------------------------------------------------------------------

    async def get_event(self, event_id: str, *, scope: Scope) -> tuple[Event, list[Delivery]] | None:
        where = _Terms().events_in(scope)
        where.add("e.id = {}", event_id)
        rows = await self._fetch(
            "SELECT e.seq, e.id, e.type, e.created_at, e.data, e.ingested_at, e.tenant, e.ordering_key"
            f" FROM events e{where.where()}",
            *where.args,
        )
        if not rows:
            return None
        r = rows[0]
        event = Event(r[1], r[2], r[3], bytes(r[4]), float(r[5]), r[6], r[7])
        where = _Terms().deliveries_in(scope)
        where.add("d.event_seq = {}", r[0])
        deliveries = await self._deliveries(f"{where.where()} ORDER BY d.seq", where.args)
        return event, [d for _, d in deliveries]

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
        counted = _Terms().deliveries_in(scope)  # numbered first: its arguments are the statement's first
        counted.terms.insert(0, "d.event_seq = e.seq")
        where = _Terms()
        where.args = counted.args
        where.events_in(scope)
        if event_type is not None:
            where.add("e.type = {}", event_type)
        if since is not None:
            where.add("e.created_us >= {}", micros(since))
        if until is not None:
            where.add("e.created_us < {}", micros(until))
        if (before := position(cursor)) is not None:
            where.add("e.seq < {}", before)
        rows = await self._fetch(
            "SELECT e.seq, e.id, e.type, e.created_at, e.ingested_at,"
            f" (SELECT count(*) FROM deliveries d{counted.where()}), e.tenant"
            f" FROM events e{where.where()} ORDER BY e.seq DESC LIMIT {where.arg(limit + 1)}",
            *where.args,
        )
        events = [EventSummary(r[1], r[2], r[3], float(r[4]), int(r[5]), r[6]) for r in rows[:limit]]
        return EventPage(events, str(rows[limit - 1][0]) if len(rows) > limit else None)

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
        where = _Terms().deliveries_in(scope)
        if webhook_id is not None:
            where.add("d.webhook_id = {}", webhook_id)
        if status is not None:
            where.add("d.status = {}", status)
            if status != DeliveryStatus.SUCCEEDED:
                where.terms.append("d.status <> 'succeeded'")  # the condition of the partial index deliveries_status
        if since is not None:
            where.add("d.created_at >= {}", since)
        if until is not None:
            where.add("d.created_at < {}", until)
        if (before := position(cursor)) is not None:
            where.add("d.seq < {}", before)
        found = await self._deliveries(f"{where.where()} ORDER BY d.seq DESC LIMIT {where.arg(limit + 1)}", where.args)
        next_cursor = str(found[limit - 1][0]) if len(found) > limit else None
        return Page([d for _, d in found[:limit]], next_cursor)

    async def _deliveries_by_seq(self, seqs: Sequence[int]) -> list[Delivery]:
        found = await self._deliveries(" WHERE d.seq = ANY($1::int8[]) ORDER BY d.seq", [list(seqs)])
        return [d for _, d in found]

    async def _deliveries(self, tail: str, args: Sequence[Any]) -> list[tuple[int, Delivery]]:
        """Deliveries with their attempts, each with its position (seq) for paging."""
        rows = await self._fetch(
            "SELECT d.seq, d.id, e.id, d.webhook_id, d.status, d.attempt_count, d.due_at, d.created_at,"
            f" d.updated_at FROM deliveries d JOIN events e ON e.seq = d.event_seq{tail}",
            *args,
        )
        if not rows:
            return []
        attempts: dict[int, list[Attempt]] = {int(r[0]): [] for r in rows}
        for a in await self._fetch(
            "SELECT delivery_seq, number, started_at, duration_ms, status_code, error, error_detail,"
            " response_body, next_attempt_at FROM attempts WHERE delivery_seq = ANY($1::int8[])"
            " ORDER BY delivery_seq, number",
            list(attempts),
        ):
            attempts[int(a[0])].append(attempt_of(a))
        deliveries = [(int(r[0]), delivery_of(r, attempts[int(r[0])])) for r in rows]
        return deliveries

    async def status_counts(self, *, scope: Scope) -> dict[str, dict[str, int]]:
        """Delivery counts by webhook and status, of the webhooks inside ``scope``."""
        where = _Terms().deliveries_in(scope)
        rows = await self._fetch(
            f"SELECT d.webhook_id, d.status, count(*) FROM deliveries d{where.where()} GROUP BY d.webhook_id, d.status",
            *where.args,
        )
        counts: dict[str, dict[str, int]] = {}
        for r in rows:
            counts.setdefault(r[0], {})[r[1]] = int(r[2])
        return counts

    async def status_totals(self, *, scope: Scope = EVERYTHING, succeeded: bool = True) -> dict[str, int]:
        """Delivery counts by status, the webhooks inside ``scope`` together; without the succeeded ones, from
        the partial index ``deliveries_status``."""
        where = _Terms().deliveries_in(scope)
        if not succeeded:
            where.terms.insert(0, "d.status <> 'succeeded'")
        rows = await self._fetch(
            f"SELECT d.status, count(*) FROM deliveries d{where.where()} GROUP BY d.status", *where.args
        )
        return {r[0]: int(r[1]) for r in rows}

    async def earliest_due(self) -> float | None:
        """The earliest due time of a pending or failed delivery; None when there is none.

        One index seek per webhook with queued deliveries, as on SQLite: the recursive step walks the partial
        index ``deliveries_due`` from one webhook id to the next, and each webhook's first pending or failed entry
        in due order is its earliest (the ones being attempted are skipped).
        """
        rows = await self._fetch(
            f"""
            WITH RECURSIVE hooks(id) AS (
                SELECT min(webhook_id) FROM deliveries WHERE status IN {QUEUED}
                UNION ALL
                SELECT (SELECT min(webhook_id) FROM deliveries WHERE status IN {QUEUED} AND webhook_id > hooks.id)
                FROM hooks WHERE hooks.id IS NOT NULL
            )
            SELECT min((
                SELECT due_at FROM deliveries
                WHERE status IN {QUEUED} AND webhook_id = hooks.id AND status <> 'delivering'
                AND due_at IS NOT NULL
                ORDER BY due_at LIMIT 1
            )) FROM hooks WHERE hooks.id IS NOT NULL
            """
        )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def activity(self, since: float, until: float, *, scope: Scope) -> Activity:
        """Hourly counts read through the key of ``attempt_hours`` alone, as on SQLite: one seek per webhook with
        rows kept (a recursive walk of the key from one webhook id to the next), then each one's rows of the
        window's hours and of its newest hour (a row in both comes once: ``UNION``), in one statement."""
        first, end = window(since, until)
        where = _Terms()
        where.terms.append("id IS NOT NULL")
        where.deliveries_in(scope, "id")
        start, stop = where.arg(first), where.arg(end)
        rows = await self._fetch(
            f"""
            WITH RECURSIVE ids(id) AS (
                SELECT min(webhook_id) FROM attempt_hours
                UNION ALL
                SELECT (SELECT min(webhook_id) FROM attempt_hours WHERE webhook_id > ids.id)
                FROM ids WHERE ids.id IS NOT NULL
            ),
            -- materialized: each webhook's newest hour is looked up once, not once per row read
            hooks AS MATERIALIZED (
                SELECT id, (SELECT max(hour) FROM attempt_hours WHERE webhook_id = ids.id) AS newest
                FROM ids{where.where()}
            )
            SELECT hooks.id, a.hour, a.attempts, a.failures, a.hour = hooks.newest, a.last_at, a.last_ok
            FROM hooks CROSS JOIN LATERAL (
                SELECT node, hour, attempts, failures, last_at, last_ok FROM attempt_hours
                WHERE webhook_id = hooks.id AND hour >= {start} AND hour < {stop}
                UNION
                SELECT node, hour, attempts, failures, last_at, last_ok FROM attempt_hours
                WHERE webhook_id = hooks.id AND hour = hooks.newest
            ) a
            """,
            *where.args,
        )
        counted = [r[:4] for r in rows if first <= r[1] < end]
        newest = [(r[0], r[5], r[6]) for r in rows if r[4]]
        return activity_of(since, until, counted, newest)

    async def due_by_webhook(self) -> dict[str, float]:
        rows = await self._fetch(
            f"SELECT webhook_id, min(due_at) FROM deliveries WHERE status IN {QUEUED} GROUP BY webhook_id"
        )
        return {r[0]: float(r[1]) for r in rows if r[1] is not None}  # None: only deliveries waiting on their keys

    # -- webhooks and refresh tokens ---------------------------------------------------------------------

    async def webhook_created_at(self) -> dict[str, float]:
        rows = await self._fetch("SELECT id, created_at FROM webhooks")
        return {r[0]: float(r[1]) for r in rows}

    async def api_webhooks(self) -> list[StoredWebhook]:
        rows = await self._fetch(
            "SELECT id, spec, created_at, updated_at, previous_secret, previous_secret_until FROM webhooks"
            " WHERE source = 'api' ORDER BY created_at, id COLLATE \"C\""
        )
        return [stored_webhook(r) for r in rows]

    async def api_webhook(self, webhook_id: str) -> StoredWebhook | None:
        rows = await self._fetch(
            "SELECT id, spec, created_at, updated_at, previous_secret, previous_secret_until FROM webhooks"
            " WHERE source = 'api' AND id = $1",
            webhook_id,
        )
        return stored_webhook(rows[0]) if rows else None

    async def load_refresh_token(self, webhook_id: str) -> str | None:
        rows = await self._fetch("SELECT refresh_token FROM oauth_tokens WHERE webhook_id = $1", webhook_id)
        return str(rows[0][0]) if rows else None
