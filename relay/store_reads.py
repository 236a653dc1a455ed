"""The store's read queries (part of the store layer: ``Store`` inherits them), on its own read connection.

Everything the API shows of the outbox is read here: events with their deliveries and attempts, a webhook's
delivery history page by page, status counts, and the webhooks created through the API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from relay.errors import StoreError, StoreUnavailable
from relay.models import Attempt, Delivery, DeliveryStatus, ErrorKind, Event

_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


def translate(exc: sqlite3.Error) -> StoreError:
    """A driver error as the project's own: ``StoreUnavailable`` when retrying later may work."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if isinstance(exc, sqlite3.OperationalError) or primary in _UNAVAILABLE_CODES:
        return StoreUnavailable(str(exc))
    return StoreError(str(exc))


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """A webhook created through the API, as stored: its definition and its rotation state."""

    id: str
    spec: bytes  # the JSON body it was created from with every later change merged in (secrets included)
    created_at: float
    updated_at: float
    previous_secret: str | None
    previous_secret_until: float | None


class StoreReads:
    """Read queries; ``Store`` provides the connection."""

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
        event = Event(int(r[0]), r[1], r[2], r[3], bytes(r[4]), float(r[5]))
        deliveries = await self._deliveries("WHERE d.event_seq = ? ORDER BY d.seq", (event.seq,))
        return event, deliveries

    async def deliveries_of_webhook(
        self, webhook_id: str, *, status: str | None, before_seq: int | None, limit: int
    ) -> list[Delivery]:
        where = ["d.webhook_id = ?"]
        params: list[Any] = [webhook_id]
        if status is not None:
            where.append("d.status = ?")
            params.append(status)
        if before_seq is not None:
            where.append("d.seq < ?")
            params.append(before_seq)
        params.append(limit)
        return await self._deliveries(f"WHERE {' AND '.join(where)} ORDER BY d.seq DESC LIMIT ?", params)

    async def deliveries_by_seq(self, seqs: Sequence[int]) -> list[Delivery]:
        found: list[Delivery] = []
        for chunk in chunks(list(seqs), 500):
            marks = ",".join("?" * len(chunk))
            found.extend(await self._deliveries(f"WHERE d.seq IN ({marks}) ORDER BY d.seq", chunk))
        return found

    async def _deliveries(self, tail: str, params: Sequence[Any]) -> list[Delivery]:
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
            deliveries.append(
                Delivery(
                    seq=int(r[0]),
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
            )
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

    # -- webhooks created through the API ----------------------------------------------------------------

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


def _stored_webhook(r: sqlite3.Row) -> StoredWebhook:
    return StoredWebhook(
        id=r[0],
        spec=bytes(r[1]),
        created_at=float(r[2]),
        updated_at=float(r[3]),
        previous_secret=r[4],
        previous_secret_until=None if r[5] is None else float(r[5]),
    )
