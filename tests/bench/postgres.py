"""The PostgreSQL figures (CONTRACT §8): batch ingest and end to end with one webhook on a private PostgreSQL server
started for the run (``tests.support.postgres``), the end-to-end figure against SQLite's measured in the same
scenario, and the claim cost flat from 10,000 to 1,000,000 pending deliveries."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp

from tests.bench import loadgen
from tests.bench.loadgen import batch_body
from tests.bench.scenarios import (
    CpuMeter,
    Figure,
    Receiver,
    Settings,
    _pid,
    _relay_e2e,
    claim_cost,
    flat_figure,
    relay_running,
    running,
    workspace,
)
from tests.support.postgres import PostgresServer


@contextlib.asynccontextmanager
async def postgres_server() -> AsyncIterator[PostgresServer]:
    server = PostgresServer(name="relay-bench-pg")
    try:
        await server.start_async()
        yield server
    finally:
        with contextlib.suppress(Exception):
            await server.stop_async()
        server.cleanup()


async def postgres(settings: Settings) -> list[Figure]:
    batch_figure = Figure(
        "pg_batch_ingest",
        "PostgreSQL: batch ingest (1000 events a request, 4 clients)",
        "events/s",
        "≥ 30,000 events/s",
    )
    e2e_figure = Figure(
        "pg_e2e_one_webhook", "PostgreSQL: end-to-end, one webhook", "deliveries/s", "≥ 50 % of SQLite's"
    )
    events = settings.e2e_events
    async with postgres_server() as server, workspace("postgres") as workdir:
        url = await server.create_database("bench")
        body = batch_body(0, 1000)
        async with relay_running(workdir, [], storage_url=url) as relay:
            meter = CpuMeter(relay=_pid(relay)).start()
            load = await loadgen.run_http_load(
                f"{relay.url}/v1/events",
                body,
                connections=4,
                duration=max(3.0, settings.duration * 0.8),
                workdir=workdir,
            )
            load["cpu"] = meter.stop()
        batch_figure.relay = load["rps"] * 1000
        batch_figure.met = batch_figure.relay >= 30_000 and load["non_2xx"] == 0 and load["errors"] == 0
        batch_figure.note = f"{load['tool']}; CPU cores: relay {load['cpu']['cores']['relay']}"
        batch_figure.details = {"relay": load}

        e2e_url = await server.create_database("bench")
        receiver = Receiver(workdir / "receiver.log")
        async with running(receiver), aiohttp.ClientSession() as session:
            sqlite = await _relay_e2e(workdir, receiver, session, 1, events, settings.e2e_timeout)
            ours = await _relay_e2e(workdir, receiver, session, 1, events, settings.e2e_timeout, storage_url=e2e_url)
    e2e_figure.baseline, e2e_figure.relay = sqlite["rate"], ours["rate"]
    if e2e_figure.baseline and e2e_figure.relay:
        e2e_figure.ratio = e2e_figure.relay / e2e_figure.baseline
    e2e_figure.met = ours["complete"] and (e2e_figure.ratio or 0) >= 0.5
    e2e_figure.note = (
        f"{events:,} events; baseline: the same run on SQLite (durability full); "
        f"relay {ours['relay_cpu_us_per_delivery']:.0f} µs CPU a delivery (ingest included)"
        + ("" if ours["complete"] else f"; INCOMPLETE: {ours['received']:,} delivered")
    )
    e2e_figure.details = {"sqlite": sqlite, "postgres": ours}
    return [batch_figure, e2e_figure]


async def postgres_claims(settings: Settings) -> list[Figure]:
    """Claim cost on PostgreSQL: deliveries/s with 1,000,000 pending against 10,000, one relay process."""
    async with postgres_server() as server, workspace("postgres-claims") as workdir:
        measured = await claim_cost(workdir, await server.create_database("bench"))
    label = "PostgreSQL: deliveries/s with 1,000,000 pending (baseline: 10,000)"
    return [flat_figure("pg_claim_cost_flat", label, measured)]
