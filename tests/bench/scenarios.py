"""The bench's scenarios. Each one gets a fresh directory ``var/bench/<name>/`` (config, logs; the SQLite files
are deleted at the end) and kills every process it started, whatever happens.

1. single-event ingest (64 connections) vs. a bare aiohttp handler that parses the JSON and answers 202;
2. batch ingest (1000 events a request, 4 clients), same baseline;
3. end-to-end, one webhook: 50,000 events ingested in batches, deliveries/s as the receiver counts them, vs. a
   bare aiohttp client posting the same requests to the same receiver at the same concurrency (256);
4. end-to-end, 10 webhooks per event;
5. latency ingest→delivered at a steady 1,000 events/s (the producer stamps ``data.sent``, the receiver
   subtracts it from the arrival time), vs. the same producer posting straight to the receiver;
6. RSS with 1,000,000 pending deliveries (held back by a ``rate_limit`` of 1/h, lifted by SIGHUP), and the
   delivery rate with that backlog vs. with 10,000 pending, in the same relay process.

relay runs with ``durability = "full"`` and ``per_webhook_concurrency = 256`` (default 16) so that one webhook can
use all of ``delivery.concurrency`` (256); every webhook is signed (Standard Webhooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests import bench
from tests.bench import loadgen
from tests.bench.loadgen import API_KEY, WEBHOOK_SECRET, batch_body, bench_event, loadgen_command
from tests.support.process import RelayProcess

BENCH_DIR = Path("var/bench")
CONNECTIONS = 64
PER_WEBHOOK_CONCURRENCY = 256  # relay's default is 16; raised so one webhook can use all of delivery.concurrency


@dataclass
class Figure:
    key: str
    figure: str
    unit: str
    goal: str
    baseline: float | None = None
    relay: float | None = None
    ratio: float | None = None
    met: bool | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    duration: float = 10.0  # seconds of load for the timed ingest figures and the latency run
    e2e_events: int = 50_000  # events (one webhook) / deliveries (ten webhooks) in the end-to-end figures
    e2e_timeout: float = 60.0  # at most this long waiting for the receiver to see them all
    latency_rate: float = 1000.0
    profile: bool = False


# -- processes -------------------------------------------------------------------------------------------


class Server:
    """``python -m tests.bench.receiver MODE`` in its own process: started, its port read, killed at the end."""

    def __init__(self, mode: str, log_path: Path) -> None:
        self.mode = mode
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self._drain: asyncio.Task[None] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def start(self, timeout: float = 15.0) -> Server:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.receiver",
            self.mode,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        raise RuntimeError(f"bench {self.mode} server exited: {b''.join(seen).decode()}")
                    seen.append(raw)
                    with contextlib.suppress(orjson.JSONDecodeError):
                        line = orjson.loads(raw)
                        if isinstance(line, dict) and line.get("event") == "ready":
                            self.port = int(line["port"])
                            break
        except TimeoutError:
            await self.kill()
            raise RuntimeError(f"bench {self.mode} server did not start in {timeout}s: {b''.join(seen)!r}") from None
        self._drain = asyncio.create_task(self._copy_output(b"".join(seen)))
        return self

    async def _copy_output(self, head: bytes) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("wb") as log:
            log.write(head)
            async for raw in self.proc.stdout:
                log.write(raw)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain, 5)


class Receiver(Server):
    def __init__(self, log_path: Path) -> None:
        super().__init__("receive", log_path)

    async def stats(self, session: aiohttp.ClientSession, latencies: bool = False) -> dict[str, Any]:
        query = "?latencies=1" if latencies else ""
        async with session.get(self.url(f"/_stats{query}")) as response:
            response.raise_for_status()
            result: dict[str, Any] = orjson.loads(await response.read())
            return result

    async def reset(self, session: aiohttp.ClientSession) -> None:
        async with session.post(self.url("/_reset")) as response:
            response.raise_for_status()

    async def wait_for(
        self, session: aiohttp.ClientSession, count: int, timeout: float, key: str = "count"
    ) -> tuple[dict[str, Any], bool]:
        """Poll until ``key`` reaches ``count`` or ``timeout`` passes; the last stats and whether it did."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats(session)
            if stats[key] >= count:
                return stats, True
            if time.monotonic() >= deadline:
                return stats, False
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def workspace(name: str) -> AsyncIterator[Path]:
    """A fresh ``var/bench/NAME/``; its SQLite files are deleted at the end."""
    path = (BENCH_DIR / name).absolute()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        for db in path.glob("relay.db*"):
            db.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def running(*servers: Server) -> AsyncIterator[None]:
    try:
        for server in servers:
            await server.start()
        yield
    finally:
        for server in servers:
            await server.kill()


