"""``POST /v1/events`` is answered by the listener itself (``DIRECT_ROUTES``), without the router and aiohttp's
middleware chain. It must answer exactly as the routed handler does, the same app served by a plain aiohttp server."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from relay.api import build_app
from relay.listeners import DIRECT_ROUTES
from tests.support.relay_harness import API_KEY, make_config, running_relay

JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}

CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("one event", b'{"type": "consent.created", "data": {"n": 1}}', {**AUTH, **JSON}),
    ("a batch", b'[{"type": "a", "data": {}}, {"type": "b", "data": []}]', {**AUTH, **JSON}),
    ("no key", b'{"type": "a", "data": {}}', JSON),
    ("a wrong key", b'{"type": "a", "data": {}}', {"Authorization": "Bearer nope", **JSON}),
    ("the key in X-API-Key", b'{"type": "a", "data": {}}', {"X-API-Key": API_KEY, **JSON}),
    ("not JSON", b"{nope", {**AUTH, **JSON}),
    ("a wrong content type", b'{"type": "a", "data": {}}', {**AUTH, "Content-Type": "text/plain"}),
    ("an invalid event", b'{"type": "", "data": 1, "extra": true}', {**AUTH, **JSON}),
    (
        "a duplicate id in a batch",
        b'[{"id": "x", "type": "a", "data": {}}, {"id": "x", "type": "a", "data": {}}]',
        {**AUTH, **JSON},
    ),
    ("an empty batch", b"[]", {**AUTH, **JSON}),
    ("gzip", gzip.compress(b'{"type": "a", "data": {}}'), {**AUTH, **JSON, "Content-Encoding": "gzip"}),
]


def _comparable(status: int, body: dict[str, Any]) -> tuple[int, Any]:
    """The answer without what differs between two ingests of the same body (the ids relay made up)."""
    data = body.get("data")
    if isinstance(data, dict):
        data = {**data, "id": "-"}
    elif isinstance(data, list):
        data = [{**item, "id": "-"} for item in data]
    return status, {**body, "data": data} if "data" in body else body


async def test_the_app_lists_post_events_as_a_direct_route(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        app = build_app(relay.daemon.services, with_health=False)
        assert list(app[DIRECT_ROUTES]) == [("POST", "/v1/events")]


@pytest.mark.parametrize(("case", "body", "headers"), CASES, ids=[case for case, _, _ in CASES])
async def test_direct_and_routed_answers_are_the_same(
    tmp_path: Path, case: str, body: bytes, headers: dict[str, str]
) -> None:
    async with running_relay(tmp_path, []) as relay:
        routed = TestServer(build_app(relay.daemon.services, with_health=False), host="127.0.0.1")
        await routed.start_server()
        try:
            answers = []
            for base in (relay.url, str(routed.make_url(""))):
                async with relay.http.post(f"{base}/v1/events", data=body, headers=headers) as response:
                    answers.append(_comparable(response.status, orjson.loads(await response.read())))
                    assert response.content_type == "application/json"
        finally:
            await routed.close()
        assert answers[0] == answers[1], case


async def test_other_methods_and_paths_still_go_through_the_router(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        async with relay.http.put(f"{relay.url}/v1/events", data=b"{}", headers={**AUTH, **JSON}) as response:
            assert response.status == 405
            assert (await response.json())["error"]["code"] == "method_not_allowed"
        assert (await relay.post({"type": "a", "data": {}}))[0] == 202
        async with relay.http.post(
            f"{relay.url}/v1/events?x=1", data=b'{"type": "a", "data": {}}', headers={**AUTH, **JSON}
        ) as response:
            assert response.status == 202  # a query string does not change the route


async def test_other_spellings_of_the_path_go_through_the_router_and_still_need_the_key(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        url = URL(f"{relay.url}/%761/%65vents", encoded=True)  # "/v1/events" to the router
        async with relay.http.post(url, data=b'{"type": "a", "data": {}}', headers=JSON) as response:
            assert response.status == 401
        async with relay.http.post(url, data=b'{"type": "a", "data": {}}', headers={**AUTH, **JSON}) as response:
            assert response.status == 202


@pytest.mark.parametrize("shape", ["chunked", "gzip"])
async def test_a_body_over_the_cap_that_came_whole_with_its_headers_is_refused(tmp_path: Path, shape: str) -> None:
    """No Content-Length to refuse it by (chunked), or one that is under the cap while the decoded body is not
    (gzip): the body read ahead is held to ``max_body_size`` all the same."""
    config = make_config(tmp_path, [])
    config = replace(config, server=replace(config.server, max_body_size=1024))
    event = b'{"type": "a", "data": {"s": "' + b"x" * 2000 + b'"}}'
    head = f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
    head += "Content-Type: application/json\r\nConnection: close\r\n"
    if shape == "chunked":
        raw = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + f"{len(event):x}\r\n".encode()
        raw += event + b"\r\n0\r\n\r\n"
    else:
        packed = gzip.compress(event)
        assert len(packed) < 1024
        raw = (head + f"Content-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n\r\n").encode() + packed
    async with running_relay(tmp_path, [], config=config) as relay:
        host, port = relay.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(raw)  # one write: the body is in before the handler runs
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"payload_too_large"' in answer
        assert relay.sql("SELECT COUNT(*) FROM events") == [(0,)]
