"""The destination policy at connect time, with a stub resolver: no traffic ever leaves 127.0.0.1.

Refused destinations open no socket: the stub's refused answers point at addresses nothing here listens on,
and the receiver proves nothing arrived.
"""

from __future__ import annotations

import socket
from pathlib import Path

from aiohttp.abc import AbstractResolver, ResolveResult

from relay.config import Config
from relay.models import OAuth2Auth, Secret
from tests.support.receiver import Receiver
from tests.support.relay_harness import RunningRelay, make_config, running_relay, webhook


class StubResolver(AbstractResolver):
    """Answers from a table; records every lookup."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        return [
            ResolveResult(hostname=host, host=ip, port=port, family=socket.AF_INET, proto=0, flags=0)
            for ip in self.table[host]
        ]

    async def close(self) -> None:
        pass


async def _first_attempt(relay: RunningRelay, event_id: str) -> dict[str, object]:
    await relay.wait_until(lambda: relay.sql("SELECT MIN(attempt_count) FROM deliveries")[0][0] == 1)
    deliveries = (await relay.event(event_id))["deliveries"]
    return {d["webhook_id"]: d["attempts"][0] for d in deliveries}


def _strict(tmp_path: Path, hooks: list[object]) -> Config:
    return make_config(tmp_path, hooks, allow_private_networks=False, retry_schedule=(0.0, 3600.0))  # type: ignore[arg-type]


async def test_hostnames_resolving_into_refused_ranges_are_blocked(tmp_path: Path, receiver: Receiver) -> None:
    port = receiver.port
    resolver = StubResolver(
        {
            "loopback.example": ["127.0.0.1"],
            "mixed.example": ["127.0.0.1", "10.0.0.7"],
            "cgnat.example": ["100.64.1.1"],
            "mapped.example": ["::ffff:127.0.0.1"],
        }
    )
    hooks = [webhook(f"http://{name}:{port}/hook", id=name.split(".")[0]) for name in resolver.table]
    config = _strict(tmp_path, hooks)
    async with running_relay(tmp_path, [], config=config, resolver=resolver) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        attempts = await _first_attempt(relay, answer["data"]["id"])
    assert {k: a["error"] for k, a in attempts.items()} == {
        "loopback": "blocked_destination",
        "mixed": "blocked_destination",
        "cgnat": "blocked_destination",
        "mapped": "blocked_destination",
    }
    assert "refused range" in str(attempts["mixed"]["error_detail"])
    assert receiver.requests == []


async def test_ip_literals_in_odd_forms_are_blocked_at_delivery(tmp_path: Path, receiver: Receiver) -> None:
    # Declared while allowed, delivered while refused: the check happens again at connect time.
    port = receiver.port
    hosts = {"decimal": "2130706433", "short": "127.1", "hex": "0x7f.0.0.1", "v6mapped": "[::ffff:127.0.0.1]"}
    hooks = [webhook(f"http://{host}:{port}/hook", id=name) for name, host in hosts.items()]
    config = _strict(tmp_path, hooks)
    async with running_relay(tmp_path, [], config=config) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        attempts = await _first_attempt(relay, answer["data"]["id"])
    assert {a["error"] for a in attempts.values()} == {"blocked_destination"}
    assert receiver.requests == []


async def test_http_is_refused_at_delivery_without_allow_http(tmp_path: Path, receiver: Receiver) -> None:
    config = make_config(tmp_path, [webhook(receiver.url())], allow_http=False, retry_schedule=(0.0, 3600.0))
    async with running_relay(tmp_path, [], config=config) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        attempts = await _first_attempt(relay, answer["data"]["id"])
    assert attempts["hook"]["error"] == "blocked_destination"
    assert receiver.requests == []


async def test_allowed_private_networks_still_use_the_resolver(tmp_path: Path, receiver: Receiver) -> None:
    resolver = StubResolver({"hooks.example": ["127.0.0.1"]})
    config = make_config(tmp_path, [webhook(f"http://hooks.example:{receiver.port}/hook")])
    async with running_relay(tmp_path, [], config=config, resolver=resolver) as relay:
        await relay.post({"type": "t", "data": {}})
        [request] = await receiver.wait_for(1)
    assert request.headers["host"] == f"hooks.example:{receiver.port}"
    assert resolver.lookups == ["hooks.example"]


async def test_the_token_endpoint_goes_through_the_same_policy(tmp_path: Path, receiver: Receiver) -> None:
    resolver = StubResolver({"auth.example": ["192.168.1.10"], "hooks.example": ["127.0.0.1"]})
    auth = OAuth2Auth("client_credentials", "http://auth.example/token", "relay", Secret("s"))
    hook = webhook(f"http://hooks.example:{receiver.port}/hook", auth=auth)
    config = _strict(tmp_path, [hook])
    async with running_relay(tmp_path, [], config=config, resolver=resolver) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        attempts = await _first_attempt(relay, answer["data"]["id"])
    assert attempts["hook"]["error"] == "blocked_destination"
    assert resolver.lookups == ["auth.example"]
    assert receiver.requests == []