def relay_config(
    workdir: Path,
    webhook_urls: list[str],
    rate_limit: str | None = None,
    storage_url: str | None = None,
    ordering: str | None = None,
) -> Path:
    """The bench's relay.toml: one webhook a URL (``w0``, ``w1``, …), each with ``rate_limit`` and ``ordering``
    ("none", "fifo", "latest") when given."""
    lines = [
        "[server]",
        'listen = "127.0.0.1:0"',
        f'api_keys = ["{API_KEY}"]',
        f'event_loop = "{bench.event_loop()}"',
        "",
        "[storage]",
        *([f'url = "{storage_url}"'] if storage_url else [f'path = "{workdir / "relay.db"}"', 'durability = "full"']),
        "",
        "[delivery]",
        "allow_http = true",
        "allow_private_networks = true",
        f"per_webhook_concurrency = {PER_WEBHOOK_CONCURRENCY}",
    ]
    for index, url in enumerate(webhook_urls):
        lines += [
            "",
            "[[webhooks]]",
            f'id = "w{index}"',
            f'url = "{url}"',
            'events = ["*"]',
            f'secret = "{WEBHOOK_SECRET}"',
            'signature = "standard"',
        ]
        if rate_limit is not None:
            lines.append(f'rate_limit = "{rate_limit}"')
        if ordering is not None:
            lines.append(f'ordering = "{ordering}"')
    path = workdir / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.asynccontextmanager
async def relay_running(
    workdir: Path,
    webhook_urls: list[str],
    rate_limit: str | None = None,
    storage_url: str | None = None,
    ordering: str | None = None,
) -> AsyncIterator[RelayProcess]:
    config = relay_config(workdir, webhook_urls, rate_limit, storage_url, ordering)
    relay = RelayProcess(config, log_path=workdir / "relay.log")
    try:
        try:
            await relay.start(timeout=30)
        except AssertionError as exc:
            raise RuntimeError(str(exc)) from None
        yield relay
        with contextlib.suppress(Exception):
            await relay.stop(timeout=20)
    finally:
        await relay.kill()


async def postgres_delivery_counts(url: str) -> dict[str, int]:
    import asyncpg  # type: ignore[import-untyped]  # only the PostgreSQL figures need it

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
        return {row[0]: int(row[1]) for row in rows}
    finally:
        await conn.close()


def delivery_counts(db: Path) -> dict[str, int]:
    """``status -> count`` of the deliveries table, read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return dict(conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall())
    finally:
        conn.close()


async def _wait_recorded(db: Path | str, expected: int, timeout: float) -> tuple[dict[str, int], float | None]:
    """Poll the deliveries table (a SQLite file, or a PostgreSQL URL) until ``expected`` rows are succeeded; the
    counts and when (or None)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = delivery_counts(db) if isinstance(db, Path) else await postgres_delivery_counts(db)
        if counts.get("succeeded", 0) >= expected:
            return counts, time.time()
        if time.monotonic() >= deadline:
            return counts, None
        await asyncio.sleep(0.05)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a live process (all its threads) and its live children (relay's WAL syncer) have
    used so far; 0.0 if unreadable."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS + sum(cpu_seconds(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(child) for child in children.read().split()]
    return found


class CpuMeter:
    """CPU seconds used by some processes between ``start()`` and ``stop()``, and as cores busy."""

    def __init__(self, **pids: int | None) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}
        self.began = 0.0
        self.used: dict[str, float] = {}
        self.elapsed = 0.0

    def start(self) -> CpuMeter:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.began = time.monotonic()
        return self

    def stop(self) -> dict[str, Any]:
        self.elapsed = time.monotonic() - self.began
        self.used = {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}
        return {
            "seconds": round(self.elapsed, 2),
            "cpu_seconds": {k: round(v, 2) for k, v in self.used.items()},
            "cores": {k: round(v / self.elapsed, 2) if self.elapsed else None for k, v in self.used.items()},
        }


def _ratio(relay: float | None, baseline: float | None) -> float | None:
    if relay is None or not baseline:
        return None
    return relay / baseline


