"""The relay command end to end: a signed round trip, graceful stop, reload, startup reclaim."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook as StandardVerifier

from tests.support.process import RelayProcess, post_events, write_config
from tests.support.receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "serve-test-key"


def config_text(tmp_path: Path, url: str, extra: str = "", webhooks: str | None = None) -> str:
    hooks = (
        webhooks
        if webhooks is not None
        else f"""
[[webhooks]]
id = "main"
url = "{url}"
secret = "{SECRET}"
"""
    )
    return f"""
[server]
listen = "127.0.0.1:0"
api_keys = ["{KEY}"]
shutdown_timeout = "5s"

[storage]
path = "{tmp_path / "relay.db"}"

[delivery]
allow_http = true
allow_private_networks = true
retry_schedule = ["0s", "1h"]
{extra}
{hooks}
"""


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_each_event_loop_delivers(tmp_path: Path, receiver: Receiver, event_loop: str) -> None:
    pytest.importorskip(event_loop)
    text = config_text(tmp_path, receiver.url()).replace("[server]\n", f'[server]\nevent_loop = "{event_loop}"\n')
    relay = await RelayProcess(write_config(tmp_path / "relay.toml", text)).start()
    try:
        assert relay.events("relay_started")[0]["event_loop"] == event_loop
        events = [{"type": "consent.created", "data": {"n": n}} for n in range(20)]
        status, _ = await post_events(relay.url, KEY, events)
        assert status == 202
        received = await receiver.wait_for(20)
        verified = [StandardVerifier(SECRET).verify(r.body, dict(r.headers))["data"]["n"] for r in received]
        assert sorted(verified) == list(range(20))
    finally:
        assert await relay.stop() == 0


async def test_round_trip_and_sigterm_exits_zero(tmp_path: Path, receiver: Receiver) -> None:
    relay = await RelayProcess(write_config(tmp_path / "relay.toml", config_text(tmp_path, receiver.url()))).start()
    try:
        status, _ = await post_events(relay.url, KEY, {"type": "consent.created", "data": {"subject": "u1"}})
        assert status == 202
        [request] = await receiver.wait_for(1)
        assert StandardVerifier(SECRET).verify(request.body, dict(request.headers))["data"] == {"subject": "u1"}
        async with aiohttp.ClientSession() as http, http.get(f"{relay.health_url}/healthz") as response:
            assert response.status == 200
    finally:
        code = await relay.stop()
    assert code == 0
    assert relay.events("relay_stopped")
    assert (tmp_path / "relay.db").stat().st_mode & 0o777 == 0o600


async def test_sigterm_lets_attempts_in_flight_finish(tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay = 1.0
    relay = await RelayProcess(write_config(tmp_path / "relay.toml", config_text(tmp_path, receiver.url()))).start()
    status, _ = await post_events(relay.url, KEY, {"type": "t", "data": {}})
    assert status == 202
    await receiver.wait_for(1)  # the attempt is in flight, the receiver holds it for a second
    await relay.signal(signal.SIGTERM)
    assert await relay.wait() == 0
    rows = _sql(tmp_path, "SELECT status FROM deliveries")
    assert rows == [("succeeded",)]


async def test_sighup_adds_and_removes_webhooks(tmp_path: Path, receiver: Receiver) -> None:
    path = write_config(tmp_path / "relay.toml", config_text(tmp_path, receiver.url("/a")))
    relay = await RelayProcess(path).start()
    try:
        second = config_text(
            tmp_path,
            "",
            webhooks=f"""
[[webhooks]]
id = "second"
url = "{receiver.url("/b")}"
""",
        )
        path.write_text(second)
        await relay.signal(signal.SIGHUP)
        await _until(lambda: bool(relay.events("config_reloaded")))
        status, body = await post_events(relay.url, KEY, {"type": "t", "data": {}})
        assert body["data"] == {"id": body["data"]["id"], "deliveries": 1}  # type: ignore[index]
        await receiver.wait_for(1)
        assert [r.path for r in receiver.requests] == ["/b"]
        # An invalid file is logged and the running configuration kept.
        path.write_text("[server\n")
        await relay.signal(signal.SIGHUP)
        await _until(lambda: bool(relay.events("reload_failed")))
        status, _ = await post_events(relay.url, KEY, {"type": "t", "data": {}})
        assert status == 202
        await receiver.wait_for(2)
    finally:
        assert await relay.stop() == 0


async def test_deliveries_in_flight_at_a_crash_are_attempted_at_once_on_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.hang = True
    path = write_config(tmp_path / "relay.toml", config_text(tmp_path, receiver.url()))
    relay = await RelayProcess(path).start()
    await post_events(relay.url, KEY, {"type": "t", "data": {}, "id": "in-flight"})
    await receiver.wait_for(1)
    await relay.kill()
    assert _sql(tmp_path, "SELECT status FROM deliveries") == [("delivering",)]
    receiver.hang = False
    relay = await RelayProcess(path).start()
    try:
        await receiver.wait_for(2, timeout=5.0)  # not after a lease of minutes: at startup
        assert relay.events("relay_started")[0]["reclaimed"] == 1
    finally:
        assert await relay.stop() == 0


async def _until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _sql(tmp_path: Path, query: str) -> list[tuple[object, ...]]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / "relay.db")) as conn:
        return list(conn.execute(query))
