"""kill -9 at random moments loses nothing acknowledged: a ledger of 202s checked against what arrived."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import orjson
from standardwebhooks.webhooks import Webhook as StandardVerifier
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support.process import RelayProcess, write_config
from tests.support.receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "crash-test-key"
KILLS = 6
SEED = 20261122


def crash_config(tmp_path: Path, receiver_url: str) -> Path:
    return write_config(
        tmp_path / "relay.toml",
        f"""
[server]
listen = "127.0.0.1:0"
api_keys = ["{KEY}"]
shutdown_timeout = "2s"

[storage]
path = "{tmp_path / "relay.db"}"
durability = "full"

[delivery]
timeout = "2s"
retry_schedule = ["0s", "200ms", "500ms"]
redrive_interval = "1s"
jitter = 0.1
allow_http = true
allow_private_networks = true

[[webhooks]]
id = "ledger"
url = "{receiver_url}"
secret = "{SECRET}"
""",
    )


async def produce(url: str, acked: list[str], stop: asyncio.Event, rng: random.Random) -> None:
    """Post events until told to stop; every id that got a 202 goes into the ledger."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            size = rng.choice([1, 1, 1, 5])
            batch = [{"type": "consent.created", "data": {"n": len(acked) + i}} for i in range(size)]
            try:
                async with http.post(f"{url}/v1/events", data=orjson.dumps(batch), headers=headers) as response:
                    if response.status == 202:
                        acked.extend(item["id"] for item in (await response.json())["data"])
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.01)  # the relay is down: nothing was acknowledged


async def test_kill_minus_nine_loses_no_acknowledged_event(tmp_path: Path, receiver: Receiver) -> None:
    rng = random.Random(SEED)
    receiver.delay = 0.02
    config = crash_config(tmp_path, receiver.url())
    acked: list[str] = []
    relay = RelayProcess(config)
    for cycle in range(KILLS):
        await relay.start()
        receiver.default_status = 500 if cycle % 3 == 1 else 200  # the receiver fails part of the time
        stop = asyncio.Event()
        producer = asyncio.create_task(produce(relay.url, acked, stop, rng))
        await asyncio.sleep(rng.uniform(0.3, 0.8))
        await relay.kill()  # SIGKILL, mid-stream
        stop.set()
        await producer
    receiver.default_status = 200
    await relay.start()
    assert acked, "the producer never got a 202"

    def arrived() -> set[str]:
        return {r.headers["x-event-id"] for r in receiver.requests if r.headers.get("x-event-id")}

    wanted = set(acked)
    try:
        await receiver.wait_until(lambda _: wanted <= arrived(), timeout=60)
    finally:
        assert await relay.stop() == 0

    missing = set(acked) - arrived()
    assert not missing, f"{len(missing)} acknowledged events never arrived: {sorted(missing)[:10]}"
    verifier = StandardVerifier(SECRET)
    invalid = 0
    for request in receiver.requests:
        try:
            verifier.verify(request.body, dict(request.headers))
        except WebhookVerificationError:
            invalid += 1
    assert invalid == 0
    successes = [r.headers["x-event-id"] for r in receiver.requests]
    duplicates = len(successes) - len(set(successes))
    print(
        f"\nledger: {len(acked)} acknowledged, {len(receiver.requests)} requests, {duplicates} repeats, {KILLS} kills"
    )