def _rate(stats: dict[str, Any]) -> float | None:
    if stats["count"] < 2 or stats["first"] is None or stats["last"] is None or stats["last"] <= stats["first"]:
        return None
    return float(stats["count"] / (stats["last"] - stats["first"]))


def _cpu_us(load: dict[str, Any], process: str) -> str:
    """The process's CPU time per answered request, in µs: what the ingest work costs, whatever the machine's speed."""
    cores, rps = load["cpu"]["cores"].get(process), load.get("rps")
    return f"{cores / rps * 1e6:.0f}" if cores and rps else "?"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


# -- 1. single-event ingest ------------------------------------------------------------------------------


async def single_ingest(settings: Settings) -> Figure:
    figure = Figure(
        "single_ingest",
        f"single-event ingest, {CONNECTIONS} connections",
        "events/s",
        "≥ 60 % of baseline",
    )
    body = orjson.dumps(bench_event(0))
    async with workspace("single") as workdir:
        base_server = Server("ingest", workdir / "baseline.log")
        async with running(base_server):
            meter = CpuMeter(server=base_server.pid).start()
            url = base_server.url("/v1/events")
            base = await loadgen.run_http_load(
                url, body, connections=CONNECTIONS, duration=settings.duration, workdir=workdir
            )
            base["cpu"] = meter.stop()
        async with relay_running(workdir, []) as relay:
            meter = CpuMeter(relay=_pid(relay)).start()
            ours = await loadgen.run_http_load(
                f"{relay.url}/v1/events", body, connections=CONNECTIONS, duration=settings.duration, workdir=workdir
            )
            ours["cpu"] = meter.stop()
    figure.baseline, figure.relay = base["rps"], ours["rps"]
    figure.ratio = _ratio(figure.relay, figure.baseline)
    figure.met = figure.ratio is not None and figure.ratio >= 0.60 and ours["non_2xx"] == 0 and ours["errors"] == 0
    figure.note = (
        f"{ours['tool']}; no webhooks; relay p50 {ours['p50_ms']:.1f} ms, p99 {ours['p99_ms']:.1f} ms; "
        f"CPU cores: relay {ours['cpu']['cores']['relay']}, baseline {base['cpu']['cores']['server']}; "
        f"µs CPU a request: relay {_cpu_us(ours, 'relay')}, baseline {_cpu_us(base, 'server')}"
    )
    figure.details = {"baseline": base, "relay": ours}
    return figure


# -- 2. batch ingest -------------------------------------------------------------------------------------


async def batch_ingest(settings: Settings) -> Figure:
    batch, clients = 1000, 4
    figure = Figure(
        "batch_ingest", f"batch ingest ({batch} events a request, {clients} clients)", "events/s", "≥ 200,000 events/s"
    )
    body = batch_body(0, batch)
    duration = max(3.0, settings.duration * 0.8)
    async with workspace("batch") as workdir:
        base_server = Server("ingest", workdir / "baseline.log")
        async with running(base_server):
            meter = CpuMeter(server=base_server.pid).start()
            base = await loadgen.run_http_load(
                base_server.url("/v1/events"), body, connections=clients, duration=duration, workdir=workdir
            )
            base["cpu"] = meter.stop()
        async with relay_running(workdir, []) as relay:
            meter = CpuMeter(relay=_pid(relay)).start()
            ours = await loadgen.run_http_load(
                f"{relay.url}/v1/events", body, connections=clients, duration=duration, workdir=workdir
            )
            ours["cpu"] = meter.stop()
    figure.baseline, figure.relay = base["rps"] * batch, ours["rps"] * batch
    figure.ratio = _ratio(figure.relay, figure.baseline)
    figure.met = figure.relay >= 200_000 and ours["non_2xx"] == 0 and ours["errors"] == 0
    figure.note = (
        f"{ours['tool']}; no webhooks; {len(body) // 1024} KiB bodies; relay p50 {ours['p50_ms']:.0f} ms a request; "
        f"CPU cores: relay {ours['cpu']['cores']['relay']}"
    )
    figure.details = {"baseline": base, "relay": ours, "body_bytes": len(body)}
    return figure


# -- 3. and 4. end-to-end --------------------------------------------------------------------------------


def _pid(relay: RelayProcess) -> int:
    assert relay.proc is not None
    return relay.proc.pid


