"""Load generators, each run as a process of its own: ``python -m tests.bench.loadgen MODE ...``.

Every mode prints one line ``BENCH_RESULT {json}`` on stdout when done.

- ``http``: the fallback for ``wrk`` — ``--connections`` keep-alive connections POST the same body in a loop
  for ``--duration`` seconds.
- ``batches``: ingest ``--count`` bench events into relay, ``--batch`` events a request, ``--concurrency``
  requests at a time; with ``--keys N``, event i carries the ordering key ``k{i % N}`` (the keys in turn).
- ``deliver``: the end-to-end baseline — a bare aiohttp client POSTs ``--count`` webhook requests (the same
  envelope bodies and headers relay would send, Standard Webhooks signature included) to the receiver,
  ``--concurrency`` at a time.
- ``paced``: single events at a steady ``--rate`` for ``--duration`` seconds; each event's ``data.sent`` is
  stamped with ``time.time()`` just before its request is sent.

The orchestrator side (``run_http_load``) runs ``wrk`` when it is on PATH, else the ``http`` mode.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import re
import shutil
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests import bench

RESULT_MARK = "BENCH_RESULT "
API_KEY = "bench-key"
EVENT_TYPE = "consent.created"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
_PADDING = "x" * 96


def bench_event(i: int) -> dict[str, Any]:
    """The i-th event every throughput scenario ingests (about 200 bytes of data)."""
    return {
        "type": EVENT_TYPE,
        "data": {"user": f"u_{i}", "purpose": "marketing", "granted": True, "seq": i, "note": _PADDING},
    }


def batch_body(start: int, size: int, keys: int = 0) -> bytes:
    """Events ``start`` to ``start + size``; with ``keys``, event i carries the ordering key ``k{i % keys}``."""
    if keys:
        return orjson.dumps([{**bench_event(i), "ordering_key": f"k{i % keys}"} for i in range(start, start + size)])
    return orjson.dumps([bench_event(i) for i in range(start, start + size)])


def ingest_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_MARK + orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


def _session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


# -- http: the wrk fallback ------------------------------------------------------------------------------


async def http_load(url: str, bodies: list[bytes], headers: dict[str, str], connections: int, duration: float) -> None:
    """POST ``bodies`` in turn (each connection starting at its own place) until ``duration`` is over."""
    statuses: Counter[int] = Counter()
    errors = 0
    latencies: list[float] = []
    async with _session(connections) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def worker(turn: int) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                turn += 1
                began = time.perf_counter()
                try:
                    async with session.post(url, data=bodies[turn % len(bodies)], headers=headers) as response:
                        await response.read()
                        statuses[response.status] += 1
                        latencies.append(time.perf_counter() - began)
                except (aiohttp.ClientError, OSError, TimeoutError):
                    errors += 1

        await asyncio.gather(*(worker(n) for n in range(connections)))
        elapsed = time.perf_counter() - start
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    latencies.sort()
    _emit(
        {
            "tool": "aiohttp",
            "requests": sum(statuses.values()),
            "ok": ok,
            "non_2xx": sum(statuses.values()) - ok,
            "errors": errors,
            "duration": elapsed,
            "rps": ok / elapsed if elapsed else 0.0,
            "p50_ms": _pct(latencies, 0.50) * 1000,
            "p99_ms": _pct(latencies, 0.99) * 1000,
        }
    )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


# -- batches: bulk ingest into relay ---------------------------------------------------------------------


async def batches(url: str, count: int, batch: int, concurrency: int, keys: int) -> None:
    starts = list(range(0, count, batch))
    bodies = [batch_body(s, min(batch, count - s), keys) for s in starts]
    headers = ingest_headers()
    accepted = 0
    failures: list[str] = []
    queue = list(reversed(bodies))
    async with _session(concurrency) as session:
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal accepted
            while queue:
                body = queue.pop()
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status == 202:
                        accepted += len(orjson.loads(payload)["data"])
                    else:
                        failures.append(f"HTTP {response.status}: {payload[:200]!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    _emit({"accepted": accepted, "failures": failures[:5], "failed": len(failures), "duration": elapsed})


# -- deliver: the end-to-end baseline --------------------------------------------------------------------


def _ulid_like(i: int) -> str:
    return f"{i:026d}"


def _standard_signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


async def deliver(urls: list[str], count: int, concurrency: int) -> None:
    secret = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    next_index = 0
    ok = 0
    failures = 0
    async with _session(concurrency) as session:
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal next_index, ok, failures
            while next_index < count:
                i = next_index
                next_index += 1
                event = bench_event(i // len(urls))
                event_id = f"evt_{_ulid_like(i // len(urls))}"
                # Rendered per request, as relay renders per event: the same bytes relay puts on the wire.
                body = b"".join(
                    (
                        b'{"id":',
                        orjson.dumps(event_id),
                        b',"type":',
                        orjson.dumps(event["type"]),
                        b',"created_at":',
                        orjson.dumps(created_at),
                        b',"data":',
                        orjson.dumps(event["data"]),
                        b"}",
                    )
                )
                now = int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "relay-bench-baseline",
                    "X-Event-ID": event_id,
                    "X-Event-Type": event["type"],
                    "X-Delivery-Attempt": "1",
                    "webhook-id": event_id,
                    "webhook-timestamp": str(now),
                    "webhook-signature": _standard_signature(secret, event_id, now, body),
                }
                try:
                    async with session.post(urls[i % len(urls)], data=body, headers=headers) as response:
                        await response.read()
                        if 200 <= response.status < 300:
                            ok += 1
                        else:
                            failures += 1
                except (aiohttp.ClientError, OSError, TimeoutError):
                    failures += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    _emit({"ok": ok, "failed": failures, "duration": elapsed, "rps": ok / elapsed if elapsed else 0.0})


# -- paced: steady single-event ingest for latency -------------------------------------------------------


async def paced(url: str, rate: float, duration: float, connections: int, path_tag: str) -> None:
    total = int(rate * duration)
    headers = ingest_headers()
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    accepted = 0
    failures: list[str] = []
    lags: list[float] = []
    async with _session(connections) as session:

        async def worker() -> None:
            nonlocal accepted
            while (i := await queue.get()) is not None:
                body = orjson.dumps({"type": EVENT_TYPE, "data": {"sent": time.time(), "seq": i, "tag": path_tag}})
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        payload = await response.read()
                        if 200 <= response.status < 300:  # relay answers 202, the direct baseline 200
                            accepted += 1
                        else:
                            failures.append(f"HTTP {response.status}: {payload[:200]!r}")
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    failures.append(repr(exc))

        workers = [asyncio.create_task(worker()) for _ in range(connections)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while sent < total:
            now = loop.time()
            due = min(total, int((now - start) * rate) + 1)
            while sent < due:
                lags.append(max(0.0, now - (start + sent / rate)))
                queue.put_nowait(sent)
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        elapsed = loop.time() - start
    lags.sort()
    _emit(
        {
            "sent": sent,
            "accepted": accepted,
            "failed": len(failures),
            "failures": failures[:5],
            "duration": elapsed,
            "rate": accepted / elapsed if elapsed else 0.0,
            "pacing_lag_p99_ms": _pct(lags, 0.99) * 1000,
        }
    )


# -- the orchestrator's side -----------------------------------------------------------------------------

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local f = assert(io.open("{body_path}", "rb"))
wrk.body = f:read("*a")
f:close()
-- Several bodies (one a line, given as a list): each thread's requests go through them in turn.
local bodies = {{}}
if {several} then
  for line in wrk.body:gmatch("[^\\n]+") do bodies[#bodies + 1] = line end
end
local turn = 0
if #bodies > 0 then
  request = function()
    turn = turn % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[turn])
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_path() -> str | None:
    """wrk when on PATH, unless ``BENCH_LOADGEN=aiohttp`` asks for the fallback."""
    return None if os.environ.get("BENCH_LOADGEN") == "aiohttp" else shutil.which("wrk")


def parse_result(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = orjson.loads(line[len(RESULT_MARK) :])
            return result
    raise RuntimeError(f"no result line in the load generator's output:\n{output[-3000:]}")


async def run_process(args: list[str], timeout: float) -> str:
    """Run a load generator to completion (killed on timeout or cancellation); its stdout+stderr."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ}
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])}… exited {proc.returncode}:\n{text[-3000:]}")
    return text


