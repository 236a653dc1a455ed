"""Server hardening: slow clients are cut off, idle connections cannot starve ingest, unix sockets are 0660."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson

from relay.config import Listen
from tests.support.relay_harness import API_KEY, make_config, running_relay

EVENT = orjson.dumps({"type": "t", "data": {}})


def _hardened(tmp_path: Path, **server: object) -> object:
    config = make_config(tmp_path, [])
    return replace(config, server=replace(config.server, **server))


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _post_on_a_new_connection(url: str) -> int:
    """Ingest one event over a connection of its own, closed after; the answer's status."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        http.post(
            f"{url}/v1/events",
            data=EVENT,
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status


def _post_head(content_length: int, *, close: bool = False) -> bytes:
    """The head of a raw ingest request with a valid key, for tests that send the body by hand."""
    connection = "Connection: close\r\n" if close else ""
    return (
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{connection}Authorization: Bearer {API_KEY}\r\nContent-Length: {content_length}\r\n\r\n"
    ).encode()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Read until the server closes the connection; fail if it is still open after ``seconds``."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_a_client_trickling_headers_is_cut_off(tmp_path: Path) -> None:
    async with running_relay(tmp_path, [], config=_hardened(tmp_path, request_timeout=0.5)) as relay:  # type: ignore[arg-type]
        reader, writer = await _connect(relay.url)
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):
            await asyncio.sleep(0.1)
            writer.write(b"X-Slow: 1\r\n")
        assert await _closed_within(reader, 2.0) == b""
        writer.close()


async def test_a_silent_connection_is_closed(tmp_path: Path) -> None:
    async with running_relay(tmp_path, [], config=_hardened(tmp_path, request_timeout=0.3)) as relay:  # type: ignore[arg-type]
        reader, writer = await _connect(relay.url)
        assert await _closed_within(reader, 2.0) == b""
        writer.close()


async def test_a_keep_alive_connection_gets_a_fresh_deadline_after_each_request(tmp_path: Path) -> None:
    """The deadline timer is set lazily: a request answered late in the first period moves the cut-off along."""
    async with running_relay(tmp_path, [], config=_hardened(tmp_path, request_timeout=0.6)) as relay:  # type: ignore[arg-type]
        reader, writer = await _connect(relay.url)
        request = _post_head(len(EVENT)) + EVENT
        loop = asyncio.get_running_loop()
        for _ in range(3):  # each request comes 0.4 s after the last answer: never idle for 0.6 s
            await asyncio.sleep(0.4)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"HTTP/1.1 202")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        idle_from = loop.time()
        assert await _closed_within(reader, 2) == b""  # then idle: cut off one request_timeout later
        assert 0.3 <= loop.time() - idle_from <= 1.5
        writer.close()


async def test_a_body_that_follows_its_headers_within_the_deadline_is_read(tmp_path: Path) -> None:
    """The body read waits (under the deadline) when the body was not in yet as the headers were handled."""
    async with running_relay(tmp_path, [], config=_hardened(tmp_path, request_timeout=2.0)) as relay:  # type: ignore[arg-type]
        reader, writer = await _connect(relay.url)
        writer.write(_post_head(len(EVENT), close=True) + EVENT[:5])
        await asyncio.sleep(0.2)
        writer.write(EVENT[5:])
        answer = await _closed_within(reader, 5.0)
        assert answer.startswith(b"HTTP/1.1 202")
        writer.close()
        assert relay.sql("SELECT COUNT(*) FROM events") == [(1,)]


async def test_a_client_trickling_the_body_gets_408(tmp_path: Path) -> None:
    async with running_relay(tmp_path, [], config=_hardened(tmp_path, request_timeout=0.5)) as relay:  # type: ignore[arg-type]
        reader, writer = await _connect(relay.url)
        writer.write(_post_head(100) + b'{"type": ')
        answer = await _closed_within(reader, 2.0)
        assert answer.startswith(b"HTTP/1.1 408")
        assert b'"request_timeout"' in answer
        writer.close()
        assert relay.sql("SELECT COUNT(*) FROM events") == [(0,)]


async def test_idle_connections_at_the_cap_make_room_for_ingest(tmp_path: Path) -> None:
    config = _hardened(tmp_path, max_connections=5, request_timeout=30.0)
    async with running_relay(tmp_path, [], config=config) as relay:  # type: ignore[arg-type]
        idle = [await _connect(relay.url) for _ in range(5)]
        await asyncio.sleep(0.05)
        for attempt in range(3):  # the first finds the cap reached and evicts the longest-idle one
            assert await _post_on_a_new_connection(relay.url) == 202, attempt
        closed = 0
        for reader, writer in idle:
            try:
                if await asyncio.wait_for(reader.read(), 0.2) == b"":
                    closed += 1
            except TimeoutError:
                pass
            writer.close()
        assert closed == 1  # the later ones found room: each earlier request's connection had closed


async def test_unix_socket_listener_is_0660_and_serves_ingest(tmp_path: Path) -> None:
    path = tmp_path / "relay.sock"
    config = _hardened(tmp_path, listen=Listen(path=str(path)))
    async with running_relay(tmp_path, [], config=config, base_url="http://unix"):  # type: ignore[arg-type]
        assert path.stat().st_mode & 0o777 == 0o660
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as http,
            http.post(
                "http://relay/v1/events",
                data=EVENT,
                headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            ) as response,
        ):
            assert response.status == 202


async def test_connections_trickling_bodies_at_the_cap_make_room_for_ingest(tmp_path: Path) -> None:
    config = _hardened(tmp_path, max_connections=5, request_timeout=30.0)
    async with running_relay(tmp_path, [], config=config) as relay:  # type: ignore[arg-type]
        slow = []
        for _ in range(5):  # complete headers, then a body that never finishes
            reader, writer = await _connect(relay.url)
            writer.write(_post_head(1000) + b'{"type": ')
            await writer.drain()
            slow.append((reader, writer))
        await asyncio.sleep(0.1)
        assert await _post_on_a_new_connection(relay.url) == 202  # the oldest trickler made room
        first_reader, _ = slow[0]
        assert await asyncio.wait_for(first_reader.read(), 2.0) == b""
        for _, writer in slow:
            writer.close()


async def test_requests_aiohttp_cannot_parse_get_the_json_envelope(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        async with relay.http.get(f"{relay.url}/v1/events/{'x' * 9000}") as response:
            assert response.status == 400
            body = await response.json()
        assert body["success"] is False and body["error"]["code"] == "bad_request"
        reader, writer = await _connect(relay.url)
        writer.write(b"NOT-HTTP \x00\x01\r\n\r\n")
        answer = await _closed_within(reader, 2.0)
        writer.close()
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")) and b'"bad_request"' in answer
