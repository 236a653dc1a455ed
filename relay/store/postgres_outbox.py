"""The PostgreSQL backend's write statements: ingest (a group of jobs at a time, see ``postgres_writer``), claim,
attempt results, release, reclaim, replay, re-drive, prune. Set-based: rows travel as arrays (``unnest``), so a
statement costs one round trip whatever the number of rows.

Several relays write here at once; the database decides what one relay alone could decide in memory:
- **Duplicates.** A group looks its producers' ids up first and decides each request as SQLite does (an id stored
  answers as the first time; one of another tenant's event refuses the request). The unique index on ``events.id``
  has the last word: events go in with ``ON CONFLICT (id) DO NOTHING RETURNING``; a generated id that is taken gets
  another and goes in again, and a producer's id another relay stored since the lookup runs the group again.
- **Claims** lock the due rows they take with ``FOR UPDATE SKIP LOCKED`` inside the statement that leases them: two
  relays never take one delivery, and never wait on each other.
- **Leases and fencing** as in ``sqlite_outbox``: a lease's ``ref`` is the delivery's seq, its ``until`` the
  delivery's ``due_at`` while it is ``delivering``, and ``lease_owner`` names the relay that holds it. A result or a
  release counts only while the delivery still holds that lease (seq, id, status, ``due_at`` and owner unchanged).
- **Ordering keys** (``postgres_keys``): a transaction that decides a key's head holds the key's advisory lock, so
  two relays never both make a head of one key; a claim takes only due rows, and only a head is due.
- **Prune against replay and results.** Prune locks the events it removes (``FOR UPDATE``) and checks again, in a
  later statement, that none got a new delivery; a replay holds its event (``FOR KEY SHARE``) and a result its
  delivery, so each waits for the other instead of leaving a delivery without its event or an attempt without its
  delivery.

Times are the ``now`` and ``lease_until`` the caller passes (epoch seconds of the relay's clock, which the daemon
keeps on the database's: ``PostgresStore.clock_offset``), as a lease one relay sets is read against another's clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.errors import StoreUnavailable
from relay.models import Claim, Event, Lease, new_event_id, new_id
from relay.store.activity import HOUR, hour_rows
from relay.store.base import AttemptResult, IngestResult, NewEvent
from relay.store.ordering import ORDERED, KeyQueue, superseded_on_replay
from relay.store.postgres_keys import (
    LOCK_KEYS_OF,
    load_queues,
    lock_keys,
    move_keys_on,
    ordered,
    ordered_keys,
    redrive_dead_keyed,
    supersede,
)
from relay.store.postgres_schema import QUEUED
from relay.store.postgres_writer import Job
from relay.store.rows import foreign_ids

Conn = Any  # an asyncpg connection (asyncpg has no types)
ID_ROUNDS = 5  # rounds of inserts whose ids keep colliding with other relays' before a group gives up

_INSERT_EVENTS = """
INSERT INTO events (id, type, created_at, created_us, data, ingested_at, delivery_count, tenant, ordering_key)
SELECT v.id, v.type, v.created_at, (extract(epoch FROM v.created_at::timestamptz) * 1000000)::bigint,
       v.data, v.ingested_at, v.delivery_count, v.tenant, v.ordering_key
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::float8[], $6::int4[], $7::text[], $8::text[])
     WITH ORDINALITY AS v(id, type, created_at, data, ingested_at, delivery_count, tenant, ordering_key, n)
