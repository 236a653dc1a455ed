"""Ingest with many tenants (CONTRACT §9): batch ingest with 1,000 tenants × 5 API webhooks against 1 tenant × 5, in
the same run, alternated. Every event matches five webhooks either way; only how many webhooks the relay holds, and
how many tenants the events spread over, differ. Matching looks at the event's tenant's webhooks (and the
platform-wide ones), never at every webhook, so the figure should stay within 15 % of the one-tenant one.

Delivery is held still so that the figure is ingest's: ``[delivery] concurrency = 1`` and every webhook points at a
socket that accepts connections and never answers, so one attempt waits out the run and the rest stay pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
from collections.abc import Iterator
from pathlib import Path

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
ROUNDS = 2  # each side twice, alternated: one tenant, many, one, many


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


async def _round(workdir: Path, tenants: int, duration: float) -> dict[str, object]:
    with silent_endpoint() as url:
        relay = RelayProcess(_config(workdir), log_path=workdir / "relay.log")
        try:
            await relay.start(timeout=30)
            await _create_webhooks(relay.url, str(url), tenants)
            meter = CpuMeter(relay=_pid(relay)).start()
            load = await loadgen.run_http_load(
                f"{relay.url}/v1/events", _body(tenants), connections=CLIENTS, duration=duration, workdir=workdir
            )
            load["cpu"] = meter.stop()
            with contextlib.suppress(Exception):
                await relay.stop(timeout=20)
        finally:
            await relay.kill()
    return load


async def tenants(settings: Settings) -> Figure:
    figure = Figure(
        "tenants_batch_ingest",
        f"batch ingest, {TENANTS:,} tenants × {WEBHOOKS_PER_TENANT} API webhooks (baseline: 1 tenant × 5)",
        "events/s",
        "≥ 85 % of baseline",
    )
    duration = max(3.0, settings.duration * 0.6)
    rates: dict[int, list[float]] = {1: [], TENANTS: []}
    failures = 0
    for round_number in range(ROUNDS):
        for count in (1, TENANTS):
            async with workspace(f"tenants-{count}-{round_number}") as workdir:
                load = await _round(workdir, count, duration)
            rates[count].append(float(load["rps"]) * BATCH)  # type: ignore[arg-type]
            failures += int(load["non_2xx"]) + int(load["errors"])  # type: ignore[call-overload]
    figure.baseline = statistics.mean(rates[1])
    figure.relay = statistics.mean(rates[TENANTS])
    figure.ratio = figure.relay / figure.baseline if figure.baseline else None
    figure.met = figure.ratio is not None and figure.ratio >= 0.85 and failures == 0
    figure.note = (
        f"{ROUNDS} rounds alternated; one tenant {', '.join(f'{r:,.0f}' for r in rates[1])}/s, "
        f"{TENANTS:,} tenants {', '.join(f'{r:,.0f}' for r in rates[TENANTS])}/s; {WEBHOOKS_PER_TENANT} deliveries an "
        "event, held pending"
    )
    figure.details = {"rates": rates}
    return figure
