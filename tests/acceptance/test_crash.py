"""kill -9 at seeded random moments loses nothing acknowledged: a ledger of 202s checked against what arrived.

A producer streams events at the ``relay`` process (one fixed port across restarts) and writes every id that got
a 202 into its ledger. The receiver writes down every request: event id, attempt number, whether the Standard
Webhooks signature verifies, and what it answered. Phase by phase (seeded) it is healthy, slow, failing or
flaky. The relay is killed with SIGKILL again and again: while running under load, and during startup (before
or while it migrates, reclaims and binds). In the end, with a healthy receiver, every acknowledged id must have
been answered 2xx at least once, every request's signature must verify, and every delivery in the store must
have ended ``succeeded``. Duplicates (ids answered 2xx more than once: the price of at-least-once) are counted and
reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook as StandardVerifier
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support.process import RelayProcess, write_config
from tests.support.receiver import serve_locally

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "crash-test-key"
MODES = ("healthy", "slow", "failing", "flaky")


@dataclass(frozen=True, slots=True)
class Entry:
    event_id: str
    attempt: int
    signature_valid: bool
    status: int


class LedgerReceiver:
    """Records (id, attempt, signature valid, answer) for every request; answers as its current mode says."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mode = "healthy"
        self.entries: list[Entry] = []
        self.verifier = StandardVerifier(SECRET)
        self._runner: web.AppRunner | None = None
        self.delivered_ids: set[str] = set()
        self._waiting_for: set[str] = set()  # acknowledged ids not yet answered 2xx, while ``wait_delivered`` runs
        self._all_delivered = asyncio.Event()
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner, self.port = await serve_locally(app, shutdown_timeout=0.5)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self.verifier.verify(body, dict(request.headers))
            valid = True
        except WebhookVerificationError:
            valid = False
        status, delay = 200, 0.0
        if self.mode == "slow":
            delay = self.rng.uniform(0.05, 0.4)
        elif self.mode == "failing":
            status = 500
        elif self.mode == "flaky":
            status = self.rng.choice([200, 503, 500, 200])
            delay = self.rng.uniform(0.0, 0.1)
        if delay:
            await asyncio.sleep(delay)
        attempt = int(request.headers.get("X-Delivery-Attempt", "0"))
        event_id = request.headers.get("webhook-id", "")
        self.entries.append(Entry(event_id, attempt, valid, status))
        if 200 <= status < 300:
            self.delivered_ids.add(event_id)
            self._waiting_for.discard(event_id)
            if not self._waiting_for:
                self._all_delivered.set()
        return web.Response(status=status, text="ok" if status == 200 else "no")

    async def wait_delivered(self, wanted: set[str], timeout: float) -> None:
        """Return once every id in ``wanted`` was answered 2xx, or after ``timeout`` (the caller checks)."""
        self._waiting_for = wanted - self.delivered_ids
        self._all_delivered.clear()
        if self._waiting_for:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._all_delivered.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def crash_config(tmp_path: Path, port: int, receiver_port: int) -> Path:
    return write_config(
        tmp_path / "relay.toml",
        f"""
[server]
listen = "127.0.0.1:{port}"
api_keys = ["{KEY}"]
shutdown_timeout = "2s"

[storage]
path = "{tmp_path / "relay.db"}"
durability = "full"

[delivery]
timeout = "1s"
retry_schedule = ["0s", "100ms", "300ms"]
redrive_interval = "1s"
jitter = 0.1
allow_http = true
allow_private_networks = true

[[webhooks]]
id = "ledger"
url = "http://127.0.0.1:{receiver_port}/hook"
secret = "{SECRET}"
""",
    )


async def produce(url: str, acked: list[str], stop: asyncio.Event, rng: random.Random) -> None:
    """Post events until told to stop; every id that got a 202 goes into the ledger. Runs across kills."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while not stop.is_set():
            size = rng.choice([1, 1, 1, 5, 20])
            batch = [{"type": "consent.created", "data": {"n": len(acked) + i}} for i in range(size)]
            try:
                async with http.post(f"{url}/v1/events", data=orjson.dumps(batch), headers=headers) as response:
                    if response.status == 202:
                        acked.extend(item["id"] for item in (await response.json())["data"])
                    else:
                        await asyncio.sleep(0.01)
            except (aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.sleep(0.01)  # the relay is down: nothing was acknowledged


async def run_ledger(tmp_path: Path, *, kills: int, seed: int, up: tuple[float, float], settle: float) -> str:
    rng = random.Random(seed)
    receiver = LedgerReceiver(seed)
    await receiver.start()
    port = free_port()
    config = crash_config(tmp_path, port, receiver.port)
    acked: list[str] = []
    relay = RelayProcess(config)
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(f"http://127.0.0.1:{port}", acked, stop, random.Random(seed + 1)))
    during_startup = 0
    try:
        for _ in range(kills):
            receiver.mode = rng.choice(MODES)
            if rng.random() < 0.25:  # a kill during startup: before, while or just after it opens the store
                await relay.spawn()
                await asyncio.sleep(rng.uniform(0.0, 0.6))
                during_startup += not relay.started
            else:
                await relay.start()
                await asyncio.sleep(rng.uniform(*up))
            await relay.kill()  # SIGKILL
        receiver.mode = "healthy"
        await relay.start()
        await asyncio.sleep(0.3)  # a last stretch of ingest on a healthy relay
        stop.set()
        await producer
        wanted = set(acked)
        assert wanted, "the producer never got a 202"
        await receiver.wait_delivered(wanted, settle)
        assert await relay.stop() == 0
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await producer
        await relay.kill()
        await receiver.stop()

    missing = wanted - receiver.delivered_ids
    assert not missing, f"{len(missing)} acknowledged events never delivered: {sorted(missing)[:10]}"
    invalid = [e for e in receiver.entries if not e.signature_valid]
    assert not invalid, f"{len(invalid)} requests with a signature that does not verify: {invalid[:5]}"
    with contextlib.closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall())
        stored = {row[0] for row in db.execute("SELECT id FROM events")}
    assert wanted <= stored, "an acknowledged event is missing from the store"
    assert set(statuses) == {"succeeded"}, f"deliveries not all succeeded: {statuses}"
    successes = Counter(e.event_id for e in receiver.entries if 200 <= e.status < 300)
    duplicates = sum(count - 1 for count in successes.values())
    failed_answers = sum(1 for e in receiver.entries if e.status >= 300)
    return (
        f"ledger (seed {seed}): {kills} SIGKILLs ({during_startup} during startup), {len(wanted)} acknowledged, "
        f"{len(stored) - len(wanted)} more stored unacknowledged, {len(receiver.entries)} requests "
        f"({failed_answers} answered with an error), {len(successes)} ids delivered, {duplicates} duplicate "
        f"deliveries over {sum(1 for c in successes.values() if c > 1)} ids, every signature valid"
    )


async def test_kill_minus_nine_loses_no_acknowledged_event(tmp_path: Path, record_property: object) -> None:
    report = await run_ledger(tmp_path, kills=22, seed=20261122, up=(0.05, 0.4), settle=30)
    print("\n" + report)
    assert callable(record_property)
    record_property("ledger", report)


@pytest.mark.soak
async def test_kill_minus_nine_soak(tmp_path: Path) -> None:
    report = await run_ledger(tmp_path, kills=200, seed=7, up=(0.05, 1.5), settle=600)
    print("\n" + report)