ORDER BY v.n
ON CONFLICT (id) DO NOTHING
RETURNING id, seq
"""

# Only the leased ones come back: their seq is their lease's ref. A delivery of an ordering key keeps the key and
# its webhook's ordering (NULL for every other).
_INSERT_DELIVERIES = """
WITH made AS (
    INSERT INTO deliveries (id, event_seq, webhook_id, status, due_at, lease_owner, created_at, updated_at,
                            ordering_key, ordering)
    SELECT v.id, v.event_seq, v.webhook_id, v.status, v.due_at, v.lease_owner, v.at, v.at, v.ordering_key, v.ordering
    FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::float8[], $8::text[],
                $9::text[])
         WITH ORDINALITY AS v(id, event_seq, webhook_id, status, due_at, lease_owner, at, ordering_key, ordering, n)
    ORDER BY v.n
    RETURNING id, seq, status
)
SELECT id, seq FROM made WHERE status = 'delivering'
"""


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class _Entry:
    """One event of a group, as the group decides it: under which id, and whether this group stored it."""

    event: NewEvent
    id: str
    now: float
    first: bool  # the first of its id in the group: the one that goes in (a later one answers as it)
    seq: int | None = None  # set once this group stored it
    leased: list[Claim] = field(default_factory=list)


class GroupRetry(StoreUnavailable):
    """The group met an id another relay stored while it ran: roll it back and run it again from the start (it then
    finds the id stored, and decides as SQLite would)."""


async def apply_ingest(conn: Conn, jobs: list[Job], owner: str) -> list[list[IngestResult]]:
    """Insert the group's new events and deliveries, inside the caller's transaction; one list of answers per job,
    in job order. An id already stored, or stored by an earlier job of this group, answers as that first time did,
    with ``created=False``; with ``rooms``, a job's first new deliveries of a webhook are committed leased.

    A job holding an id of another tenant's event (stored, or of an earlier job of the group) stores nothing
    (``IngestResult.taken``). Whose each id is is known before anything is inserted: the producers' ids are looked
    up first, and the jobs decided one after another, as on SQLite. One that another relay stores meanwhile makes
    the group run again (``GroupRetry``)."""
    # One head per (webhook, key) in the whole group: the keys this group may decide are locked before anything.
    await lock_keys(conn, [key for job in jobs for e in job.events for key in ordered_keys(e)])
    producer_ids = list({e.id for job in jobs for e in job.events if not e.generated})
    known: dict[str, tuple[int, str | None]] = {}
    if producer_ids:  # a round trip only when producers gave ids (ids relay makes up are new)
        sql = "SELECT id, delivery_count, tenant FROM events WHERE id = ANY($1::text[])"
        known = {r[0]: (r[1], r[2]) for r in await conn.fetch(sql, producer_ids)}
    taken: set[str] = set(known)  # ids stored or of the group: a generated id avoids them
    per_job: list[list[_Entry] | None] = []  # None: the job is refused
    refusals: dict[int, list[IngestResult]] = {}  # a refused job's answers, by its index
    for index, job in enumerate(jobs):
        if foreign := foreign_ids(job.events, known):
            refusals[index] = [IngestResult(e.id, 0, False, taken=e.id in foreign) for e in job.events]
            per_job.append(None)
            continue
        entries = []
        for e in job.events:
            event_id = _unused_event_id(taken, job.now) if e.generated and e.id in taken else e.id
            first = event_id not in known
            if first:
                known[event_id] = (len(e.webhook_ids), e.tenant)
            entries.append(_Entry(e, event_id, job.now, first=first))
            taken.add(event_id)
        per_job.append(entries)
    accepted = [entries for entries in per_job if entries is not None]
    await _insert_events(conn, [x for entries in accepted for x in entries if x.first], taken)
    await _insert_deliveries(
        conn, [job for job, e in zip(jobs, per_job, strict=True) if e is not None], accepted, owner
    )
    return [
        refusals[index]
        if entries is None
        else [
            IngestResult(x.id, len(x.event.webhook_ids), True, tuple(x.leased))
            if x.seq is not None
            else IngestResult(x.id, known[x.id][0], False)
            for x in entries
        ]
        for index, entries in enumerate(per_job)
    ]


async def _insert_events(conn: Conn, entries: list[_Entry], taken: set[str]) -> None:
    """Store the events ``entries`` hold (setting each one's seq). A generated id found stored (a producer posted
    it meanwhile) gets another id and goes in again; a producer's id found stored was stored by another relay since
    the group looked it up: ``GroupRetry``."""
    pending = entries
    for _ in range(ID_ROUNDS):
        rows = await conn.fetch(
            _INSERT_EVENTS,
            [x.id for x in pending],
            [x.event.type for x in pending],
            [x.event.created_at for x in pending],
            [x.event.data for x in pending],
            [x.now for x in pending],
            [len(x.event.webhook_ids) for x in pending],
            [x.event.tenant for x in pending],
            [x.event.ordering_key for x in pending],
        )
        seqs: dict[str, int] = {r[0]: r[1] for r in rows}
        missed = []
        for x in pending:
            x.seq = seqs.get(x.id)
            if x.seq is None:
                missed.append(x)
        if not missed:
            return
        if any(not x.event.generated for x in missed):
            raise GroupRetry("an event id was stored by another relay while this group ran")
        for x in missed:  # a producer posted this id before relay made it up: relay's event gets another
            x.id = _unused_event_id(taken, x.now)
            taken.add(x.id)
        pending = missed
    raise StoreUnavailable("event ids kept colliding with other relays' ingests; try again")


async def _insert_deliveries(conn: Conn, jobs: list[Job], per_job: list[list[_Entry]], owner: str) -> None:
    """One delivery per webhook of each event this group stored; within each job's rooms, committed leased to
    ``owner`` (the claims go into their entries' ``leased``). A delivery of an ordering key takes its place in its
    key's queue (``relay.store.ordering``; the caller holds the keys' locks)."""
    rows = _Rows()
    leases: dict[str, tuple[_Entry, str, float, bool]] = {}  # delivery id -> (entry, webhook id, lease end, keyed)
    keys = {key: mode for entries in per_job for x in entries if x.seq is not None for key, mode in ordered(x.event)}
    queues = await load_queues(conn, keys) if keys else {}
    for job, entries in zip(jobs, per_job, strict=True):
        rooms = job.rooms or {}
        budget = {webhook_id: room.count for webhook_id, room in rooms.items()}
        for x in entries:
            if x.seq is None:
                continue
            key = x.event.ordering_key
            for index, webhook_id in enumerate(x.event.webhook_ids):
                delivery_id = new_id("dlv", x.now)
                orderings = x.event.orderings
                mode = orderings[index] if index < len(orderings) else None
                queue = queues.get((webhook_id, key)) if key is not None and mode in ORDERED else None
                holds = True
                if queue is not None:
                    holds, superseded = queue.arrive(delivery_id)
                    rows.supersede(superseded, x.now)
                if holds and budget.get(webhook_id, 0) > 0:
                    budget[webhook_id] -= 1
                    until = rooms[webhook_id].until
                    leases[delivery_id] = (x, webhook_id, until, queue is not None)
                    if queue is not None:
                        queue.started(delivery_id)
                    rows.add(delivery_id, x.seq, webhook_id, "delivering", until, owner, x.now, key, queue)
                else:
                    due = x.now if holds else None
                    rows.add(delivery_id, x.seq, webhook_id, "pending", due, None, x.now, key, queue)
    if rows.stored_superseded:
        await supersede(conn, rows.stored_superseded)
    if not rows.columns[0]:
        return
    events: dict[str, Event] = {}
    for r in await conn.fetch(_INSERT_DELIVERIES, *rows.columns):
        x, webhook_id, until, keyed = leases[r[0]]
        e = x.event
        event = events.setdefault(x.id, Event(x.id, e.type, e.created_at, e.data, x.now))
        x.leased.append(Claim(r[0], webhook_id, 1, x.now, event, Lease(owner, until, r[1], keyed)))
    for x, _, _, _ in leases.values():
        x.leased.sort(key=lambda claim: claim.lease.ref)  # in the order they were stored (RETURNING has none)


class _Rows:
    """New deliveries as one list per column of ``_INSERT_DELIVERIES``; those of ordering keys named in their key's
    queue by their delivery id (stored ones by their seq), so that a later event of the group may supersede one."""

    def __init__(self) -> None:
        self.columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [])
        self.index: dict[str, int] = {}  # delivery id of an ordering key's new delivery -> its row
        self.stored_superseded: list[tuple[int, float]] = []  # (seq, when)

    def add(
        self,
        delivery_id: str,
        event_seq: int,
        webhook_id: str,
        status: str,
        due_at: float | None,
        lease_owner: str | None,
        now: float,
        key: str | None,
        queue: KeyQueue | None,
    ) -> None:
        if queue is not None:
            self.index[delivery_id] = len(self.columns[0])
        else:
            key = None
        mode = None if queue is None else queue.mode
        row = (delivery_id, event_seq, webhook_id, status, due_at, lease_owner, now, key, mode)
        for column, value in zip(self.columns, row, strict=True):
            column.append(value)

    def supersede(self, refs: Iterable[Any], now: float) -> None:
        for ref in refs:
            if isinstance(ref, str):  # a new one of this group
                self.columns[3][self.index[ref]] = "superseded"
                self.columns[4][self.index[ref]] = None
            else:
                self.stored_superseded.append((ref, now))


def _unused_event_id(taken: set[str], now: float) -> str:
    """A generated event id that no event of this group has (one stored already is found when it goes in)."""
    while (candidate := new_event_id(now)) in taken:
        pass
    return candidate


# Leases the due rows (pending, failed, or a lease that ran out) oldest due first, skipping rows another claim
# has locked; ``rest`` is the earliest due time of what stays queued (read before the update: the rows leased
# here count with their new lease end, added by the caller). One row even when nothing was due.
_CLAIM = f"""
WITH due AS (
    SELECT seq FROM deliveries
    WHERE webhook_id = $1 AND status IN {QUEUED} AND due_at <= $2
    ORDER BY due_at, seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE deliveries d SET status = 'delivering', due_at = $4, lease_owner = $5, updated_at = $2
    FROM due WHERE d.seq = due.seq
    RETURNING d.seq, d.id, d.attempt_count, d.created_at, d.event_seq, d.ordering_key IS NOT NULL AS keyed
), rest AS (
    SELECT min(due_at) AS next_due FROM deliveries
    WHERE webhook_id = $1 AND status IN {QUEUED} AND seq NOT IN (SELECT seq FROM due)
)
SELECT rest.next_due, c.seq, c.id, c.attempt_count, c.created_at,
       c.event_id, c.type, c.event_created_at, c.data, c.ingested_at, c.keyed