async def _relay_e2e(
    workdir: Path,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    webhooks: int,
    events: int,
    timeout: float,
    profile_to: Path | None = None,
    storage_url: str | None = None,
    keys: int = 0,
    ordering: str | None = None,
) -> dict[str, Any]:
    """Ingest ``events`` (batches of 1000, 4 at a time) into a relay with ``webhooks`` webhooks (its store SQLite in
    ``workdir``, or the PostgreSQL database at ``storage_url``); wait for the receiver to see every delivery. With
    ``keys``, the events carry ordering keys ``k0`` … in turn; ``ordering`` is every webhook's."""
    expected = events * webhooks
    urls = [receiver.url(f"/hook/{i}") for i in range(webhooks)]
    await receiver.reset(session)
    profiler: asyncio.Task[None] | None = None
    async with relay_running(workdir, urls, storage_url=storage_url, ordering=ordering) as relay:
        try:
            meter = CpuMeter(relay=_pid(relay), receiver=receiver.pid).start()
            began = time.time()
            ingest = await loadgen.run_process(
                loadgen_command(
                    "batches", "--url", f"{relay.url}/v1/events", "--count", str(events), "--keys", str(keys)
                ),
                timeout=timeout,
            )
            ingested = loadgen.parse_result(ingest)
            if ingested["accepted"] != events:
                raise RuntimeError(f"relay accepted {ingested['accepted']} of {events} events: {ingested}")
            if profile_to is not None:  # deliveries only, once ingest is done
                profiler = _start_profiler(_pid(relay), profile_to)
            stats, complete = await receiver.wait_for(
                session, expected, timeout=max(1.0, timeout - (time.time() - began))
            )
            cpu = meter.stop()
            # The receiver has seen them all; how long until relay has recorded them all as succeeded?
            counts, recorded_at = await _wait_recorded(storage_url or workdir / "relay.db", expected, timeout=15)
        finally:
            if profiler is not None:
                await profiler
    per_path = Counter(stats["by_path"])
    return {
        "expected": expected,
        "received": stats["count"],
        "complete": complete,
        "rate": _rate(stats),
        "wall_from_first_ingest": (stats["last"] or began) - began,
        "ingest": ingested,
        "duplicates_or_missing": {p: n - events for p, n in per_path.items() if n != events},
        "relay_delivery_statuses": counts,
        "cpu_from_first_ingest": cpu,
        "relay_cpu_us_per_delivery": round(cpu["cpu_seconds"]["relay"] / max(1, stats["count"]) * 1e6, 1),
        "all_recorded_after_last_received_s": None if recorded_at is None else recorded_at - (stats["last"] or began),
    }


async def e2e_one(settings: Settings) -> Figure:
    figure = Figure(
        "e2e_one_webhook",
        "end-to-end, one webhook",
        "deliveries/s",
        "≥ 5,000/s and ≥ 70 % of baseline",
    )
    events = settings.e2e_events
    async with workspace("e2e-one") as workdir:
        receiver = Receiver(workdir / "receiver.log")
        async with running(receiver), aiohttp.ClientSession() as session:
            await receiver.reset(session)
            meter = CpuMeter(receiver=receiver.pid).start()
            out = await loadgen.run_process(
                loadgen_command(
                    "deliver", "--url", receiver.url("/base"), "--count", str(events), "--concurrency", "256"
                ),
                timeout=settings.e2e_timeout,
            )
            client = loadgen.parse_result(out)
            base_stats, _ = await receiver.wait_for(session, events, timeout=10)
            client["receiver_cpu"] = meter.stop()
            ours = await _relay_e2e(workdir, receiver, session, 1, events, settings.e2e_timeout)
    figure.baseline = _rate(base_stats)
    figure.relay = ours["rate"]
    figure.ratio = _ratio(figure.relay, figure.baseline)
    figure.met = ours["complete"] and figure.relay is not None and figure.relay >= 5000 and (figure.ratio or 0) >= 0.7
    figure.note = (
        f"{events:,} events; concurrency 256, per_webhook_concurrency {PER_WEBHOOK_CONCURRENCY}; signed (standard); "
        f"relay {ours['relay_cpu_us_per_delivery']:.0f} µs CPU a delivery (ingest included)"
        + ("" if ours["complete"] else f"; INCOMPLETE: {ours['received']:,} delivered in {settings.e2e_timeout:.0f} s")
    )
    figure.details = {"baseline_client": client, "baseline_receiver": base_stats | {"latencies": None}, "relay": ours}
    return figure


