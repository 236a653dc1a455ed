"""Ordering keys (CONTRACT §11) on PostgreSQL: the statements that keep one head per ``(webhook, ordering key)``
across every relay of a group; ``relay.store.ordering`` decides, this module reads and writes the rows.

A transaction that decides a key's head (an ingest group or a replay with keyed deliveries, results of keyed leases,
a cancellation, a re-drive of dead keyed deliveries) first takes the key's transaction-level advisory lock
(``lock_keys``), every transaction in one order (the locks' numbers), so two relays never both make a head of one
key; it then reads the key's unfinished rows ``FOR UPDATE`` (``load_queues``), so a claim leasing the head meanwhile
is either seen (the read waits for it) or kept off (the claim skips the locked row). Unkeyed work pays none of it:
not one statement more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from relay.store.base import NewEvent
from relay.store.ordering import ORDERED, KeyQueue, move_on, superseded_on_redrive
from relay.store.postgres_schema import QUEUED

Conn = Any  # an asyncpg connection (asyncpg has no types)


def ordered(e: NewEvent) -> Iterable[tuple[tuple[str, str], str]]:
    """The ``(webhook, ordering key)`` of each of ``e``'s deliveries that keeps its key's order, with its ordering."""
    if e.ordering_key is None:
        return ()
    return [((w, e.ordering_key), mode) for w, mode in zip(e.webhook_ids, e.orderings, strict=False) if mode in ORDERED]


def ordered_keys(e: NewEvent) -> Iterable[tuple[str, str]]:
    return [key for key, _ in ordered(e)]


# Each ``(webhook, ordering key)``'s transaction-level advisory lock, taken in the order of the locks' numbers (every
# transaction agrees on it, so two never wait on each other for these locks): the transactions that decide a key's
# head (ingest and replay of keyed events, results of keyed leases, cancel, re-drive of dead keyed deliveries) take
# their keys' locks first, so relays of a group decide one key one at a time.
_LOCK = (
    "SELECT pg_advisory_xact_lock(h)"
    " FROM (SELECT DISTINCT hashtextextended({} || chr(31) || {}, 0) AS h {} ORDER BY h) l"
)
_LOCK_KEYS = _LOCK.format("v.w", "v.k", "FROM unnest($1::text[], $2::text[]) AS v(w, k)")
LOCK_KEYS_OF = _LOCK.format(
    "webhook_id", "ordering_key", "FROM deliveries WHERE seq = ANY($1::int8[]) AND ordering_key IS NOT NULL"
)

# What ``KeyQueue.load`` needs of a set of keys, locked against a claim until the transaction ends, in two
# statements of one index seek per key each (``deliveries_key``), however long a hot key's queue: each key's head
# (its rows with a due time: one, unless a bug broke the rule), and its waiting deliveries, all of them for a
# ``latest`` key (it supersedes them) or the oldest for a ``fifo`` one.
_KEY_ROWS = f"""
SELECT d.seq, v.w, v.k, d.status, d.due_at IS NOT NULL
FROM unnest($1::text[], $2::text[], $3::text[]) AS v(w, k, mode)
CROSS JOIN LATERAL (
    SELECT seq, status, due_at FROM deliveries
    WHERE webhook_id = v.w AND ordering_key = v.k AND ordering_key IS NOT NULL AND status IN {QUEUED}
      AND {{}}
    ORDER BY seq {{}}
    FOR UPDATE
) d
"""
_HEADS = _KEY_ROWS.format("due_at IS NOT NULL", "")
_WAITING = _KEY_ROWS.format("due_at IS NULL", "LIMIT CASE WHEN v.mode = 'latest' THEN NULL ELSE 1 END")


async def lock_keys(conn: Conn, keys: Iterable[tuple[str, str]]) -> None:
    """Hold the advisory locks of these ``(webhook, ordering key)`` until the transaction ends (none: no statement)."""
    wanted = sorted(set(keys))
    if wanted:
        await conn.execute(_LOCK_KEYS, [w for w, _ in wanted], [k for _, k in wanted])


async def load_queues(conn: Conn, keys: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], KeyQueue]:
    """The queues of these ``(webhook, ordering key)`` (each with its ordering), as stored; their rows locked."""
    queues = {key: KeyQueue(mode) for key, mode in keys.items()}
    args = ([w for w, _ in keys], [k for _, k in keys], [keys[key] for key in keys])
    rows = sorted([*await conn.fetch(_HEADS, *args), *await conn.fetch(_WAITING, *args)], key=lambda r: r[0])
    for seq, webhook_id, key, status, due in rows:
        queues[(webhook_id, key)].load(int(seq), status, due)
    return queues


async def supersede(conn: Conn, refs: Sequence[tuple[int, float]]) -> None:
    """Stored deliveries (seq, when) end ``superseded``, unless they left pending or parked meanwhile."""
    await conn.execute(
        "UPDATE deliveries d SET status = 'superseded', due_at = NULL, updated_at = v.at, lease_owner = NULL"
        " FROM unnest($1::int8[], $2::float8[]) AS v(seq, at)"
        " WHERE d.seq = v.seq AND d.status IN ('pending', 'failed')",
        [seq for seq, _ in refs],
        [at for _, at in refs],
    )


async def move_keys_on(conn: Conn, ended_at: Mapping[int, float]) -> list[str]:
    """After results (or a cancellation) of deliveries holding their ordering keys (seq -> when), whose keys' locks
    the caller holds: a head that ended lets its key's oldest waiting delivery become the head, due then; a
    ``latest`` head whose attempt failed while a newer one waits is superseded by it (``relay.store.ordering``). A
    delivery whose result did not count (another lease holds it) is left as it is. The webhooks of the deliveries
    made due."""
    rows = await conn.fetch(
        "SELECT seq, webhook_id, ordering_key, ordering, status FROM deliveries"
        " WHERE seq = ANY($1::int8[]) AND ordering_key IS NOT NULL ORDER BY seq",
        list(ended_at),
    )
    if not rows:
        return []
    queues = await load_queues(conn, {(r[1], r[2]): r[3] for r in rows})
    superseded: list[tuple[int, float]] = []
    promoted: list[tuple[int, float]] = []
    webhook_ids = []
    for seq, webhook_id, key, _, status in rows:
        at = ended_at[seq]
        gone, head = move_on(queues[(webhook_id, key)], int(seq), status)
        if isinstance(gone, int):
            superseded.append((gone, at))
        if isinstance(head, int):
            promoted.append((head, at))
            webhook_ids.append(webhook_id)
    if superseded:
        await supersede(conn, superseded)
    if promoted:
        await conn.execute(
            "UPDATE deliveries d SET due_at = v.at, updated_at = v.at"
            " FROM unnest($1::int8[], $2::float8[]) AS v(seq, at)"
            " WHERE d.seq = v.seq AND d.status = 'pending' AND d.due_at IS NULL",
            [seq for seq, _ in promoted],
            [at for _, at in promoted],
        )
    return webhook_ids


_DEAD_KEYED = (
    "SELECT seq, webhook_id, ordering_key, ordering FROM deliveries WHERE status = 'dead' AND ordering_key IS NOT NULL"
    " AND webhook_id = ANY($1::text[]) ORDER BY seq"
)


async def redrive_dead_keyed(conn: Conn, now: float, webhook_ids: Sequence[str]) -> list[str]:
    """Dead deliveries of ordering keys, re-driven under their keys' locks: oldest first, each the head of its key
    (due now) when the key has none, else waiting behind it. One webhook id for each."""
    found = await conn.fetch(_DEAD_KEYED, list(webhook_ids))
    if not found:
        return []
    locked = {(r[1], r[2]) for r in found}
    await lock_keys(conn, locked)
    dead = [r for r in await conn.fetch(f"{_DEAD_KEYED} FOR UPDATE", list(webhook_ids)) if (r[1], r[2]) in locked]
    queues = await load_queues(conn, {(r[1], r[2]): r[3] for r in dead})
    due: list[float | None] = []
    superseded: list[tuple[int, float]] = []
    for seq, webhook_id, key, mode in dead:
        newer = await conn.fetchval(
            "SELECT 1 FROM deliveries WHERE webhook_id = $1 AND ordering_key = $2 AND seq > $3 LIMIT 1",
            webhook_id,
            key,
            seq,
        )
        if superseded_on_redrive(mode, newer is not None):  # an older event never follows a newer one of its key
            superseded.append((int(seq), now))
            due.append(None)
            continue
        queue = queues[(webhook_id, key)]
        holds = queue.in_flight is None and queue.head is None
        if holds:
            queue.head = int(seq)
        due.append(now if holds else None)
    gone = {seq for seq, _ in superseded}
    redriven = [(r, at) for r, at in zip(dead, due, strict=True) if r[0] not in gone]
    await conn.execute(
        "UPDATE deliveries d SET status = 'pending', due_at = v.due_at, updated_at = $1"
        " FROM unnest($2::int8[], $3::float8[]) AS v(seq, due_at) WHERE d.seq = v.seq AND d.status = 'dead'",
        now,
        [r[0] for r, _ in redriven],
        [at for _, at in redriven],
    )
    if superseded:
        await conn.execute(
            "UPDATE deliveries SET status = 'superseded', due_at = NULL, updated_at = $1"
            " WHERE seq = ANY($2::int8[]) AND status = 'dead'",
            now,
            [seq for seq, _ in superseded],
        )
    return [r[1] for r, _ in redriven]


async def cancel(conn: Conn, delivery_id: str, now: float, tenant: str | None) -> tuple[int, str, list[str]] | None:
    """Cancel one delivery (of a webhook of ``tenant``, when given) that is pending or parked (kept, as
    ``cancelled``); a key it held moves on, under the key's lock. Its seq, its status before (a delivering or ended
    one is left as it is) and the webhooks of the deliveries made due; None when there is no such delivery."""
    row = await conn.fetchrow(
        "SELECT seq, webhook_id, ordering_key FROM deliveries WHERE id = $1"
        " AND ($2::text IS NULL OR webhook_id IN (SELECT id FROM webhooks WHERE tenant = $2))",
        delivery_id,
        tenant,
    )
    if row is None:
        return None
    seq, webhook_id, key = row
    if key is not None:
        await lock_keys(conn, [(webhook_id, key)])
    status = await conn.fetchval("SELECT status FROM deliveries WHERE seq = $1 FOR UPDATE", seq)
    if status is None:  # pruned meanwhile
        return None
    promoted: list[str] = []
    if status in ("pending", "failed"):
        await conn.execute(
            "UPDATE deliveries SET status = 'cancelled', due_at = NULL, lease_owner = NULL, updated_at = $2"
            " WHERE seq = $1",
            seq,
            now,
        )
        if key is not None:
            promoted = await move_keys_on(conn, {seq: now})
    return int(seq), str(status), promoted