FROM rest LEFT JOIN (
    SELECT l.seq, l.id, l.attempt_count, l.created_at, l.keyed,
           e.id AS event_id, e.type, e.created_at AS event_created_at, e.data, e.ingested_at
    FROM leased l JOIN events e ON e.seq = l.event_seq
) c ON true
ORDER BY c.seq
"""


async def claim(
    conn: Conn, owner: str, webhook_id: str, limit: int, now: float, lease_until: float
) -> tuple[list[Claim], float | None]:
    """Lease up to ``limit`` due deliveries of one webhook to ``owner``, oldest due first, with their events (in the
    order they were created); and the earliest due time of the webhook's deliveries still queued after the claim."""
    rows = await conn.fetch(_CLAIM, webhook_id, now, limit, lease_until, owner)
    claims = [
        Claim(
            r[2],
            webhook_id,
            r[3] + 1,
            r[4],
            Event(r[5], r[6], r[7], r[8], r[9]),
            Lease(owner, lease_until, r[1], bool(r[10])),
        )
        for r in rows
        if r[1] is not None
    ]
    rest: float | None = rows[0][0]
    if claims and (rest is None or lease_until < rest):
        return claims, lease_until
    return claims, rest


# The attempt is kept whenever its delivery still exists (the same seq and id), whichever lease it came under;
# ``live`` holds those deliveries against a prune until the transaction ends. ``hours`` adds every result to its
# hour's counts (``activity.hour_rows``), also one whose delivery was pruned meanwhile: one statement with the
# attempts, no round trip more. Its rows are the recording relay's own (``node``, the lease's owner), written only by
# that relay's results writer, one group at a time: no other transaction waits on them.
_RECORD_ATTEMPTS = """
WITH live AS (SELECT seq, id FROM deliveries WHERE seq = ANY($1::int8[]) FOR KEY SHARE),
hours AS (
    INSERT INTO attempt_hours AS h (webhook_id, hour, node, attempts, failures, last_at, last_ok)
    SELECT * FROM unnest($11::text[], $12::int8[], $13::text[], $14::int8[], $15::int8[], $16::float8[], $17::bool[])
    ON CONFLICT (webhook_id, hour, node) DO UPDATE SET
        attempts = h.attempts + excluded.attempts, failures = h.failures + excluded.failures,
        -- the newest attempt: the later start (of two at one moment, the one written last)
        last_at = CASE WHEN excluded.last_at >= h.last_at THEN excluded.last_at ELSE h.last_at END,
        last_ok = CASE WHEN excluded.last_at >= h.last_at THEN excluded.last_ok ELSE h.last_ok END
)
INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status_code, error, error_detail,
                      response_body, next_attempt_at)
SELECT v.seq, v.number, v.started_at, v.duration_ms, v.status_code, v.error, v.error_detail, v.response_body,
       v.next_attempt_at
FROM unnest($1::int8[], $2::int4[], $3::float8[], $4::float8[], $5::int4[], $6::text[], $7::text[], $8::text[],
            $9::float8[], $10::text[])
     AS v(seq, number, started_at, duration_ms, status_code, error, error_detail, response_body, next_attempt_at,
          delivery_id)
JOIN live ON live.seq = v.seq AND live.id = v.delivery_id
ON CONFLICT (delivery_seq, number) DO UPDATE SET
    started_at = excluded.started_at, duration_ms = excluded.duration_ms, status_code = excluded.status_code,
    error = excluded.error, error_detail = excluded.error_detail, response_body = excluded.response_body,
    next_attempt_at = excluded.next_attempt_at
"""