async def e2e_ten(settings: Settings) -> Figure:
    webhooks = 10
    figure = Figure("e2e_ten_webhooks", f"end-to-end, {webhooks} webhooks per event", "deliveries/s", "≥ 5,000/s")
    events = max(1, settings.e2e_events // webhooks)
    async with workspace("e2e-ten") as workdir:
        receiver = Receiver(workdir / "receiver.log")
        async with running(receiver), aiohttp.ClientSession() as session:
            ours = await _relay_e2e(workdir, receiver, session, webhooks, events, settings.e2e_timeout)
    figure.relay = ours["rate"]
    figure.met = ours["complete"] and figure.relay is not None and figure.relay >= 5000
    figure.note = (
        f"{events:,} events x {webhooks} webhooks; signed (standard); "
        f"relay {ours['relay_cpu_us_per_delivery']:.0f} µs CPU a delivery (ingest included)"
    ) + ("" if ours["complete"] else f"; INCOMPLETE: {ours['received']:,} delivered in {settings.e2e_timeout:.0f} s")
    figure.details = {"relay": ours}
    return figure


# -- 5. latency ------------------------------------------------------------------------------------------


async def _paced(url: str, rate: float, duration: float) -> dict[str, Any]:
    args = ["paced", "--url", url, "--rate", str(rate), "--duration", str(duration)]
    return loadgen.parse_result(await loadgen.run_process(loadgen_command(*args), timeout=duration + 60))


def _latency_stages(db_path: Path) -> dict[str, dict[str, float]]:
    """Where an event's latency goes, read from the store of a relay that has delivered them all (first tries).

    - ``to_handler``: from the producer's ``data.sent`` to the ingest handler's clock (the request's way in);
    - ``to_attempt``: from there to the attempt's start (parse, group commit, the hand-back to the loop, launch);
    - ``attempt``: the attempt itself (render, sign, the POST and its answer).
    """
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT json_extract(CAST(e.data AS TEXT), '$.sent'), e.ingested_at, a.started_at, a.duration_ms"
            " FROM events e JOIN deliveries d ON d.event_seq = e.seq JOIN attempts a ON a.delivery_seq = d.seq"
            " WHERE a.number = 1"
        ).fetchall()
    stages = {
        "to_handler": [(ingested - sent) * 1000 for sent, ingested, _, _ in rows],
        "to_attempt": [(started - ingested) * 1000 for _, ingested, started, _ in rows],
        "attempt": [duration for _, _, _, duration in rows],
    }
    return {name: {"p50": _pct(xs, 0.5), "p99": _pct(xs, 0.99)} for name, xs in stages.items()}


async def latency(settings: Settings) -> list[Figure]:
    rate, duration = settings.latency_rate, settings.duration
    p50 = Figure("latency_p50", f"latency ingest→delivered at {rate:,.0f}/s, p50", "ms", "≤ 2 ms")
    p99 = Figure("latency_p99", f"latency ingest→delivered at {rate:,.0f}/s, p99", "ms", "≤ 5 ms")
    async with workspace("latency") as workdir:
        receiver = Receiver(workdir / "receiver.log")
        async with running(receiver), aiohttp.ClientSession() as session:
            # Baseline: the same producer straight to the receiver (one hop, no relay), for half as long.
            await receiver.reset(session)
            base_run = await _paced(receiver.url("/lat-base"), rate, max(2.0, duration / 2))
            base_stats, _ = await receiver.wait_for(session, base_run["accepted"], 10, key="latency_count")
            base_lat = (await receiver.stats(session, latencies=True))["latencies"]
            await receiver.reset(session)
            async with relay_running(workdir, [receiver.url("/lat")]) as relay:
                meter = CpuMeter(relay=_pid(relay), receiver=receiver.pid).start()
                run = await _paced(f"{relay.url}/v1/events", rate, duration)
                run["cpu"] = meter.stop()
                stats, complete = await receiver.wait_for(session, run["accepted"], 30, key="latency_count")
                stages = _latency_stages(workdir / "relay.db")
            lat = (await receiver.stats(session, latencies=True))["latencies"]
    for fig, q in ((p50, 0.50), (p99, 0.99)):
        fig.baseline = _pct(base_lat, q) * 1000 if base_lat else None
        fig.relay = _pct(lat, q) * 1000 if lat else None
        fig.note = (
            f"{run['accepted']:,} events over {run['duration']:.1f} s ({run['rate']:,.0f}/s achieved); "
            f"baseline: producer → receiver direct; stages at {q:.0%}: "
            + ", ".join(f"{name} {stage[f'p{q * 100:.0f}']:.1f} ms" for name, stage in stages.items())
        )
    p50.met = complete and p50.relay is not None and p50.relay <= 2
    p99.met = complete and p99.relay is not None and p99.relay <= 5
    details = {
        "producer": run,
        "complete": complete,
        "received": stats["latency_count"],
        "max_ms": max(lat) * 1000 if lat else None,
        "p90_ms": _pct(lat, 0.90) * 1000 if lat else None,
        "p999_ms": _pct(lat, 0.999) * 1000 if lat else None,
        "baseline_producer": base_run,
        "baseline_received": base_stats["latency_count"],
        "stages_ms": stages,
    }
    p50.details = p99.details = details
    return [p50, p99]


