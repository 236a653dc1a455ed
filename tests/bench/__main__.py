"""``python -m tests.bench [--only NAME ...] [--profile | --profile-only]``: run, print the table, write results.json.

Exits 1 when a scenario could not run (the error is in the table and in results.json); a goal not met is
reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

from tests import bench
from tests.bench import loadgen, ordering, postgres, scenarios, tenants
from tests.bench.scenarios import BENCH_DIR, Figure, Settings

Scenario = Callable[[Settings], Awaitable[Figure | list[Figure]]]

SCENARIOS: dict[str, tuple[Scenario, Figure]] = {
    "single": (
        scenarios.single_ingest,
        Figure("single_ingest", "single-event ingest, 64 connections", "events/s", "≥ 60 % of baseline"),
    ),
    "batch": (
        scenarios.batch_ingest,
        Figure("batch_ingest", "batch ingest (1000 events a request)", "events/s", "≥ 200,000 events/s"),
    ),
    "e2e-one": (
        scenarios.e2e_one,
        Figure("e2e_one_webhook", "end-to-end, one webhook", "deliveries/s", "≥ 5,000/s and ≥ 70 % of baseline"),
    ),
    "e2e-ten": (
        scenarios.e2e_ten,
        Figure("e2e_ten_webhooks", "end-to-end, 10 webhooks per event", "deliveries/s", "≥ 5,000/s"),
    ),
    "latency": (scenarios.latency, Figure("latency", "latency ingest→delivered", "ms", "p50 ≤ 2 ms, p99 ≤ 5 ms")),
    "memory": (
        scenarios.memory,
        Figure("memory_1m_pending", "memory with 1,000,000 pending deliveries", "MB", "≤ 150 MB"),
    ),
    "tenants": (
        tenants.tenants,
        Figure("tenants_matching", "1,000 tenants × 5 API webhooks: ingest", "events/s", "≥ 85 % of 1 tenant × 5"),
    ),
    "ordering": (
        ordering.e2e,
        Figure("ordering_e2e_fifo", "ordering keys: fifo end to end, 1,000 keys", "deliveries/s", "≥ 70 % of none"),
    ),
    "ordering-hot": (
        ordering.hot_key,
        Figure("ordering_hot_key", "ordering keys: one hot key", "deliveries/s", "one delivery a round trip"),
    ),
    "ordering-claims": (
        ordering.claim_cost_figure,
        Figure("ordering_claim_cost_flat", "ordering keys: claim cost at 1 M over 100 k keys", "deliveries/s", "flat"),
    ),
    "postgres": (
        postgres.postgres,
        Figure("pg_e2e_one_webhook", "PostgreSQL: batch ingest and end to end", "events/s", "see the figures"),
    ),
    "postgres-claims": (
        postgres.postgres_claims,
        Figure("pg_claim_cost_flat", "PostgreSQL: claim cost at 1,000,000 pending", "deliveries/s", "flat"),
    ),
}
SCENARIO_TIMEOUT = 150.0  # no scenario may hang the run
LONGER = {
    "tenants": 300.0,  # ten relays, each started on a store of 5,000 webhooks
    "ordering": 300.0,  # four end-to-end runs
    "ordering-claims": 480.0,  # a million keyed deliveries ingested
}


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs of the machine have been busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def ours_seconds() -> float:
    """CPU seconds of this process and of every child it has reaped (every process a scenario started)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The machine's busy fraction (of all CPUs) over ``seconds``, before anything of ours runs."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    after = machine_busy_seconds()
    if before is None or after is None:
        return None
    return (after - before) / seconds / (os.cpu_count() or 1)


def _number(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:,.0f}/s"


def render_table(figures: list[Figure]) -> str:
    rows = [("figure", "baseline", "relay", "ratio", "goal", "met", "notes")]
    for f in figures:
        ratio = "—" if f.ratio is None else f"{f.ratio:.0%}"
        met = "—" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.figure, _number(f.baseline, f.unit), _number(f.relay, f.unit), ratio, f.goal, met, f.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)]
        lines.append(" | ".join([*cells, row[-1]]))
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 5)
    return "\n".join(lines)