# Only a delivery still under the result's lease moves on.
_RECORD_DECISIONS = """
UPDATE deliveries d SET status = v.status, attempt_count = v.attempt_count, due_at = v.due_at,
    updated_at = v.updated_at, lease_owner = NULL
FROM unnest($1::text[], $2::int4[], $3::float8[], $4::float8[], $5::int8[], $6::text[], $7::float8[], $8::text[])
     AS v(status, attempt_count, due_at, updated_at, seq, id, lease_until, owner)
WHERE d.seq = v.seq AND d.id = v.id AND d.status = 'delivering' AND d.due_at = v.lease_until
    AND d.lease_owner = v.owner
"""


async def record(conn: Conn, results: Sequence[AttemptResult]) -> None:
    """Record finished attempts, their hours' counts and the decisions taken after them, inside the caller's
    transaction. Of two results for one attempt the last is kept, as SQLite's ``INSERT OR REPLACE`` does (both count
    in the hours); of two for one delivery the first decides, as it would one by one."""
    attempts = {(r.lease.ref, r.attempt.number): r for r in results}
    decisions: dict[int, AttemptResult] = {}
    for r in results:
        decisions.setdefault(r.lease.ref, r)
    # Results of deliveries holding their ordering keys: the keys' locks first (before any row's), then the key
    # moves on once the decisions are written.
    keyed = {
        r.lease.ref: r.attempt.started_at + r.attempt.duration_ms / 1000 for r in decisions.values() if r.lease.keyed
    }
    if keyed:
        await conn.execute(LOCK_KEYS_OF, sorted(keyed))
    kept = sorted(attempts.values(), key=lambda r: r.lease.ref)  # rows locked in seq order: fewer deadlocks
    hours = hour_rows(results)  # one row per webhook, hour and node, in key order
    await conn.execute(
        _RECORD_ATTEMPTS,
        [r.lease.ref for r in kept],
        [r.attempt.number for r in kept],
        [r.attempt.started_at for r in kept],
        [r.attempt.duration_ms for r in kept],
        [r.attempt.status_code for r in kept],
        [None if r.attempt.error is None else str(r.attempt.error) for r in kept],
        [r.attempt.error_detail for r in kept],
        [r.attempt.response_body for r in kept],
        [r.attempt.next_attempt_at for r in kept],
        [r.delivery_id for r in kept],
        *([h[column] for h in hours] for column in range(7)),
    )
    moved = sorted(decisions.values(), key=lambda r: r.lease.ref)
    await conn.execute(
        _RECORD_DECISIONS,
        [str(r.status) for r in moved],
        [r.attempt.number for r in moved],
        [r.due_at for r in moved],
        [r.attempt.started_at + r.attempt.duration_ms / 1000 for r in moved],
        [r.lease.ref for r in moved],
        [r.delivery_id for r in moved],
        [r.lease.until for r in moved],
        [r.lease.owner for r in moved],
    )
    if keyed:
        await move_keys_on(conn, keyed)


