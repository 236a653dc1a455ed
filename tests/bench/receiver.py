"""The bench's servers, each run as a process of its own: ``python -m tests.bench.receiver MODE``.

``receive``: a bare webhook endpoint answering 200 to any POST. It counts requests per path and remembers the
first and last arrival; for paths under ``/lat`` it also records ``arrival - data.sent`` (seconds, both from
``time.time()`` on this machine). ``GET /_stats`` reports, ``POST /_reset`` starts over.

``ingest``: the ingest baseline, a bare aiohttp handler on ``POST /v1/events`` that only parses the JSON body
(orjson) and answers 202 with a small JSON envelope, as relay does.

Once listening, the process prints one JSON line ``{"event": "ready", "port": N}`` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter

import orjson
from aiohttp import web

from tests import bench

_ACCEPTED = orjson.dumps({"success": True, "data": {"id": "evt_baseline", "deliveries": 0}})


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.by_path: Counter[str] = Counter()
        self.first: float | None = None
        self.last: float | None = None
        self.latencies: list[float] = []
        self.bad_bodies = 0

    def snapshot(self, with_latencies: bool) -> dict[str, object]:
        return {
            "count": self.count,
            "by_path": dict(self.by_path),
            "first": self.first,
            "last": self.last,
            "latency_count": len(self.latencies),
            "latencies": self.latencies if with_latencies else None,
            "bad_bodies": self.bad_bodies,
        }


def receive_app() -> web.Application:
    stats = Stats()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        path = request.path
        stats.count += 1
        stats.by_path[path] += 1
        if stats.first is None:
            stats.first = now
        stats.last = now
        if path.startswith("/lat"):
            try:
                stats.latencies.append(now - float(orjson.loads(body)["data"]["sent"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                stats.bad_bodies += 1
        return web.Response(status=200)

    async def get_stats(request: web.Request) -> web.Response:
        snapshot = stats.snapshot(with_latencies=request.query.get("latencies") == "1")
        return web.Response(body=orjson.dumps(snapshot), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        stats.reset()
        return web.Response(status=204)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/_stats", get_stats)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/{tail:.*}", hook)
    return app


def ingest_app() -> web.Application:
    async def ingest(request: web.Request) -> web.Response:
        orjson.loads(await request.read())
        return web.Response(status=202, body=_ACCEPTED, content_type="application/json")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/events", ingest)
    return app


async def serve(mode: str, port: int) -> None:
    app = receive_app() if mode == "receive" else ingest_app()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        bound = int(runner.addresses[0][1])
        sys.stdout.write(orjson.dumps({"event": "ready", "mode": mode, "port": bound}).decode() + "\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.receiver")
    parser.add_argument("mode", choices=["receive", "ingest"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    bench.run(serve(args.mode, args.port))


if __name__ == "__main__":
    main()