# -- 6. memory and claim cost with a large backlog -------------------------------------------------------


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a live process with its live children (relay's WAL syncer), in MB."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    for child in _children(pid):
        for key, value in rss_mb(child).items():
            found[key] = found.get(key, 0.0) + value
    return found


async def _reload(
    relay: RelayProcess,
    workdir: Path,
    urls: list[str],
    rate_limit: str | None,
    storage_url: str | None = None,
    ordering: str | None = None,
) -> None:
    """Rewrite the config and SIGHUP; wait for ``config_reloaded``."""
    relay_config(workdir, urls, rate_limit, storage_url, ordering)
    before = len(relay.events("config_reloaded"))
    await relay.signal(signal.SIGHUP)
    async with asyncio.timeout(30):
        while len(relay.events("config_reloaded")) == before:
            if relay.events("reload_failed"):
                raise RuntimeError(f"relay refused the reload: {relay.events('reload_failed')[-1]}")
            await asyncio.sleep(0.05)


async def _ingest(relay: RelayProcess, events: int, timeout: float, keys: int = 0) -> dict[str, Any]:
    out = await loadgen.run_process(
        loadgen_command("batches", "--url", f"{relay.url}/v1/events", "--count", str(events), "--keys", str(keys)),
        timeout=timeout,
    )
    result = loadgen.parse_result(out)
    if result["accepted"] != events:
        raise RuntimeError(f"relay accepted {result['accepted']} of {events} events: {result}")
    return result


async def _drain_rate(
    relay: RelayProcess,
    workdir: Path,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    urls: list[str],
    until: int,
    window: float,
    storage_url: str | None = None,
    ordering: str | None = None,
) -> dict[str, Any]:
    """Lift the rate limit and measure deliveries/s at the receiver until ``until`` arrived or ``window`` s."""
    await receiver.reset(session)
    await _reload(relay, workdir, urls, None, storage_url, ordering)
    stats, complete = await receiver.wait_for(session, until, timeout=window)
    return {"received": stats["count"], "complete": complete, "rate": _rate(stats)}


HELD = "1/h"  # keeps the deliveries pending while they pile up; lifted by a SIGHUP reload


async def claim_cost(
    workdir: Path,
    storage_url: str | None = None,
    *,
    webhooks: int = 10,
    per_key: int = 0,
    ordering: str | None = None,
    ingest_timeout: float = 90,
) -> dict[str, Any]:
    """One relay process (its store SQLite in ``workdir``, or the PostgreSQL database at ``storage_url``): its RSS
    idle, deliveries/s with 10,000 pending, then with 1,000,000 pending (ingested while ``rate_limit`` held them),
    and its RSS then. The deliveries spread over ``webhooks`` webhooks (each with ``ordering``); with ``per_key``,
    the events carry ordering keys, ``per_key`` events a key (1,000 keys at 10 k, 100,000 at 1 M for 10)."""
    small, large = 10_000 // webhooks, 1_000_000 // webhooks  # events; x webhooks = 10,000 and 1,000,000 deliveries
    keys_small, keys_large = (small // per_key, large // per_key) if per_key else (0, 0)
    store: Path | str = storage_url or workdir / "relay.db"
    receiver = Receiver(workdir / "receiver.log")
    async with running(receiver), aiohttp.ClientSession() as session:
        urls = [receiver.url(f"/hook/{i}") for i in range(webhooks)]
        async with relay_running(workdir, urls, rate_limit=HELD, storage_url=storage_url, ordering=ordering) as relay:
            pid = _pid(relay)
            idle = rss_mb(pid)
            await _ingest(relay, small, 60, keys_small)
            # The windows start empty: one delivery per webhook went out already.
            waiting = (await _counts(store)).get("pending", 0)
            at_10k = await _drain_rate(relay, workdir, receiver, session, urls, waiting, 20, storage_url, ordering)
            await _reload(relay, workdir, urls, HELD, storage_url, ordering)
            began = time.monotonic()
            ingest = await _ingest(relay, large, ingest_timeout, keys_large)
            ingest_s = time.monotonic() - began
            await asyncio.sleep(1.0)
            pending = rss_mb(pid)
            counts = await _counts(store)
            at_1m = await _drain_rate(
                relay, workdir, receiver, session, urls, large * webhooks, 10, storage_url, ordering
            )
            after = rss_mb(pid)
    return {
        "idle": idle,
        "pending": pending,
        "draining": after,
        "statuses": counts,
        "ingest": ingest,
        "ingest_s": ingest_s,
        "at_10k": at_10k,
        "at_1m": at_1m,
        "events": large,
        "webhooks": webhooks,
    }


async def _counts(store: Path | str) -> dict[str, int]:
    return delivery_counts(store) if isinstance(store, Path) else await postgres_delivery_counts(store)


def flat_figure(name: str, label: str, measured: dict[str, Any]) -> Figure:
    flat = Figure(name, label, "deliveries/s", "flat: ≥ 90 % of 10 k")
    flat.baseline, flat.relay = measured["at_10k"]["rate"], measured["at_1m"]["rate"]
    flat.ratio = _ratio(flat.relay, flat.baseline)
    flat.met = flat.ratio is not None and flat.ratio >= 0.9
    flat.note = (
        f"same relay process; rate limit lifted by SIGHUP; 10 s window at 1 M; ingested in {measured['ingest_s']:.0f} s"
    )
    flat.details = {"at_10k": measured["at_10k"], "at_1m": measured["at_1m"]}
    return flat


async def memory(settings: Settings) -> list[Figure]:
    rss = Figure("memory_1m_pending", "memory with 1,000,000 pending deliveries", "MB", "≤ 150 MB RSS")
    async with workspace("memory") as workdir:
        measured = await claim_cost(workdir)
    idle, pending, after = measured["idle"], measured["pending"], measured["draining"]
    rss.baseline = idle.get("VmRSS")
    rss.relay = pending.get("VmRSS")
    rss.met = rss.relay is not None and rss.relay <= 150
    rss.note = (
        f"{measured['events']:,} events x {measured['webhooks']} webhooks ingested in {measured['ingest_s']:.0f} s "
        f"with rate_limit {HELD}; baseline: relay idle; peak {pending.get('VmHWM', 0):.0f} MB, "
        f"{after.get('VmRSS', 0):.0f} MB after 10 s draining"
    )
    rss.details = {k: measured[k] for k in ("idle", "pending", "draining", "statuses", "ingest")}
    flat = flat_figure("claim_cost_flat", "deliveries/s with 1,000,000 pending (baseline: 10,000 pending)", measured)
    return [rss, flat]


# -- profiling (opt-in, an extra pass so the figures above stay unprofiled) -------------------------------


def _find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


PROFILE_SECONDS = 10
PROFILE_RATE = 100


def _start_profiler(pid: int, out: Path) -> asyncio.Task[None]:
    """py-spy on ``pid`` for PROFILE_SECONDS: OUT.txt (collapsed stacks by thread, for the summary) and OUT.svg."""
    py_spy = _find_py_spy()

    async def record() -> None:
        if py_spy is None:
            out.with_suffix(".log").write_text("py-spy not installed (.venv/bin/pip install py-spy)\n")
            return
        common = ["record", "--pid", str(pid), "--duration", str(PROFILE_SECONDS), "--rate", str(PROFILE_RATE)]
        # The collapsed stacks pause the process for each sample (consistent stacks); the flame graph only reads
        # its memory (--nonblocking), which is why the two can run side by side.
        runs = [
            [*common, "--threads", "--format", "raw", "-o", str(out.with_suffix(".txt"))],
            [*common, "--nonblocking", "--format", "flamegraph", "-o", str(out.with_suffix(".svg"))],
        ]
        procs = [
            await asyncio.create_subprocess_exec(
                py_spy, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            for args in runs
        ]
        try:
            outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
            out.with_suffix(".log").write_bytes(b"".join(text for text, _ in outputs))
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    return asyncio.create_task(record())


def summarize_profile(raw: Path, log: Path | None = None, top: int = 25) -> str:
    """Per thread: share of the time busy; for the busiest thread (the event loop), self and inclusive shares.

    ``raw`` is py-spy's ``--threads --format raw`` output: ``thread (TID): NAME;frame;frame… COUNT``.
    """
    rounds = PROFILE_RATE * PROFILE_SECONDS
    if log is not None and log.exists() and (m := re.search(r"Samples: (\d+)", log.read_text())):
        rounds = int(m.group(1))
    threads: Counter[str] = Counter()
    own: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        name = thread.partition(": ")[2] or thread
        if name.startswith("Thread-"):
            name = "aiosqlite/other worker threads"
        threads[name] += count
        if frames:
            own[name][frames[-1]] += count
        for frame in set(frames):
            inclusive[name][frame] += count
    if not threads:
        return "no samples\n"
    lines = [f"{rounds} sampling rounds ({PROFILE_RATE} Hz, {PROFILE_SECONDS} s); busy = share of rounds", ""]
    lines += [f"  {n / rounds:6.1%} busy  {name}" for name, n in threads.most_common()]
    main = "MainThread" if "MainThread" in threads else threads.most_common(1)[0][0]
    total = threads[main]
    lines += ["", f"{main}, self (top of stack), share of its busy samples:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own[main].most_common(top)]
    lines += ["", f"{main}, inclusive:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive[main].most_common(top + 15)]
    for name in threads:
        if name != main:
            lines += ["", f"{name}, self:"]
            lines += [f"  {n / threads[name]:6.1%}  {frame}" for frame, n in own[name].most_common(8)]
    return "\n".join(lines) + "\n"


def _absolute(path: Path) -> Path:
    return path.absolute()


def _summary(out: Path) -> str:
    raw = out.with_suffix(".txt")
    summary = summarize_profile(raw, out.with_suffix(".log")) if raw.exists() else f"no profile; see {out.name}.log\n"
    path = out.with_name(out.name + "-summary.txt")
    path.write_text(summary)
    return str(path)


async def profile_e2e(settings: Settings) -> dict[str, Any]:
    """One more end-to-end run (one webhook) with py-spy sampling the relay; the summary lands in var/bench."""
    out = _absolute(BENCH_DIR / "profile-e2e")
    async with workspace("profile") as workdir:
        receiver = Receiver(workdir / "receiver.log")
        async with running(receiver), aiohttp.ClientSession() as session:
            result = await _relay_e2e(
                workdir, receiver, session, 1, settings.e2e_events, settings.e2e_timeout, profile_to=out
            )
    return {"rate_while_profiled": result["rate"], "summary_file": _summary(out)}


async def profile_ingest(settings: Settings) -> dict[str, Any]:
    """Single-event and batch ingest again (11 s each, no webhooks) with py-spy sampling the relay."""
    results: dict[str, Any] = {}
    for name, body, connections in (
        ("single", orjson.dumps(bench_event(0)), CONNECTIONS),
        ("batch", batch_body(0, 1000), 4),
    ):
        out = _absolute(BENCH_DIR / f"profile-ingest-{name}")
        async with workspace(f"profile-{name}") as workdir, relay_running(workdir, []) as relay:
            profiler = _start_profiler(_pid(relay), out)
            try:
                load = await loadgen.run_http_load(
                    f"{relay.url}/v1/events", body, connections=connections, duration=11, workdir=workdir
                )
            finally:
                await profiler
        rate = load["rps"] * (1000 if name == "batch" else 1)
        results[name] = {"events_per_s_while_profiled": rate, "summary_file": _summary(out)}
    return results


async def profile_latency(settings: Settings) -> dict[str, Any]:
    """The steady 1,000 events/s run again (11 s) with py-spy sampling the relay."""
    out = _absolute(BENCH_DIR / "profile-latency")
    async with workspace("profile-latency") as workdir:
        receiver = Receiver(workdir / "receiver.log")
        async with running(receiver), relay_running(workdir, [receiver.url("/lat")]) as relay:
            profiler = _start_profiler(_pid(relay), out)
            try:
                meter = CpuMeter(relay=_pid(relay)).start()
                run = await _paced(f"{relay.url}/v1/events", settings.latency_rate, 11)
                run["cpu"] = meter.stop()
            finally:
                await profiler
    return {"producer": run, "summary_file": _summary(out)}
