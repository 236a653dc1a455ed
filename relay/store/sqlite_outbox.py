"""The SQLite backend's hot-path statements: ingest, claim, attempt results. Each runs inside a group transaction
of ``sqlite_writer`` and is set-based (multi-row ``VALUES``, one aggregated row per claim): a handful of statements
per group whatever its size.

A lease's ``ref`` is the delivery's seq; its ``until`` is the delivery's ``due_at`` while it is ``delivering``. A
result or a release counts only while the delivery still holds that lease (seq, id, status and ``due_at`` all
unchanged): one that ran out and was claimed again, or a delivery cancelled meanwhile, is left as it is.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from relay.models import Claim, Event, Lease, new_event_id, new_id
from relay.store.base import AttemptResult, IngestResult, NewEvent, Room
from relay.store.rows import foreign_ids
from relay.store.sqlite_schema import QUEUED
from relay.store.sqlite_writer import Job


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Ingest:
    """An ingest job's payload."""

    events: list[NewEvent]
    rooms: Mapping[str, Room] | None
    owner: str


def apply_ingest(conn: sqlite3.Connection, jobs: list[Job]) -> list[list[IngestResult]]:
    """Insert the group's new events and deliveries; one list of answers per job, in job order.

    An id already stored, or created by an earlier job of this group, answers as that first time did, with
    ``created=False``.
    """
    known: dict[str, tuple[int, str | None]] = {}  # id -> delivery count and tenant, of events stored or in this group
    wanted = list({e.id for job in jobs for e in job.payload.events})
    sql = "SELECT id, delivery_count, tenant FROM events WHERE id IN (SELECT value FROM json_each(?))"
    for row in conn.execute(sql, (orjson.dumps(wanted),)).fetchall():
        known[row[0]] = (int(row[1]), row[2])
    event_seq, delivery_seq = conn.execute(
        "SELECT (SELECT IFNULL(MAX(seq), 0) FROM events), (SELECT IFNULL(MAX(seq), 0) FROM deliveries)"
    ).fetchone()
    event_rows: list[tuple[Any, ...]] = []
    delivery_rows: list[tuple[Any, ...]] = []
    per_job: list[list[IngestResult]] = []
    for job in jobs:
        now = job.now
        ingest: Ingest = job.payload
        if taken := foreign_ids(ingest.events, known):
            per_job.append([IngestResult(e.id, 0, False, taken=e.id in taken) for e in ingest.events])
            continue
        job_answers = []
        rooms = ingest.rooms or {}
        budget = {webhook_id: room.count for webhook_id, room in rooms.items()}
        for e in ingest.events:
            event_id = e.id
            first = known.get(event_id)
            if first is not None and e.generated:
                # A producer posted this id before relay made it up (generated ids count up, so they can be
                # foreseen): this is another event, and it gets another id rather than answering as that one.
                event_id, first = _unused_event_id(conn, known, now), None
            if first is not None:
                job_answers.append(IngestResult(event_id, first[0], False))
                continue
            count = len(e.webhook_ids)
            known[event_id] = (count, e.tenant)
            event_seq += 1
            event_rows.append((event_seq, event_id, e.type, e.created_at, e.data, now, count, e.tenant))
            leased: list[Claim] = []
            stored: Event | None = None
            for webhook_id in e.webhook_ids:
                delivery_seq += 1
                delivery_id = new_id("dlv", now)
                if budget.get(webhook_id, 0) > 0:
                    budget[webhook_id] -= 1
                    until = rooms[webhook_id].until
                    delivery_rows.append(
                        (delivery_seq, delivery_id, event_seq, webhook_id, "delivering", until, now, now)
                    )
                    stored = stored or Event(event_id, e.type, e.created_at, e.data, now)
                    lease = Lease(ingest.owner, until, delivery_seq)
                    leased.append(Claim(delivery_id, webhook_id, 1, now, stored, lease))
                else:
                    delivery_rows.append((delivery_seq, delivery_id, event_seq, webhook_id, "pending", now, now, now))
            job_answers.append(IngestResult(event_id, count, True, tuple(leased)))
        per_job.append(job_answers)
    _insert_many(
        conn,
        "INSERT INTO events (seq, id, type, created_at, data, ingested_at, delivery_count, tenant) VALUES",
        event_rows,
    )
    _insert_many(
        conn,
        "INSERT INTO deliveries (seq, id, event_seq, webhook_id, status, due_at, created_at, updated_at) VALUES",
        delivery_rows,
    )
    return per_job


def claim(
    conn: sqlite3.Connection, owner: str, webhook_id: str, limit: int, now: float, lease_until: float
) -> tuple[list[Claim], float | None]:
    """Lease up to ``limit`` due deliveries of one webhook, oldest due first, with their events; and the earliest
    due time of the webhook's deliveries still queued after the claim."""
    # One row holding them all (times as exact decimal text), not one statement step per delivery.
    found = conn.execute(
        f"""SELECT json_group_array(json_array(d.seq, d.id, d.attempt_count, printf('%!.17g', d.created_at),
                e.id, e.type, e.created_at, CAST(e.data AS TEXT), printf('%!.17g', e.ingested_at)))
        FROM (
            SELECT seq, id, event_seq, attempt_count, created_at FROM deliveries
            WHERE webhook_id = ? AND status IN {QUEUED} AND due_at <= ?
            ORDER BY due_at LIMIT ?
        ) d JOIN events e ON e.seq = d.event_seq""",
        (webhook_id, now, limit),
    ).fetchone()[0]
    rows = sorted(orjson.loads(found))  # by seq: the order they were created in
    claims = [
        Claim(
            r[1],
            webhook_id,
            r[2] + 1,
            float(r[3]),
            Event(r[4], r[5], r[6], r[7].encode(), float(r[8])),
            Lease(owner, lease_until, r[0]),
        )
        for r in rows
    ]
    if claims:
        conn.execute(
            "UPDATE deliveries SET status = 'delivering', due_at = ?, updated_at = ?"
            " WHERE seq IN (SELECT value FROM json_each(?))",
            (lease_until, now, orjson.dumps([r[0] for r in rows])),
        )
    next_due = conn.execute(
        f"SELECT MIN(due_at) FROM deliveries WHERE webhook_id = ? AND status IN {QUEUED}", (webhook_id,)
    ).fetchone()[0]
    return claims, next_due