async def run(names: list[str], settings: Settings) -> tuple[list[Figure], dict[str, Any]]:
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    foreign: dict[str, float] = {}
    for name in names:
        scenario, placeholder = SCENARIOS[name]
        print(f"[bench] {name} …", flush=True)
        began = time.monotonic()
        machine0, ours0 = machine_busy_seconds(), ours_seconds()
        try:
            result = await asyncio.wait_for(scenario(settings), LONGER.get(name, SCENARIO_TIMEOUT))
            figures.extend(result if isinstance(result, list) else [result])
        except Exception as exc:
            traceback.print_exc()
            placeholder.note = f"ERROR: {type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            placeholder.met = False
            placeholder.details = {"error": traceback.format_exc()}
            figures.append(placeholder)
        timings[name] = round(time.monotonic() - began, 1)
        machine1 = machine_busy_seconds()
        if machine0 is not None and machine1 is not None:
            # CPU the rest of the machine used meanwhile (other sessions' tests, …): it skews every figure.
            foreign[name] = round(max(0.0, (machine1 - machine0) - (ours_seconds() - ours0)) / timings[name], 2)
            if foreign[name] > 0.1:
                print(f"[bench] WARNING: other processes used {foreign[name]:.2f} cores during {name}", flush=True)
        print(f"[bench] {name} done in {timings[name]:.1f} s", flush=True)
    extra: dict[str, Any] = {"scenario_seconds": timings, "foreign_cpu_cores_during_scenario": foreign}
    if settings.profile:
        print("[bench] profile (extra runs with py-spy attached: end-to-end, ingest, latency) …", flush=True)
        extra["profile"] = {}
        passes = (
            ("e2e", scenarios.profile_e2e),
            ("ingest", scenarios.profile_ingest),
            ("latency", scenarios.profile_latency),
        )
        for name, profile in passes:
            try:
                extra["profile"][name] = await asyncio.wait_for(profile(settings), SCENARIO_TIMEOUT)
            except Exception as exc:
                traceback.print_exc()
                extra["profile"][name] = {"error": repr(exc)}
    return figures, extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per timed figure")
    parser.add_argument("--events", type=int, default=50_000, help="deliveries in each end-to-end figure")
    parser.add_argument("--profile", action="store_true", help="add runs profiled with py-spy")
    parser.add_argument("--profile-only", action="store_true", help="only the profiled runs, no figures")
    parser.add_argument(
        "--event-loop", choices=["auto", "asyncio"], help="the loop of relay and every bench process (default: auto)"
    )
    args = parser.parse_args(argv)
    if args.event_loop:
        os.environ["BENCH_EVENT_LOOP"] = args.event_loop  # the bench's own processes inherit it
    settings = Settings(duration=args.duration, e2e_events=args.events, profile=args.profile or args.profile_only)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    busy = cpu_busy()
    if busy is not None and busy > 0.15:
        print(f"[bench] WARNING: the machine is already {busy:.0%} busy before the bench starts; figures will be low")
    started = datetime.now(UTC)
    began = time.monotonic()
    names = [] if args.profile_only else args.only or list(SCENARIOS)
    figures, extra = asyncio.run(run(names, settings))
    wall = time.monotonic() - began
    table = render_table(figures)
    wrk = loadgen.wrk_path()
    if figures:
        print()
        print(table)
    generator = f"wrk ({wrk})" if wrk else "aiohttp client process (wrk not on PATH, or BENCH_LOADGEN=aiohttp)"
    loop = bench.event_loop_name()  # relay, its baselines and the receivers alike
    print(
        f"\nload generator: {generator}; event loop: {loop}; {os.cpu_count()} CPUs; durability full;"
        f" wall time {wall:.0f} s"
    )
    foreign = {k: v for k, v in extra["foreign_cpu_cores_during_scenario"].items() if v > 0.1}
    if foreign:
        print(f"WARNING: other processes were busy during the run (cores): {foreign}; the figures are low")
    results = {
        "started_at": started.isoformat(),
        "wall_seconds": round(wall, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_busy_before": busy,
            "loadavg_after": os.getloadavg(),
        },
        "load_generator": "wrk" if wrk else "aiohttp",
        "event_loop": loop,
        "settings": asdict(settings),
        "figures": [asdict(f) for f in figures],
        **extra,
        "table": table,
    }
    path = BENCH_DIR / ("profile.json" if args.profile_only else "results.json")  # keep the last figures
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(f"wrote {path}")
    errors = [f for f in figures if f.note.startswith("ERROR")]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
