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
from relay.store.activity import hour_rows
from relay.store.base import AttemptResult, IngestResult, NewEvent, Room
from relay.store.ordering import (
    LATEST,
    ORDERED,
    KeyQueue,
    move_on,
    superseded_on_redrive,
    superseded_on_replay,
)
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
    keyed = _KeyedRows(conn)  # deliveries of ordered webhooks, of events with an ordering key
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
            event_rows.append((event_seq, event_id, e.type, e.created_at, e.data, now, count, e.tenant, e.ordering_key))
            leased: list[Claim] = []
            stored: Event | None = None
            for index, webhook_id in enumerate(e.webhook_ids):
                delivery_seq += 1
                delivery_id = new_id("dlv", now)
                if e.ordering_key is not None and e.orderings[index] in ORDERED:
                    queue = keyed.queue(webhook_id, e.ordering_key, e.orderings[index])
                    holds, superseded = queue.arrive(delivery_seq)
                    keyed.supersede(superseded, now)
                    if holds and budget.get(webhook_id, 0) > 0:
                        budget[webhook_id] -= 1
                        until = rooms[webhook_id].until
                        queue.started(delivery_seq)
                        keyed.add(
                            e.ordering_key,
                            queue.mode,
                            (delivery_seq, delivery_id, event_seq, webhook_id, "delivering", until, now),
                        )
                        stored = stored or Event(event_id, e.type, e.created_at, e.data, now)
                        lease = Lease(ingest.owner, until, delivery_seq, keyed=True)
                        leased.append(Claim(delivery_id, webhook_id, 1, now, stored, lease))
                    else:
                        due = now if holds else None
                        keyed.add(
                            e.ordering_key,
                            queue.mode,
                            (delivery_seq, delivery_id, event_seq, webhook_id, "pending", due, now),
                        )
                    continue
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
        "INSERT INTO events (seq, id, type, created_at, data, ingested_at, delivery_count, tenant, ordering_key)"
        " VALUES",
        event_rows,
    )
    _insert_many(
        conn,
        "INSERT INTO deliveries (seq, id, event_seq, webhook_id, status, due_at, created_at, updated_at) VALUES",
        delivery_rows,
    )
    keyed.write()
    return per_job


