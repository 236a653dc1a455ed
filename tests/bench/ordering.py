"""Ordering keys (CONTRACT §11): what a webhook's ``ordering = "fifo"`` costs delivery.

- ``ordering_e2e_fifo``: end to end, one webhook, the events spread over 1,000 ordering keys in turn, with
  ``ordering = "fifo"`` against the same events to the same webhook with ``ordering = "none"``, each side twice,
  alternated in one run;
- ``ordering_hot_key``: one fifo webhook, every event of one key: one attempt at a time, so deliveries/s is bounded
  by one delivery per round trip. The bound is measured in the same run: the p50 of single sequential POSTs (a body
  of a delivery's size, keep-alive) to the same receiver, before and after, relay idle;
- ``ordering_claim_cost_flat``: deliveries/s of one fifo webhook with 1,000,000 pending deliveries over 100,000 keys
  (10 a key: 100,000 heads due, the rest waiting behind them) against 10,000 over 1,000 keys, in one relay process
  (``scenarios.claim_cost``: held by a rate limit while they pile up, lifted by SIGHUP).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import aiohttp
import orjson

from tests.bench.loadgen import bench_event
from tests.bench.scenarios import (
    Figure,
    Receiver,
    Settings,
    _relay_e2e,
    claim_cost,
    flat_figure,
    running,
    workspace,
)

KEYS = 1000
ROUNDS = 2  # each side twice, alternated
HOT_EVENTS = 2000
RTT_POSTS = 500


async def _round_trip(receiver: Receiver, session: aiohttp.ClientSession, posts: int) -> list[float]:
    """Seconds each of ``posts`` sequential POSTs to the receiver took (one keep-alive connection, after a warm-up)."""
    body = orjson.dumps(
        {"id": "evt_rtt", "type": "consent.created", "created_at": "2026-01-01T00:00:00Z"}
        | {"data": bench_event(0)["data"]}
    )
    url = receiver.url("/rtt")
    times = []
    for n in range(posts + 20):
        began = time.perf_counter()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
            await answer.read()
        if n >= 20:
            times.append(time.perf_counter() - began)
    return times


async def _e2e(settings: Settings) -> Figure:
    figure = Figure(
        "ordering_e2e_fifo",
        f"end-to-end, one fifo webhook, {KEYS:,} ordering keys (baseline: the same, ordering none)",
        "deliveries/s",
        "≥ 70 % of ordering none",
    )
    rates: dict[str, list[float]] = {"none": [], "fifo": []}
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "fifo": []}
    events = settings.e2e_events
    async with workspace("ordering-e2e") as workdir:
        receiver = Receiver(workdir / "receiver.log")
        async with running(receiver), aiohttp.ClientSession() as session:
            for _ in range(ROUNDS):
                for ordering in ("none", "fifo"):  # alternated: one side's run never follows itself
                    for db in workdir.glob("relay.db*"):
                        db.unlink()
                    ours = await _relay_e2e(
                        workdir, receiver, session, 1, events, settings.e2e_timeout, keys=KEYS, ordering=ordering
                    )
                    runs[ordering].append(ours)
                    rates[ordering].append(ours["rate"] or 0.0)
    complete = all(run["complete"] for side in runs.values() for run in side)
    figure.baseline, figure.relay = statistics.mean(rates["none"]), statistics.mean(rates["fifo"])
    figure.ratio = figure.relay / figure.baseline if figure.baseline else None
    figure.met = complete and figure.ratio is not None and figure.ratio >= 0.7
    cpu = {side: [run["relay_cpu_us_per_delivery"] for run in side_runs] for side, side_runs in runs.items()}
    figure.note = (
        f"{events:,} events over {KEYS:,} keys in turn; {ROUNDS} rounds alternated: none {_rates(rates['none'])}, "
        f"fifo {_rates(rates['fifo'])}; relay µs CPU a delivery: none {cpu['none']}, fifo {cpu['fifo']}"
        + ("" if complete else "; INCOMPLETE")
    )
    figure.details = {"rates": rates, "runs": runs}
    return figure


async def _hot_key(settings: Settings) -> Figure:
    figure = Figure(
        "ordering_hot_key",
        "one fifo webhook, every event one key (baseline: 1 / the receiver's p50 round trip)",
        "deliveries/s",
        "one delivery a round trip",
    )
    async with workspace("ordering-hot") as workdir:
        receiver = Receiver(workdir / "receiver.log")
        async with running(receiver), aiohttp.ClientSession() as session:
            before = await _round_trip(receiver, session, RTT_POSTS)
            ours = await _relay_e2e(workdir, receiver, session, 1, HOT_EVENTS, 60, keys=1, ordering="fifo")
            after = await _round_trip(receiver, session, RTT_POSTS)
    rtt = statistics.median(before + after)
    figure.baseline, figure.relay = 1 / rtt, ours["rate"]
    figure.ratio = figure.relay / figure.baseline if figure.relay else None
    figure.met = None  # a ratio to report, not a pass/fail line
    per_delivery = 1000 / figure.relay if figure.relay else float("nan")
    figure.note = (
        f"{HOT_EVENTS:,} events of one key; receiver round trip p50 {rtt * 1000:.2f} ms ({RTT_POSTS} sequential POSTs "
        f"before and after: {statistics.median(before) * 1000:.2f} / {statistics.median(after) * 1000:.2f} ms); "
        f"relay {per_delivery:.2f} ms a delivery"
        + ("" if ours["complete"] else f"; INCOMPLETE: {ours['received']:,} delivered in 60 s")
    )
    figure.details = {
        "rtt_p50_s": rtt,
        "rtt_p90_s": sorted(before + after)[int(0.9 * len(before + after))],
        "relay": ours,
    }
    return figure


async def _claim_cost() -> Figure:
    async with workspace("ordering-claims") as workdir:
        measured = await claim_cost(workdir, webhooks=1, per_key=10, ordering="fifo", ingest_timeout=240)
    label = "one fifo webhook: deliveries/s with 1,000,000 pending over 100,000 keys (baseline: 10,000 over 1,000)"
    figure = flat_figure("ordering_claim_cost_flat", label, measured)
    figure.details["statuses"] = measured["statuses"]
    return figure


async def e2e(settings: Settings) -> Figure:
    return await _e2e(settings)


async def hot_key(settings: Settings) -> Figure:
    return await _hot_key(settings)


async def claim_cost_figure(settings: Settings) -> Figure:
    return await _claim_cost()


def _rates(values: list[float]) -> str:
    return ", ".join(f"{value:,.0f}/s" for value in values)
