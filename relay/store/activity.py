"""Hourly attempt counts (``History.activity``, the dashboard's chart and success rates): the pure part every
backend shares.

Each ``record`` adds its results to ``attempt_hours`` in the same transaction: one row per webhook, hour (of the
attempt's start) and node (the result's ``lease.owner``), holding how many attempts started then, how many of them
did not succeed, and the newest one's start and whether it succeeded. Relays sharing a store each add to their own
rows (no two ever wait on one row); a read sums the nodes. The rows a read needs are found through the primary key
(webhook, hour, node): a window's hours and each webhook's newest hour, whatever the number of attempts kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from relay.models import DeliveryStatus
from relay.store.base import Activity, AttemptResult, HourCount, WebhookActivity

HOUR = 3600

# One rollup row: (webhook id, hour, node, attempts, failures, newest start, whether it succeeded).
HourRow = tuple[str, int, str, int, int, float, bool]


def hour_of(moment: float) -> int:
    """The start of the hour holding ``moment``, epoch seconds."""
    return math.floor(moment / HOUR) * HOUR


def window(since: float, until: float) -> tuple[int, int]:
    """The hours ``activity`` reports: the first one's start (the hour holding ``since``) and the end (exclusive,
    a multiple of an hour): the last hour is the one holding the moment just before ``until``."""
    return hour_of(since), math.ceil(until / HOUR) * HOUR


def hour_rows(results: Iterable[AttemptResult]) -> list[HourRow]:
    """A batch of results as rollup rows, one per (webhook, hour, node), in key order (the order PostgreSQL
    locks them in). Every result counts, also one whose lease ran out or whose delivery was pruned meanwhile: the
    attempt was made all the same."""
    rows: dict[tuple[str, int, str], list[Any]] = {}
    for r in results:
        started = r.attempt.started_at
        ok = r.status == DeliveryStatus.SUCCEEDED
        key = (r.webhook_id, hour_of(started), r.lease.owner)
        row = rows.get(key)
        if row is None:
            rows[key] = [1, 0 if ok else 1, started, ok]
            continue
        row[0] += 1
        row[1] += 0 if ok else 1
        if started >= row[2]:  # the newer attempt; of two at one moment, the later result
            row[2], row[3] = started, ok
    return [(w, hour, node, a, f, at, ok) for (w, hour, node), (a, f, at, ok) in sorted(rows.items())]


def activity_of(
    since: float,
    until: float,
    counted: Iterable[Sequence[Any]],
    newest: Iterable[Sequence[Any]],
) -> Activity:
    """The answer from a backend's rows: ``counted`` (webhook id, hour, attempts, failures) of the window's hours,
    any number per webhook and hour (one per node, or already summed); ``newest`` (webhook id, newest start, whether
    it succeeded) of each webhook's newest hour, one per node."""
    first, end = window(since, until)
    hours = {start: [0, 0] for start in range(first, end, HOUR)}
    webhooks: dict[str, list[Any]] = {}
    for webhook_id, hour, attempts, failures in counted:
        for totals in (hours.get(int(hour)), webhooks.setdefault(webhook_id, [0, 0, None, None])):
            if totals is not None:
                totals[0] += int(attempts)
                totals[1] += int(failures)
    for webhook_id, last_at, last_ok in newest:
        found = webhooks.setdefault(webhook_id, [0, 0, None, None])
        if found[2] is None or float(last_at) > found[2]:
            found[2], found[3] = float(last_at), bool(last_ok)
    return Activity(
        [HourCount(float(start), a, f) for start, (a, f) in hours.items()],
        {webhook_id: WebhookActivity(*found) for webhook_id, found in sorted(webhooks.items())},
    )