class _KeyedRows:
    """An ingest group's deliveries of ordering keys (``relay.store.ordering``): each key's queue read once from the
    store, the new rows (a later event of the group may supersede an earlier one's), and the stored ones superseded."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.queues: dict[tuple[str, str], KeyQueue] = {}
        self.rows: dict[int, list[Any]] = {}  # seq -> the new row
        self.superseded: list[int] = []  # stored seqs
        self.now = 0.0

    def queue(self, webhook_id: str, key: str, mode: str) -> KeyQueue:
        queue = self.queues.get((webhook_id, key))
        if queue is None:
            queue = self.queues[(webhook_id, key)] = KeyQueue(mode)
            for seq, status, due_at in key_rows(self.conn, webhook_id, key, all_waiting=mode == LATEST):
                queue.load(seq, status, due_at is not None)
        return queue

    def add(self, key: str, mode: str, row: tuple[Any, ...]) -> None:
        """A new delivery: ``(seq, id, event seq, webhook id, status, due at, now)``."""
        self.rows[row[0]] = [*row, row[-1], key, mode]  # created_at and updated_at are both the row's now

    def supersede(self, refs: list[Any], now: float) -> None:
        for seq in refs:
            if (row := self.rows.get(seq)) is not None:
                row[4], row[5] = "superseded", None
            else:
                self.superseded.append(seq)
                self.now = now

    def write(self) -> None:
        if self.superseded:
            self.conn.execute(
                "UPDATE deliveries SET status = 'superseded', due_at = NULL, updated_at = ?"
                " WHERE seq IN (SELECT value FROM json_each(?)) AND status IN ('pending', 'failed')",
                (self.now, orjson.dumps(self.superseded)),
            )
        _insert_many(
            self.conn,
            "INSERT INTO deliveries (seq, id, event_seq, webhook_id, status, due_at, created_at, updated_at,"
            " ordering_key, ordering) VALUES",
            [tuple(row) for row in self.rows.values()],
        )


def replay(
    conn: sqlite3.Connection,
    event_seq: int,
    key: str | None,
    webhook_ids: Sequence[str],
    orderings: Sequence[str],
    now: float,
) -> list[int]:
    """New deliveries of a stored event (``event_seq``, its ordering ``key``), due now; to an ordered webhook
    (``orderings``, in the order of ``webhook_ids``), at the end of its key's queue, or superseded at once for a
    ``latest`` key with a newer event (``superseded_on_replay``). Their seqs."""
    seq = conn.execute("SELECT IFNULL(MAX(seq), 0) FROM deliveries").fetchone()[0]
    plain: list[tuple[Any, ...]] = []
    keyed = _KeyedRows(conn)
    seqs = []
    for index, webhook_id in enumerate(webhook_ids):
        seq += 1
        seqs.append(seq)
        mode = orderings[index] if index < len(orderings) else "none"
        if key is None or mode not in ORDERED:
            plain.append((seq, new_id("dlv", now), event_seq, webhook_id, "pending", now, now, now))
            continue
        newer = conn.execute(
            "SELECT 1 FROM deliveries WHERE webhook_id = ? AND ordering_key = ? AND event_seq > ? LIMIT 1",
            (webhook_id, key, event_seq),
        ).fetchone()
        if superseded_on_replay(mode, newer is not None):
            keyed.add(key, mode, (seq, new_id("dlv", now), event_seq, webhook_id, "superseded", None, now))
            continue
        queue = keyed.queue(webhook_id, key, mode)
        holds, superseded = queue.arrive(seq)
        keyed.supersede(superseded, now)
        row = (seq, new_id("dlv", now), event_seq, webhook_id, "pending", now if holds else None, now)
        keyed.add(key, mode, row)
    _insert_many(
        conn,
        "INSERT INTO deliveries (seq, id, event_seq, webhook_id, status, due_at, created_at, updated_at) VALUES",
        plain,
    )
    keyed.write()
    return seqs


def redrive_dead_keyed(conn: sqlite3.Connection, webhook_ids: Sequence[str], now: float) -> list[tuple[str]]:
    """Dead deliveries of ordering keys, re-driven: oldest first, each the head of its key (due now) when the key has
    none, else waiting behind it; one of a ``latest`` key with a newer delivery ends superseded instead
    (``superseded_on_redrive``). One row (the webhook id) for each re-driven."""
    marks = ",".join("?" * len(webhook_ids))
    dead = conn.execute(
        f"SELECT seq, webhook_id, ordering_key, ordering FROM deliveries WHERE status = 'dead'"
        f" AND ordering_key IS NOT NULL AND webhook_id IN ({marks}) ORDER BY seq",
        list(webhook_ids),
    ).fetchall()
    redriven: list[tuple[str]] = []
    for seq, webhook_id, key, mode in dead:
        newer = conn.execute(
            "SELECT 1 FROM deliveries WHERE webhook_id = ? AND ordering_key = ? AND seq > ? LIMIT 1",
            (webhook_id, key, seq),
        ).fetchone()
        if superseded_on_redrive(mode, newer is not None):
            conn.execute(
                "UPDATE deliveries SET status = 'superseded', due_at = NULL, updated_at = ? WHERE seq = ?", (now, seq)
            )
            continue
        queue = _KeyedRows(conn).queue(webhook_id, key, mode)
        holds = queue.in_flight is None and queue.head is None
        conn.execute(
            "UPDATE deliveries SET status = 'pending', due_at = ?, updated_at = ? WHERE seq = ?",
            (now if holds else None, now, seq),
        )
        redriven.append((webhook_id,))
    return redriven


def cancel(conn: sqlite3.Connection, seq: int, now: float) -> str:
    """Cancel one delivery that has not ended: its status before ("delivering" and ended ones are left as they
    are); a key it held moves on."""
    row = conn.execute("SELECT status, ordering_key FROM deliveries WHERE seq = ?", (seq,)).fetchone()
    if row is None or row[0] not in ("pending", "failed"):
        return str(row[0]) if row is not None else "missing"
    conn.execute("UPDATE deliveries SET status = 'cancelled', due_at = NULL, updated_at = ? WHERE seq = ?", (now, seq))
    if row[1] is not None:
        move_keys_on(conn, {seq: now})
    return str(row[0])


def claim(
    conn: sqlite3.Connection, owner: str, webhook_id: str, limit: int, now: float, lease_until: float
) -> tuple[list[Claim], float | None]:
    """Lease up to ``limit`` due deliveries of one webhook, oldest due first, with their events; and the earliest
    due time of the webhook's deliveries still queued after the claim."""
    # One row holding them all (times as exact decimal text), not one statement step per delivery.
    found = conn.execute(
        f"""SELECT json_group_array(json_array(d.seq, d.id, d.attempt_count, printf('%!.17g', d.created_at),
                e.id, e.type, e.created_at, CAST(e.data AS TEXT), printf('%!.17g', e.ingested_at), d.keyed))
        FROM (
            SELECT seq, id, event_seq, attempt_count, created_at, ordering_key IS NOT NULL AS keyed FROM deliveries
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
            Lease(owner, lease_until, r[0], bool(r[9])),
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


def apply_results(conn: sqlite3.Connection, jobs: list[Job]) -> list[list[Claim]]:
    """Record the group's finished attempts and the decisions taken after them; for each job, the deliveries its
    results' keys moved on to that it asked to have leased (``AttemptResult.lease_next_until``)."""
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
    # Every result counts in its hour, also one whose delivery was pruned meanwhile (``activity.hour_rows``).
    _insert_many(conn, _ADD_HOURS, hour_rows(results))
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
    keyed = {r.lease.ref: r.attempt.started_at + r.attempt.duration_ms / 1000 for r in first.values() if r.lease.keyed}
    if not keyed:
        return [[] for _ in jobs]
    leases = {
        r.lease.ref: (r.lease.owner, r.lease_next_until)
        for r in first.values()
        if r.lease.keyed and r.lease_next_until is not None
    }
    leased = move_keys_on(conn, keyed, leases)
    return [[leased[r.lease.ref] for r in job.payload if r.lease.ref in leased] for job in jobs]


# Counts add up; the newest attempt is the one with the later start (the one written last, of two at one moment).
_ADD_HOURS = (
    "INSERT INTO attempt_hours (webhook_id, hour, node, attempts, failures, last_at, last_ok) VALUES {rows}"
    " ON CONFLICT (webhook_id, hour, node) DO UPDATE SET attempts = attempts + excluded.attempts,"
    " failures = failures + excluded.failures,"
    " last_at = CASE WHEN excluded.last_at >= last_at THEN excluded.last_at ELSE last_at END,"
    " last_ok = CASE WHEN excluded.last_at >= last_at THEN excluded.last_ok ELSE last_ok END"
)


def move_keys_on(
    conn: sqlite3.Connection, ended_at: dict[int, float], leases: dict[int, tuple[str, float]] | None = None
) -> dict[int, Claim]:
    """After results (or a cancellation) of deliveries holding their ordering keys (seq -> when): a head that ended
    lets its key's oldest waiting delivery become the head, due then; a ``latest`` head whose attempt failed while a
    newer one waits is superseded by it (``relay.store.ordering``). A delivery whose result did not count (another
    lease holds it) is left as it is. Where ``leases`` asks (ended seq -> owner and lease end), the new head is
    leased instead, and comes back as a claim (by the ended seq)."""
    claims: dict[int, Claim] = {}
    rows = conn.execute(
        "SELECT seq, webhook_id, ordering_key, ordering, status FROM deliveries"
        " WHERE seq IN (SELECT value FROM json_each(?)) AND ordering_key IS NOT NULL",
        (orjson.dumps(list(ended_at)),),
    ).fetchall()
    for seq, webhook_id, key, mode, status in rows:
        at = ended_at[seq]
        queue = KeyQueue(mode)
        for ref, state, due_at in key_rows(conn, webhook_id, key, all_waiting=False):
            queue.load(ref, state, due_at is not None)
        superseded, head = move_on(queue, seq, status)
        if superseded is not None:
            conn.execute(
                "UPDATE deliveries SET status = 'superseded', due_at = NULL, updated_at = ? WHERE seq = ?", (at, seq)
            )
        if not isinstance(head, int):  # no delivery of the key becomes the head (refs are seqs)
            continue
        if leases is not None and seq in leases:
            owner, until = leases[seq]
            conn.execute(
                "UPDATE deliveries SET status = 'delivering', due_at = ?, updated_at = ? WHERE seq = ?",
                (until, at, head),
            )
            r = conn.execute(
                "SELECT d.id, d.attempt_count, d.created_at, e.id, e.type, e.created_at, e.data, e.ingested_at"
                " FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.seq = ?",
                (head,),
            ).fetchone()
            event = Event(r[3], r[4], r[5], bytes(r[6]), float(r[7]))
            claims[seq] = Claim(r[0], webhook_id, r[1] + 1, float(r[2]), event, Lease(owner, until, head, True))
        else:
            conn.execute("UPDATE deliveries SET due_at = ?, updated_at = ? WHERE seq = ?", (at, at, head))
    return claims


_KEY_ROWS = (
    f"SELECT seq, status, due_at FROM deliveries WHERE webhook_id = ? AND ordering_key = ?"
    f" AND ordering_key IS NOT NULL AND status IN {QUEUED}"
)


def key_rows(conn: sqlite3.Connection, webhook_id: str, key: str, *, all_waiting: bool) -> list[Any]:
    """What ``KeyQueue.load`` needs of a key, in seq order, in index seeks (``deliveries_key``): its head (the one
    row with a due time; more only if a bug broke the rule) and its waiting deliveries, all of them or (when only
    whether there are any matters) the oldest."""
    heads = conn.execute(f"{_KEY_ROWS} AND due_at IS NOT NULL", (webhook_id, key)).fetchall()
    limit = "" if all_waiting else " LIMIT 1"
    waiting = conn.execute(f"{_KEY_ROWS} AND due_at IS NULL ORDER BY seq{limit}", (webhook_id, key)).fetchall()
    return sorted([*heads, *waiting])


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
