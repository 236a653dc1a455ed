"""Ingest with many tenants (CONTRACT §9), alternated in one run against 1 tenant × 5 API webhooks (the baseline):

- ``tenants_matching``: batch ingest into a relay holding 1,000 tenants × 5 API webhooks, events of one tenant:
  what holding many tenants costs ingest (matching looks at the event's tenant's webhooks and the platform-wide
  ones, never at every webhook);
- ``tenants_batch_ingest``: the same, every batch's events spread over all 1,000 tenants;
- ``tenants_single_ingest``: single-event ingest (64 connections), each request of the next tenant.

The last two also measure the store writing into many webhooks' parts of its per-webhook indexes at once.

Every event matches five webhooks in each. Delivery is held still so that the figures are ingest's:
``[delivery] concurrency = 1`` and every webhook points at a socket that accepts connections and never answers, so
one attempt waits out the run and the rest stay pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import statistics
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.bench import loadgen
from tests.bench.loadgen import API_KEY, bench_event
from tests.bench.scenarios import CpuMeter, Figure, Settings, _pid, workspace
from tests.support.process import RelayProcess

TENANTS = 1000
WEBHOOKS_PER_TENANT = 5
BATCH = 1000
CLIENTS = 4
SINGLE_CONNECTIONS = 64
ROUNDS = 2  # each side twice, alternated


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A socket that takes connections into its backlog and never reads or answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


def _config(workdir: Path) -> Path:
    path = workdir / "relay.toml"
    path.write_text(
        "\n".join(
            [
                "[server]",
                'listen = "127.0.0.1:0"',
                f'api_keys = ["{API_KEY}"]',
                'max_body_size = "4MiB"',
                "",
                "[storage]",
                f'path = "{workdir / "relay.db"}"',
                'durability = "full"',
                "",
                "[delivery]",
                "allow_http = true",
                "allow_private_networks = true",
                "concurrency = 1",
                'timeout = "10m"',
            ]
        )
        + "\n"
    )
    return path


async def _create_webhooks(base: str, url: str, tenants: int) -> None:
    """``WEBHOOKS_PER_TENANT`` API webhooks for each of ``tenants`` tenants, 16 requests at a time."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    bodies = [
        orjson.dumps({"url": url, "events": ["*"], "tenant": f"t{t}", "timeout": "1h"})
        for t in range(tenants)
        for _ in range(WEBHOOKS_PER_TENANT)
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(f"{base}/v1/webhooks", data=body) as answer:
                    if answer.status != 201:
                        raise RuntimeError(f"creating a webhook answered {answer.status}: {await answer.text()}")

        await asyncio.gather(*(worker() for _ in range(16)))


def _body(tenants: int) -> bytes:
    """One batch whose events spread over ``tenants`` tenants, in turn."""
    return orjson.dumps([{**bench_event(i), "tenant": f"t{i % tenants}"} for i in range(BATCH)])


@contextlib.asynccontextmanager
async def _relay(workdir: Path) -> AsyncIterator[RelayProcess]:
    relay = RelayProcess(_config(workdir), log_path=workdir / "relay.log")
    try:
        await relay.start(timeout=30)
        yield relay
        with contextlib.suppress(Exception):
            await relay.stop(timeout=20)
    finally:
        await relay.kill()


async def _template(workdir: Path, tenants: int, url: str) -> Path:
    """A store holding ``tenants`` × 5 API webhooks (made through the API once; each round starts from a copy)."""
    async with _relay(workdir) as relay:
        await _create_webhooks(relay.url, url, tenants)
    return workdir / "relay.db"


async def _round(workdir: Path, template: Path, side: Side, duration: float) -> dict[str, Any]:
    """Ingest into a copy of ``template`` as ``side`` says."""
    shutil.copyfile(template, workdir / "relay.db")
    if side.batch:
        body: bytes | list[bytes] = _body(side.spread)
    else:  # one event a request, each request of the next tenant
        body = [orjson.dumps({**bench_event(n), "tenant": f"t{n % side.spread}"}) for n in range(side.spread)]
    async with _relay(workdir) as relay:
        meter = CpuMeter(relay=_pid(relay)).start()
        load = await loadgen.run_http_load(
            f"{relay.url}/v1/events",
            body,
            connections=CLIENTS if side.batch else SINGLE_CONNECTIONS,
            duration=duration,
            workdir=workdir,
        )
        load["cpu"] = meter.stop()
    return load


@dataclass(frozen=True)
class Side:
    tenants: int  # the relay holds this many tenants' webhooks (× WEBHOOKS_PER_TENANT)
    spread: int  # the events spread over this many of them
    batch: bool  # BATCH events a request, else one


SIDES = {
    "batch_one": Side(1, 1, True),  # the baselines
    "batch_spread": Side(TENANTS, TENANTS, True),
    "batch_one_of_many": Side(TENANTS, 1, True),
    "single_one": Side(1, 1, False),
    "single_spread": Side(TENANTS, TENANTS, False),
}
FIGURES = {  # figure -> (side, its baseline, label); the first is the issue's: what holding many tenants costs
    "tenants_matching": ("batch_one_of_many", "batch_one", "batch ingest, one tenant's events"),
    "tenants_batch_ingest": ("batch_spread", "batch_one", "batch ingest, every batch over all tenants"),
    "tenants_single_ingest": (
        "single_spread",
        "single_one",
        f"single-event ingest, {SINGLE_CONNECTIONS} connections, each request the next tenant's",
    ),
}


async def tenants(settings: Settings) -> list[Figure]:
    duration = max(3.0, settings.duration * 0.4)
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    failures = 0
    with silent_endpoint() as url:
        async with workspace("tenants-one") as one, workspace("tenants-many") as many:
            templates = {1: await _template(one, 1, url), TENANTS: await _template(many, TENANTS, url)}
            for round_number in range(ROUNDS):
                for name, side in SIDES.items():  # alternated: one side's run never follows itself
                    async with workspace(f"tenants-{name}-{round_number}") as workdir:
                        load = await _round(workdir, templates[side.tenants], side, duration)
                    rates[name].append(float(load["rps"]) * (BATCH if side.batch else 1))
                    failures += int(load["non_2xx"]) + int(load["errors"])
    figures = []
    for key, (name, base, label) in FIGURES.items():
        figure = Figure(
            key,
            f"{TENANTS:,} tenants × {WEBHOOKS_PER_TENANT} API webhooks: {label}",
            "events/s",
            "≥ 85 % of 1 tenant × 5",
        )
        figure.baseline, figure.relay = statistics.mean(rates[base]), statistics.mean(rates[name])
        figure.ratio = figure.relay / figure.baseline if figure.baseline else None
        figure.met = figure.ratio is not None and figure.ratio >= 0.85 and failures == 0
        figure.note = (
            f"{ROUNDS} rounds alternated: 1 tenant {_rates(rates[base])}, this {_rates(rates[name])}; "
            f"{WEBHOOKS_PER_TENANT} deliveries an event, held pending"
        )
        figure.details = {"rates": rates}
        figures.append(figure)
    for figure in figures[1:]:
        figure.note += (
            "; the gap is SQLite's per-webhook indexes (deliveries_due, deliveries_webhook): a commit writes into "
            "as many webhooks' parts of them as its events reach, the baseline's into 5 (README, Performance)"
        )
    return figures


def _rates(values: list[float]) -> str:
    return ", ".join(f"{value:,.0f}/s" for value in values)
