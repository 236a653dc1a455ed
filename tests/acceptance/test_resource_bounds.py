"""Resource bounds of the ``relay`` process, measured from the outside (/proc/PID).

- Memory: a large volume of events posted while the receiver is slow piles up in the outbox on disk, not in the
  process: its resident set grows by less than a fixed budget however much is posted (96 MiB here; 1 GiB in the
  soak).
- Connections: thousands of idle connections (2,000 here; 10,000 in the soak) are closed or refused at
  ``max_connections`` without starving ingest, which keeps answering 202 promptly while they are open; once they
  are gone the process holds no more descriptors than before.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support.process import RelayProcess, write_config
from tests.support.receiver import Receiver

KEY = "bounds-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
MiB = 1024 * 1024
WAVE = 50  # connections opened at once: well inside the listen backlog (100), so none waits for a SYN retry


def config(tmp_path: Path, receiver_url: str, *, extra_server: str = "") -> Path:
    return write_config(
        tmp_path / "relay.toml",
        f"""
[server]
listen = "127.0.0.1:0"
api_keys = ["{KEY}"]
shutdown_timeout = "1s"
{extra_server}

[storage]
path = "{tmp_path / "relay.db"}"
durability = "full"

[delivery]
timeout = "5s"
per_webhook_concurrency = 4
retry_schedule = ["0s", "1s"]
allow_http = true
allow_private_networks = true

[[webhooks]]
id = "slow"
url = "{receiver_url}"
""",
    )


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) in bytes; FDs is the number of open descriptors."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    found["FDs"] = len(os.listdir(f"/proc/{pid}/fd"))
    return found


async def post_volume(url: str, total: int, *, event_size: int = 8 * 1024, batch: int = 100) -> int:
    """Post ``total`` bytes of event payload in batches; every batch must be acknowledged. Returns bytes sent."""
    blob = "x" * event_size
    sent = 0
    async with aiohttp.ClientSession() as http:
        n = 0
        while sent < total:
            body = orjson.dumps([{"type": "bulk.posted", "data": {"n": n + i, "blob": blob}} for i in range(batch)])
            async with http.post(f"{url}/v1/events", data=body, headers=HEADERS) as response:
                assert response.status == 202, await response.text()
            n += batch
            sent += len(body)
    return sent


def store_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("relay.db*"))


async def check_memory_stays_bounded(tmp_path: Path, receiver: Receiver, total: int, budget: int) -> str:
    receiver.delay = 0.2  # slow: 4 in flight at 0.2 s each, far slower than ingest
    relay = await RelayProcess(config(tmp_path, receiver.url())).start()
    try:
        await post_volume(relay.url, 8 * MiB)  # warm up: caches, pools, first claims
        warm = proc_status(relay.pid)
        posted = await post_volume(relay.url, total)
        end = proc_status(relay.pid)
        backlog = sum(1 for _ in receiver.requests)
    finally:
        await relay.kill()
    on_disk = store_size(tmp_path)
    growth = end["VmRSS"] - warm["VmRSS"]
    report = (
        f"memory: posted {posted / MiB:.0f} MiB, store {on_disk / MiB:.0f} MiB on disk, {backlog} delivered so far; "
        f"RSS {warm['VmRSS'] / MiB:.0f} -> {end['VmRSS'] / MiB:.0f} MiB (peak {end['VmHWM'] / MiB:.0f} MiB)"
    )
    assert on_disk > posted / 2, f"the outbox is not on disk? {report}"
    assert growth < budget, f"RSS grew by {growth / MiB:.0f} MiB, over the {budget / MiB:.0f} MiB budget: {report}"
    return report


async def test_a_large_volume_through_a_slow_receiver_stays_on_disk(tmp_path: Path, receiver: Receiver) -> None:
    print("\n" + await check_memory_stays_bounded(tmp_path, receiver, total=96 * MiB, budget=32 * MiB))


@pytest.mark.soak
async def test_a_gigabyte_through_a_slow_receiver_stays_on_disk(tmp_path: Path, receiver: Receiver) -> None:
    print("\n" + await check_memory_stays_bounded(tmp_path, receiver, total=1024 * MiB, budget=32 * MiB))


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if wanted < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def open_idle(host: str, port: int, count: int) -> tuple[list[asyncio.StreamWriter], int]:
    """Open ``count`` connections that send nothing, in waves (the listen backlog is finite); refused ones are
    counted, not kept."""
    writers: list[asyncio.StreamWriter] = []
    refused = 0
    for start in range(0, count, WAVE):
        results = await asyncio.gather(
            *(asyncio.open_connection(host, port) for _ in range(min(WAVE, count - start))), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                refused += 1
            else:
                writers.append(result[1])
    return writers, refused


async def check_idle_connections(tmp_path: Path, receiver: Receiver, count: int) -> str:
    raise_fd_limit(count + 1000)
    relay = await RelayProcess(config(tmp_path, receiver.url())).start()
    host, port = relay.url.removeprefix("http://").split(":")
    writers: list[asyncio.StreamWriter] = []
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.get(f"{relay.url}/healthz") as response,
        ):
            assert response.status == 200
        await asyncio.sleep(0.1)
        baseline = proc_status(relay.pid)["FDs"]
        began = time.monotonic()
        writers, refused = await open_idle(host, int(port), count)
        opened = time.monotonic() - began
        await asyncio.sleep(0.2)  # connections evicted in the last accept wave are closed on the next loop turn
        during = proc_status(relay.pid)["FDs"]
        # Ingest while they are all open: each request on a fresh connection, each answered promptly.
        latencies = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for n in range(20):
                started = time.monotonic()
                async with http.post(
                    f"{relay.url}/v1/events", data=orjson.dumps({"type": "t", "data": {"n": n}}), headers=HEADERS
                ) as response:
                    assert response.status == 202, await response.text()
                latencies.append(time.monotonic() - started)
        await receiver.wait_for(20, timeout=10)  # and they are delivered
    finally:
        for writer in writers:
            writer.transport.abort()
    await asyncio.sleep(0.3)
    after = proc_status(relay.pid)["FDs"]
    assert await relay.stop() == 0
    report = (
        f"connections: {count} idle opened in {opened:.1f}s ({refused} refused), relay descriptors {baseline} -> "
        f"{during} -> {after}; ingest while open: worst {max(latencies) * 1000:.0f} ms over 20 requests"
    )
    assert during <= baseline + 1024 + 16, f"more connections held than max_connections: {report}"
    assert max(latencies) < 1.0, f"ingest starved: {report}"
    assert after <= baseline + 4, f"descriptors leaked: {report}"
    return report


async def test_thousands_of_idle_connections_do_not_starve_ingest(tmp_path: Path, receiver: Receiver) -> None:
    print("\n" + await check_idle_connections(tmp_path, receiver, 2000))


@pytest.mark.soak
async def test_ten_thousand_idle_connections_do_not_starve_ingest(tmp_path: Path, receiver: Receiver) -> None:
    print("\n" + await check_idle_connections(tmp_path, receiver, 10_000))