async def release(conn: Conn, claims: Sequence[Claim], now: float) -> None:
    """Claimed deliveries still under their claim's lease are due again at once (rows locked in seq order, as
    ``record``, ``renew`` and ``_free_abandoned`` lock them: no two of these deadlock on each other)."""
    claims = sorted(claims, key=lambda c: c.lease.ref)
    await conn.execute(
        "UPDATE deliveries d SET status = 'pending', due_at = $1, updated_at = $1, lease_owner = NULL"
        " FROM unnest($2::int8[], $3::text[], $4::float8[], $5::text[]) AS v(seq, id, lease_until, owner)"
        " WHERE d.seq = v.seq AND d.id = v.id AND d.status = 'delivering' AND d.due_at = v.lease_until"
        " AND d.lease_owner = v.owner",
        now,
        [c.lease.ref for c in claims],
        [c.delivery_id for c in claims],
        [c.lease.until for c in claims],
        [c.lease.owner for c in claims],
    )


async def renew(conn: Conn, claims: Sequence[Claim], now: float, until: float) -> list[Claim]:
    """Extend to ``until`` the leases these claims still hold (fenced like ``release``, locked in seq order like it);
    the claims renewed."""
    claims = sorted(claims, key=lambda c: c.lease.ref)
    rows = await conn.fetch(
        "UPDATE deliveries d SET due_at = $1, updated_at = $2"
        " FROM unnest($3::int8[], $4::text[], $5::float8[], $6::text[]) AS v(seq, id, lease_until, owner)"
        " WHERE d.seq = v.seq AND d.id = v.id AND d.status = 'delivering' AND d.due_at = v.lease_until"
        " AND d.lease_owner = v.owner RETURNING d.seq",
        until,
        now,
        [c.lease.ref for c in claims],
        [c.delivery_id for c in claims],
        [c.lease.until for c in claims],
        [c.lease.owner for c in claims],
    )
    renewed = {r[0] for r in rows}
    return [c for c in claims if c.lease.ref in renewed]