def loadgen_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.bench.loadgen", *args]


async def run_http_load(
    url: str, body: bytes | list[bytes], *, connections: int, duration: float, workdir: Path, threads: int = 2
) -> dict[str, Any]:
    """POST ``body`` (or each of a list of one-line bodies, in turn) over ``connections`` keep-alive connections for
    ``duration`` s: wrk, else aiohttp."""
    several = isinstance(body, list)
    body_path = workdir / "load-body.json"
    body_path.write_bytes(b"\n".join(body) if isinstance(body, list) else body)
    wrk = wrk_path()
    if wrk is None:
        args = ["http", "--url", url, "--body-file", str(body_path), "--connections", str(connections)]
        args += ["--several"] if several else []
        out = await run_process(loadgen_command(*args, "--duration", str(duration)), timeout=duration + 60)
        return parse_result(out)
    script = workdir / "post.lua"
    script.write_text(
        _WRK_SCRIPT.format(key=API_KEY, body_path=body_path, mark=RESULT_MARK, several=str(several).lower())
    )
    threads = min(threads, connections)
    args = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = await run_process(args, timeout=duration + 60)
    raw = parse_result(out)
    elapsed = raw["duration_us"] / 1e6
    errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    ok = raw["requests"] - raw["status_errors"] - errors
    version = re.search(r"wrk \S+", out)
    return {
        "tool": version.group(0) if version else "wrk",
        "requests": raw["requests"],
        "ok": ok,
        "non_2xx": raw["status_errors"],
        "errors": errors,
        "duration": elapsed,
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.loadgen")
    sub = parser.add_subparsers(dest="mode", required=True)
    http = sub.add_parser("http")
    http.add_argument("--url", required=True)
    http.add_argument("--body-file", required=True)
    http.add_argument("--several", action="store_true", help="the file holds one body a line, sent in turn")
    http.add_argument("--connections", type=int, default=64)
    http.add_argument("--duration", type=float, default=10.0)
    bulk = sub.add_parser("batches")
    bulk.add_argument("--url", required=True)
    bulk.add_argument("--count", type=int, required=True)
    bulk.add_argument("--batch", type=int, default=1000)
    bulk.add_argument("--concurrency", type=int, default=4)
    bulk.add_argument("--keys", type=int, default=0, help="event i carries the ordering key k{i %% N}")
    dlv = sub.add_parser("deliver")
    dlv.add_argument("--url", action="append", required=True)
    dlv.add_argument("--count", type=int, required=True)
    dlv.add_argument("--concurrency", type=int, default=256)
    pace = sub.add_parser("paced")
    pace.add_argument("--url", required=True)
    pace.add_argument("--rate", type=float, default=1000.0)
    pace.add_argument("--duration", type=float, default=10.0)
    pace.add_argument("--connections", type=int, default=32)
    pace.add_argument("--tag", default="lat")
    args = parser.parse_args(argv)
    if args.mode == "http":
        raw = Path(args.body_file).read_bytes()
        bodies = raw.split(b"\n") if args.several else [raw]
        bench.run(http_load(args.url, bodies, ingest_headers(), args.connections, args.duration))
    elif args.mode == "batches":
        bench.run(batches(args.url, args.count, args.batch, args.concurrency, args.keys))
    elif args.mode == "deliver":
        bench.run(deliver(args.url, args.count, args.concurrency))
    else:
        bench.run(paced(args.url, args.rate, args.duration, args.connections, args.tag))


if __name__ == "__main__":
    main()