def apply_results(conn: sqlite3.Connection, jobs: list[Job]) -> list[None]:
    """Record the group's finished attempts and the decisions taken after them."""
    results: list[AttemptResult] = [r for job in jobs for r in job.payload]
    # A delivery pruned while its attempt was in flight leaves no attempt behind, and its seq, if reused by a
    # newer delivery, is not mistaken for it (column1 is the seq, column10 the delivery id).
    _insert_many(
        conn,
        "INSERT OR REPLACE INTO attempts (delivery_seq, number, started_at, duration_ms, status_code, error,"
        " error_detail, response_body, next_attempt_at) SELECT column1, column2, column3, column4, column5,"
        " column6, column7, column8, column9 FROM (VALUES {rows}) AS v"
        " WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = v.column1 AND d.id = v.column10)",
        [
            (
                r.lease.ref,
                r.attempt.number,
                r.attempt.started_at,
                r.attempt.duration_ms,
                r.attempt.status_code,
                r.attempt.error,
                r.attempt.error_detail,
                r.attempt.response_body,
                r.attempt.next_attempt_at,
                r.delivery_id,
            )
            for r in results
        ],
    )
    # Only a delivery still under this lease moves on: one cancelled, or leased again, meanwhile stays as it is.
    # Of two results for one delivery in a group the first wins, as it would one by one.
    first: dict[int, AttemptResult] = {}
    for r in results:
        first.setdefault(r.lease.ref, r)
    _insert_many(
        conn,
        "UPDATE deliveries SET status = v.column1, attempt_count = v.column2, due_at = v.column3,"
        " updated_at = v.column4 FROM (VALUES {rows}) AS v"
        " WHERE deliveries.seq = v.column5 AND deliveries.id = v.column6 AND deliveries.status = 'delivering'"
        " AND deliveries.due_at = v.column7",
        [
            (
                r.status,
                r.attempt.number,
                r.due_at,
                r.attempt.started_at + r.attempt.duration_ms / 1000,
                r.lease.ref,
                r.delivery_id,
                r.lease.until,
            )
            for r in first.values()
        ],
    )
    return [None] * len(jobs)


def release(conn: sqlite3.Connection, claims: Sequence[Claim], now: float) -> None:
    """Claimed deliveries still under their claim's lease are due again at once."""
    conn.executemany(
        "UPDATE deliveries SET status = 'pending', due_at = ?, updated_at = ?"
        " WHERE seq = ? AND id = ? AND status = 'delivering' AND due_at = ?",
        [(now, now, claim.lease.ref, claim.delivery_id, claim.lease.until) for claim in claims],
    )


def renew(conn: sqlite3.Connection, claims: Sequence[Claim], now: float, until: float) -> list[Claim]:
    """Extend to ``until`` the leases these claims still hold (fenced like ``release``); the claims renewed."""
    renewed = []
    for claim in claims:
        cursor = conn.execute(
            "UPDATE deliveries SET due_at = ?, updated_at = ?"
            " WHERE seq = ? AND id = ? AND status = 'delivering' AND due_at = ?",
            (until, now, claim.lease.ref, claim.delivery_id, claim.lease.until),
        )
        if cursor.rowcount:
            renewed.append(claim)
    return renewed


def cancel_queued(conn: sqlite3.Connection, webhook_id: str, now: float) -> int:
    """Cancel a webhook's deliveries that have not ended (kept, as ``cancelled``); returns how many."""
    cursor = conn.execute(
        f"UPDATE deliveries SET status = 'cancelled', due_at = NULL, updated_at = ?"
        f" WHERE webhook_id = ? AND status IN {QUEUED}",
        (now, webhook_id),
    )
    return cursor.rowcount


def _unused_event_id(conn: sqlite3.Connection, known: Mapping[str, object], now: float) -> str:
    """A generated event id that no stored event and no event of this group has."""
    while True:
        candidate = new_event_id(now)
        if (
            candidate not in known
            and conn.execute("SELECT 1 FROM events WHERE id = ?", (candidate,)).fetchone() is None
        ):
            return candidate


@functools.lru_cache(maxsize=64)
def _values_sql(statement: str, width: int, count: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    values = ",".join([row] * count)
    return statement.replace("{rows}", values) if "{rows}" in statement else f"{statement} {values}"


def _insert_many(conn: sqlite3.Connection, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Run ``statement`` with ``rows`` as a multi-row VALUES list (at ``{rows}``, else at the end).

    One statement step per chunk instead of one per row. Chunk sizes are powers of two (512, 256, ... 1), so a
    handful of distinct statements are prepared once and then come from the statement cache.
    """
    start = 0
    while start < len(rows):
        size = min(_CHUNK, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        width = len(chunk[0])
        conn.execute(_values_sql(statement, width, size), [value for row in chunk for value in row])
        start += size


_CHUNK = 512  # rows per statement: 512 x 10 columns stays far below SQLite's 32766 bound parameters