async def reclaim_abandoned(conn: Conn, now: float, alive_within: float) -> int:
    """At startup: how many deliveries ``_free_abandoned`` made due again."""
    return len(await _free_abandoned(conn, now, alive_within))


async def take_over(conn: Conn, now: float, alive_within: float) -> list[str]:
    """While relays run (the daemon's job): the webhooks whose deliveries ``_free_abandoned`` made due again, each
    once."""
    return sorted(set(await _free_abandoned(conn, now, alive_within)))


async def _free_abandoned(conn: Conn, now: float, alive_within: float) -> list[str]:
    """Deliveries leased by no live relay (one not in ``relays``, or not seen for ``alive_within`` seconds of the
    database's clock), or whose lease ran out, are due again at once; their webhooks' ids, one per delivery. The
    relays found dead leave ``relays`` (one that was only cut off registers again with its next heartbeat, its
    leases gone). Rows are locked in seq order, skipping any another transaction holds (its relay is recording,
    releasing or renewing it right now: not abandoned; if it still is, the next take-over frees it), so this never
    waits on, or deadlocks with, a relay at work."""
    alive = "seen_at >= extract(epoch FROM clock_timestamp()) - {}"
    rows = await conn.fetch(
        "UPDATE deliveries SET status = 'pending', due_at = $1, updated_at = $1, lease_owner = NULL"
        " WHERE seq IN (SELECT seq FROM deliveries WHERE status = 'delivering' AND (due_at <= $1"
        f" OR lease_owner IS NULL OR lease_owner NOT IN (SELECT owner FROM relays WHERE {alive.format('$2')}))"
        " ORDER BY seq FOR UPDATE SKIP LOCKED)"
        " RETURNING webhook_id",
        now,
        alive_within,
    )
    await conn.execute(f"DELETE FROM relays WHERE NOT ({alive.format('$1')})", alive_within)
    return [r[0] for r in rows]


