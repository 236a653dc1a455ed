"""``read_capped``: how much of a remote answer relay reads, against real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from relay.outbound import read_capped
from tests.support.receiver import serve_locally
from tests.support.relay_harness import poll_until, running_relay, webhook

LIMIT = 1000


@dataclass
class Answers:
    """``GET /{size}`` answers ``size`` bytes in 64 KiB writes; records each request's client port and, by size,
    whether the whole answer could be written."""

    url: str = ""
    ports: list[int] = field(default_factory=list)
    finished: dict[int, bool] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        self.ports.append(peer[1] if peer else -1)
        size = int(request.match_info["size"])
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        try:
            sent = 0
            while sent < size:
                chunk = b"x" * min(64 * 1024, size - sent)
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            self.finished[size] = True
        except ConnectionError:
            self.finished[size] = False
        return response


@pytest.fixture
async def answers() -> AsyncIterator[Answers]:
    answers = Answers()
    app = web.Application()
    app.router.add_get("/{size}", answers.handle)
    runner, port = await serve_locally(app)
    answers.url = f"http://127.0.0.1:{port}"
    try:
        yield answers
    finally:
        await runner.cleanup()


async def _read(session: aiohttp.ClientSession, url: str, *, drain: int = 0) -> tuple[bytes, bool]:
    async with session.get(url) as response:
        return await read_capped(response, LIMIT, drain=drain)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, (0, False)), (LIMIT - 1, (LIMIT - 1, False)), (LIMIT, (LIMIT, False)), (LIMIT + 1, (LIMIT, True))],
    ids=["empty", "under", "exactly", "one-over"],
)
async def test_at_most_the_limit_is_returned_and_more_is_reported(
    answers: Answers, size: int, expected: tuple[int, bool]
) -> None:
    async with aiohttp.ClientSession() as session:
        body, more = await _read(session, f"{answers.url}/{size}")
    assert (len(body), more) == expected


async def test_a_slightly_longer_answer_is_drained_and_its_connection_reused(answers: Answers) -> None:
    async with aiohttp.ClientSession() as session:
        assert (await _read(session, f"{answers.url}/{LIMIT + 500}", drain=1000))[1] is True
        await _read(session, f"{answers.url}/10")
    assert answers.ports[0] == answers.ports[1]
    assert answers.finished == {LIMIT + 500: True, 10: True}


async def test_a_much_longer_answer_closes_its_connection_unread(answers: Answers) -> None:
    size = 32 * 1024 * 1024
    async with aiohttp.ClientSession() as session:
        body, more = await _read(session, f"{answers.url}/{size}", drain=64 * 1024)
        await _read(session, f"{answers.url}/10")
    assert (len(body), more) == (LIMIT, True)
    assert answers.ports[0] != answers.ports[1]
    await poll_until(lambda: size in answers.finished)
    assert answers.finished[size] is False


async def test_a_delivery_answer_arriving_in_pieces_still_fills_the_1_kib_prefix(tmp_path: Path) -> None:
    """``content.read(n)`` returns what has arrived so far; the prefix must not stop at the first piece."""

    async def in_pieces(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"a" * 10)
        await asyncio.sleep(0.05)
        await response.write(b"b" * 3000)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/hook", in_pieces)
    runner, port = await serve_locally(app)
    try:
        async with running_relay(tmp_path, [webhook(f"http://127.0.0.1:{port}/hook")]) as relay:
            _, answer = await relay.post({"type": "t", "data": {}})
            await relay.wait_until(lambda: relay.sql("SELECT status FROM deliveries") == [("succeeded",)])
            [delivery] = (await relay.event(answer["data"]["id"]))["deliveries"]
    finally:
        await runner.cleanup()
    assert delivery["attempts"][0]["response_body"] == "a" * 10 + "b" * 1014
