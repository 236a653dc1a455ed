"""A relay running in-process on 127.0.0.1 with a real SQLite file, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver

from relay.clock import Clock, FakeClock
from relay.config import Config, DeliveryConfig, Listen, ServerConfig, StorageConfig
from relay.daemon import Daemon
from relay.models import Durability, Secret, Webhook

API_KEY = "test-key-0123456789"


def make_config(tmp_path: Path, webhooks: list[Webhook], **delivery: Any) -> Config:
    delivery.setdefault("allow_http", True)
    delivery.setdefault("allow_private_networks", True)
    delivery.setdefault("jitter", 0.0)
    return Config(
        server=ServerConfig(listen=Listen("127.0.0.1", 0), api_keys=(Secret(API_KEY),), shutdown_timeout=2.0),
        storage=StorageConfig(path=tmp_path / "relay.db", durability=Durability.FULL),
        delivery=DeliveryConfig(**delivery),
        webhooks=tuple(webhooks),
    )


async def poll_until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll an async or sync predicate on the real loop (not a fake clock) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@dataclass
class RunningRelay:
    daemon: Daemon
    url: str
    http: aiohttp.ClientSession
    clock: Clock
    db_path: Path
    posted: list[str] = field(default_factory=list)

    async def post(
        self, body: Any, *, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else orjson.dumps(body)
        sent = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", **(headers or {})}
        async with self.http.post(f"{self.url}/v1/events", data=data, headers=sent) as response:
            return response.status, orjson.loads(await response.read())

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            return response.status, orjson.loads(await response.read())

    async def event(self, event_id: str) -> dict[str, Any]:
        status, body = await self.get(f"/v1/events/{event_id}")
        assert status == 200, body
        result: dict[str, Any] = body["data"]
        return result

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0) -> None:
        await poll_until(predicate, timeout)

    async def statuses(self, event_id: str) -> list[str]:
        return [d["status"] for d in (await self.event(event_id))["deliveries"]]

    def advance(self, seconds: float) -> None:
        assert isinstance(self.clock, FakeClock), "advance() needs a relay started with a FakeClock"
        self.clock.advance(seconds)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db_path)) as conn:
            return list(conn.execute(query, params))


@contextlib.asynccontextmanager
async def running_relay(
    tmp_path: Path,
    webhooks: list[Webhook],
    *,
    clock: Clock | None = None,
    config: Config | None = None,
    resolver: AbstractResolver | None = None,
    base_url: str | None = None,
    **delivery: Any,
) -> AsyncIterator[RunningRelay]:
    config = config or make_config(tmp_path, webhooks, **delivery)
    daemon = Daemon(config, clock=clock, resolver=resolver)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = base_url or f"http://{daemon.bound[0]}"
            yield RunningRelay(daemon, url, http, daemon.clock, config.storage.path)
    finally:
        await daemon.shutdown()


def webhook(url: str, **fields: Any) -> Webhook:
    fields.setdefault("id", "hook")
    return replace(Webhook(id=fields.pop("id"), url=url), **fields)