_REPLAY = """
INSERT INTO deliveries (id, event_seq, webhook_id, status, due_at, created_at, updated_at, ordering_key, ordering)
SELECT v.id, $1::int8, v.webhook_id, v.status, v.due_at, $2::float8, $2::float8, v.ordering_key, v.ordering
FROM unnest($3::text[], $4::text[], $5::float8[], $6::text[], $7::text[], $8::text[])
     WITH ORDINALITY AS v(id, webhook_id, due_at, ordering_key, ordering, status, n)
ORDER BY v.n
RETURNING seq
"""


async def replay(
    conn: Conn,
    event_id: str,
    webhook_ids: Sequence[str],
    now: float,
    tenant: str | None,
    orderings: Sequence[str] = (),
) -> list[int] | None:
    """New deliveries of a stored event, due now: their seqs; None when there is no such event (of ``tenant``, when
    given). To an ordered webhook (``orderings``, in the order of ``webhook_ids``), an event with an ordering key
    takes a new place at the end of its key's queue, under the key's lock. The event is held (``FOR KEY SHARE``)
    until the transaction ends, so a prune cannot take it away from under them."""
    row = await conn.fetchrow(
        "SELECT seq, ordering_key FROM events WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) FOR KEY SHARE",
        event_id,
        tenant,
    )
    if row is None:
        return None
    event_seq, key = row[0], row[1]
    modes = [orderings[i] if i < len(orderings) and key is not None else None for i in range(len(webhook_ids))]
    keys = {(w, key): m for w, m in zip(webhook_ids, modes, strict=True) if m in ORDERED}
    queues: dict[tuple[str, str], KeyQueue] = {}
    if keys:
        await lock_keys(conn, keys)
        queues = await load_queues(conn, keys)
    ids = [new_id("dlv", now) for _ in webhook_ids]
    due: list[float | None] = []
    statuses: list[str] = []
    superseded: list[tuple[int, float]] = []
    for delivery_id, webhook_id, mode in zip(ids, webhook_ids, modes, strict=True):
        queue = queues.get((webhook_id, key)) if mode in ORDERED else None
        statuses.append("pending")
        if queue is None:
            due.append(now)
            continue
        newer = await conn.fetchval(_NEWER_EVENT, webhook_id, key, event_seq)
        if superseded_on_replay(str(mode), newer is not None):  # a replay never follows, nor replaces, a newer one
            statuses[-1] = "superseded"
            due.append(None)
            continue
        holds, gone = queue.arrive(delivery_id)
        superseded.extend((seq, now) for seq in gone if isinstance(seq, int))
        due.append(now if holds else None)
    if superseded:
        await supersede(conn, superseded)
    rows = await conn.fetch(
        _REPLAY,
        event_seq,
        now,
        ids,
        list(webhook_ids),
        due,
        [key if mode in ORDERED else None for mode in modes],
        [mode if mode in ORDERED else None for mode in modes],
        statuses,
    )
    return [int(r[0]) for r in rows]


