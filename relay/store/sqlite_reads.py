"""The SQLite backend's reads (``SqliteStore`` inherits them), on a read connection of their own.

Everything the API shows of the outbox is read here: events with their deliveries and attempts, a webhook's
delivery history page by page, status counts, the webhooks created through the API, and refresh tokens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from relay.errors import Problem, StoreUnavailable, ValidationError
from relay.models import Attempt, Delivery, DeliveryStatus, ErrorKind, Event
from relay.store.base import Page, StoredWebhook
from relay.store.sqlite_schema import QUEUED, translate


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqliteReads:
    """Read queries; ``SqliteStore`` provides the connection."""

    _reader: aiosqlite.Connection | None

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StoreUnavailable("the store is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    # -- events and deliveries ---------------------------------------------------------------------------

    async def get_event(self, event_id: str) -> tuple[Event, list[Delivery]] | None:
        rows = await self._read(
            "SELECT seq, id, type, created_at, data, ingested_at FROM events WHERE id = ?", (event_id,)
        )
        if not rows:
            return None
        r = rows[0]
        event = Event(r[1], r[2], r[3], bytes(r[4]), float(r[5]))
        deliveries = await self._deliveries("WHERE d.event_seq = ? ORDER BY d.seq", (int(r[0]),))
        return event, [d for _, d in deliveries]

    async def deliveries_of_webhook(
        self, webhook_id: str, *, status: str | None, cursor: str | None, limit: int
    ) -> Page:
        where = ["d.webhook_id = ?"]
        params: list[Any] = [webhook_id]
        if status is not None:
            where.append("d.status = ?")
            params.append(status)
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
                raise ValidationError([Problem("cursor", "is not a cursor this list gave")])
            where.append("d.seq < ?")
            params.append(int(cursor))
        params.append(limit + 1)
        found = await self._deliveries(f"WHERE {' AND '.join(where)} ORDER BY d.seq DESC LIMIT ?", params)
        page = found[:limit]
        next_cursor = str(page[-1][0]) if len(found) > limit else None
        return Page([d for _, d in page], next_cursor)

    async def _deliveries_by_seq(self, seqs: Sequence[int]) -> list[Delivery]:
        found: list[Delivery] = []
        for chunk in chunks(list(seqs), 500):
            marks = ",".join("?" * len(chunk))
            found.extend(d for _, d in await self._deliveries(f"WHERE d.seq IN ({marks}) ORDER BY d.seq", chunk))
        return found

    async def _deliveries(self, tail: str, params: Sequence[Any]) -> list[tuple[int, Delivery]]:
        """Deliveries with their attempts, each with its position (seq) for paging."""
        rows = await self._read(
            "SELECT d.seq, d.id, e.id, d.webhook_id, d.status, d.attempt_count, d.due_at, d.created_at,"
            f" d.updated_at FROM deliveries d JOIN events e ON e.seq = d.event_seq {tail}",
            params,
        )
        if not rows:
            return []
        seqs = [int(r[0]) for r in rows]
        attempts: dict[int, list[Attempt]] = {seq: [] for seq in seqs}
        for chunk in chunks(seqs, 500):
            marks = ",".join("?" * len(chunk))
            for a in await self._read(
                "SELECT delivery_seq, number, started_at, duration_ms, status_code, error, error_detail,"
                f" response_body, next_attempt_at FROM attempts WHERE delivery_seq IN ({marks})"
                " ORDER BY delivery_seq, number",
                chunk,
            ):
                attempts[int(a[0])].append(
                    Attempt(
                        number=int(a[1]),
                        started_at=float(a[2]),
                        duration_ms=float(a[3]),
                        status_code=a[4],
                        error=ErrorKind(a[5]) if a[5] else None,
                        error_detail=a[6],
                        response_body=a[7],
                        next_attempt_at=a[8],
                    )
                )
        deliveries = []
        for r in rows:
            status = DeliveryStatus(r[4])
            shown_due = r[6] if status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED) else None
            delivery = Delivery(
                id=r[1],
                event_id=r[2],
                webhook_id=r[3],
                status=status,
                attempt_count=int(r[5]),
                next_attempt_at=shown_due,
                created_at=float(r[7]),
                updated_at=float(r[8]),
                attempts=tuple(attempts[int(r[0])]),
            )
            deliveries.append((int(r[0]), delivery))
        return deliveries

    async def status_counts(self) -> dict[str, dict[str, int]]:
        """Delivery counts by webhook and status."""
        rows = await self._read("SELECT webhook_id, status, COUNT(*) FROM deliveries GROUP BY webhook_id, status")
        counts: dict[str, dict[str, int]] = {}
        for r in rows:
            counts.setdefault(r[0], {})[r[1]] = int(r[2])
        return counts

    async def status_totals(self) -> dict[str, int]:
        """Delivery counts by status, all webhooks together."""
        rows = await self._read("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
        return {r[0]: int(r[1]) for r in rows}

    async def earliest_due(self) -> float | None:
        """The earliest due time of a pending or failed delivery; None when there is none.

        One index seek per webhook with queued deliveries, however many there are: the recursive step walks the
        partial index ``deliveries_due`` from one webhook id to the next, and each webhook's first pending or
        failed entry in due order is its earliest (the ones being attempted, at most the concurrency, are
        skipped). A plain ``MIN(due_at)`` would visit every queued delivery.
        """
        rows = await self._read(
            f"""
            WITH RECURSIVE hooks(id) AS (
                SELECT MIN(webhook_id) FROM deliveries WHERE status IN {QUEUED}
                UNION ALL
                SELECT (SELECT MIN(webhook_id) FROM deliveries WHERE status IN {QUEUED} AND webhook_id > hooks.id)
                FROM hooks WHERE hooks.id IS NOT NULL
            )
            SELECT MIN((
                SELECT due_at FROM deliveries
                WHERE status IN {QUEUED} AND webhook_id = hooks.id AND status != 'delivering'
                ORDER BY due_at LIMIT 1
            )) FROM hooks WHERE hooks.id IS NOT NULL
            """
        )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # -- webhooks created through the API ----------------------------------------------------------------

    async def due_by_webhook(self) -> dict[str, float]:
        rows = await self._read(
            f"SELECT webhook_id, MIN(due_at) FROM deliveries WHERE status IN {QUEUED} GROUP BY webhook_id"
        )
        return {r[0]: float(r[1]) for r in rows}

    # -- webhooks and refresh tokens ---------------------------------------------------------------------

    async def webhook_created_at(self) -> dict[str, float]:
        rows = await self._read("SELECT id, created_at FROM webhooks")
        return {r[0]: float(r[1]) for r in rows}

    async def api_webhooks(self) -> list[StoredWebhook]:
        rows = await self._read(
            "SELECT id, spec, created_at, updated_at, previous_secret, previous_secret_until FROM webhooks"
            " WHERE source = 'api' ORDER BY created_at, id"
        )
        return [_stored_webhook(r) for r in rows]

    async def api_webhook(self, webhook_id: str) -> StoredWebhook | None:
        rows = await self._read(
            "SELECT id, spec, created_at, updated_at, previous_secret, previous_secret_until FROM webhooks"
            " WHERE source = 'api' AND id = ?",
            (webhook_id,),
        )
        return _stored_webhook(rows[0]) if rows else None

    async def load_refresh_token(self, webhook_id: str) -> str | None:
        rows = await self._read("SELECT refresh_token FROM oauth_tokens WHERE webhook_id = ?", (webhook_id,))
        return str(rows[0][0]) if rows else None


def _stored_webhook(r: sqlite3.Row) -> StoredWebhook:
    return StoredWebhook(
        id=r[0],
        spec=bytes(r[1]),
        created_at=float(r[2]),
        updated_at=float(r[3]),
        previous_secret=r[4],
        previous_secret_until=None if r[5] is None else float(r[5]),
    )
