"""kill -9 keeps per-key order (CONTRACT §11): a fifo webhook, a stream of keyed events (20 keys x 15 events) at
the ``relay`` process while the receiver answers slowly and with some 503s; SIGKILL mid-stream (a few times),
restart on the same store, let it finish. The receiver's per-key ledger (``tests.support.keyed_receiver``) must
show every acknowledged event delivered and, for every key, first successes in ingest order: a duplicate of the
attempt in flight at a kill is allowed (at least once), an event of a key before an earlier one of that key first
succeeded is not, nor two requests of a key in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import aiohttp
import orjson

from tests.acceptance.test_crash import free_port
from tests.support.keyed_receiver import KeyedReceiver
from tests.support.process import RelayProcess, write_config
from tests.support.receiver import Reply

KEY = "crash-order-key"
KEYS, PER_KEY = 20, 15
PACE = 0.04  # seconds between two events of a key, so that the kills come mid-stream


def decide(key: str, n: int, seen: int) -> Reply:
    salt = int(key[1:]) * 31 + n * 7
    if seen == 1 and salt % 6 == 0:
        return Reply(503, delay=0.01)
    return Reply(200, delay=0.01 + (salt % 4) * 0.01)


def config(tmp_path: Path, port: int, receiver: KeyedReceiver) -> Path:
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
retry_schedule = ["0s", "100ms", "200ms", "300ms"]
redrive_interval = "1s"
jitter = 0.0
allow_http = true
allow_private_networks = true

[[webhooks]]
id = "ordered"
url = "{receiver.url()}"
ordering = "fifo"
""",
    )


async def produce(url: str, key: str, acked: list[str]) -> None:
    """Post the key's events one after another, each until it gets a 202 (the same id again after a kill: a no-op
    if it was stored), so the key's ingest order is its events' order."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for n in range(PER_KEY):
            body = {"id": f"{key}.{n}", "type": "t", "data": {"key": key, "n": n}, "ordering_key": key}
            while True:
                try:
                    async with http.post(f"{url}/v1/events", data=orjson.dumps(body), headers=headers) as response:
                        if response.status == 202:
                            acked.append(body["id"])
                            await asyncio.sleep(PACE)
                            break
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass  # the relay is down: nothing was acknowledged
                await asyncio.sleep(0.01)


async def test_kill_minus_nine_keeps_each_keys_order(tmp_path: Path) -> None:
    receiver = await KeyedReceiver(decide, strict=True).start()
    port = free_port()
    relay = RelayProcess(config(tmp_path, port, receiver))
    keys = [f"k{i}" for i in range(KEYS)]
    acked: list[str] = []
    producers = [asyncio.create_task(produce(f"http://127.0.0.1:{port}", k, acked)) for k in keys]
    at_kills: list[tuple[int, int]] = []  # events acknowledged and first delivered when each SIGKILL came
    try:
        for up in (0.3, 0.2, 0.3):
            await relay.start()
            await asyncio.sleep(up)
            await relay.kill()  # SIGKILL, mid-stream
            at_kills.append((len(acked), sum(len(receiver.delivered(k)) for k in keys)))
        await relay.start()
        async with asyncio.timeout(20):
            await asyncio.gather(*producers)
        await receiver.wait_until(lambda: all(len(receiver.delivered(k)) == PER_KEY for k in keys), timeout=20)
        assert await relay.stop() == 0
    finally:
        for task in producers:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*producers)
        await relay.kill()
        await receiver.stop()

    assert len(acked) == KEYS * PER_KEY
    # Mid-stream: every kill came while deliveries were under way, the first while events were still coming in.
    assert all(0 < delivered < acked for acked, delivered in at_kills) and at_kills[0][0] < KEYS * PER_KEY, at_kills
    assert receiver.violations == []
    assert {k: receiver.delivered(k) for k in keys} == {k: list(range(PER_KEY)) for k in keys}
    with contextlib.closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall())
    assert statuses == {"succeeded": KEYS * PER_KEY}
    duplicates = len(receiver.arrivals) - KEYS * PER_KEY
    print(f"\nSIGKILLs after {at_kills} acknowledged events; {len(receiver.arrivals)} requests, {duplicates} repeats")