# A delivery of a (webhook, key) of an event ingested after the one at $3 (whatever became of it).
_NEWER_EVENT = "SELECT 1 FROM deliveries WHERE webhook_id = $1 AND ordering_key = $2 AND event_seq > $3 LIMIT 1"


async def redrive(conn: Conn, now: float, webhook_ids: Sequence[str], statuses: Sequence[str]) -> dict[str, int]:
    """Deliveries of these webhooks in ``statuses`` are due again now; how many per webhook. A dead delivery of an
    ordering key goes back into its key's queue (``redrive_dead_keyed``)."""
    rows = await conn.fetch(
        "WITH moved AS (UPDATE deliveries SET status = 'pending', due_at = $1, updated_at = $1"
        " WHERE status = ANY($2::text[]) AND webhook_id = ANY($3::text[])"
        " AND (ordering_key IS NULL OR status = 'failed') RETURNING webhook_id)"
        " SELECT webhook_id, count(*) FROM moved GROUP BY webhook_id",
        now,
        list(statuses),
        list(webhook_ids),
    )
    counts = {r[0]: int(r[1]) for r in rows}
    if "dead" in statuses:
        for webhook_id in await redrive_dead_keyed(conn, now, webhook_ids):
            counts[webhook_id] = counts.get(webhook_id, 0) + 1
    return counts


_UNDONE = (
    "SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.status NOT IN ('succeeded', 'cancelled', 'superseded')"
)


async def prune(conn: Conn, cutoff: float, batch: int) -> int:
    """Delete up to ``batch`` events ingested before ``cutoff`` whose deliveries all ended delivered, cancelled or
    superseded,
    with their deliveries and attempts, inside the caller's transaction; how many events."""
    locked = await conn.fetch(
        f"SELECT seq FROM events e WHERE ingested_at < $1 AND NOT EXISTS ({_UNDONE}) LIMIT $2 FOR UPDATE SKIP LOCKED",
        cutoff,
        batch,
    )
    if not locked:
        return 0
    # A later statement sees a replay that committed before the lock was taken: its event stays.
    row = await conn.fetchrow(
        f"WITH gone AS (DELETE FROM events e WHERE seq = ANY($1::int8[]) AND NOT EXISTS ({_UNDONE}) RETURNING seq),"
        " dropped AS (DELETE FROM deliveries WHERE event_seq IN (SELECT seq FROM gone) RETURNING seq)"
        " SELECT (SELECT count(*) FROM gone), (SELECT array_agg(seq) FROM dropped)",
        [r[0] for r in locked],
    )
    if row[1]:  # a statement of its own: it sees attempts recorded by a result its delete waited for
        await conn.execute("DELETE FROM attempts WHERE delivery_seq = ANY($1::int8[])", row[1])
    return int(row[0])


async def drop_hours(conn: Conn, cutoff: float) -> None:
    """Delete the hourly counts of hours that ended by ``cutoff``: a scan of ``attempt_hours`` (at most webhooks x
    hours kept x nodes rows), not an index on ``hour`` that every record's upsert would pay for."""
    await conn.execute("DELETE FROM attempt_hours WHERE hour <= $1::float8", cutoff - HOUR)


async def cancel_queued(conn: Conn, webhook_id: str, now: float) -> int:
    """Cancel a webhook's deliveries that have not ended (kept, as ``cancelled``); returns how many."""
    status = await conn.execute(
        "UPDATE deliveries SET status = 'cancelled', due_at = NULL, lease_owner = NULL, updated_at = $1"
        f" WHERE webhook_id = $2 AND status IN {QUEUED}",
        now,
        webhook_id,
    )
    return _count(status)


def _count(status: str) -> int:
    """The rows a statement touched, from its command tag (``UPDATE 3``)."""
    return int(status.rsplit(" ", 1)[-1])
