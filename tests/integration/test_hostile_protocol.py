"""Hostile HTTP below the handlers: requests aiohttp cannot parse, header bytes that are not UTF-8, unknown
``Expect`` and ``Content-Encoding`` values. Each gets a 4xx in relay's JSON envelope, and no log line or answer
carries the bytes the client sent (an API key or an event body would otherwise be logged verbatim)."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from tests.support.raw_http import exchange, raw_request, unparsable_requests
from tests.support.relay_harness import API_KEY, RunningRelay, running_relay

MARKER = b"body-marker-do-not-log"
BODY = orjson.dumps({"type": "consent.created", "data": {"note": MARKER.decode()}})
KEY = API_KEY.encode()


def _request(head: bytes, body: bytes = BODY) -> bytes:
    return raw_request(head, body)


UNPARSABLE = unparsable_requests(KEY, MARKER)


async def _exchange(relay: RunningRelay, raw: bytes) -> bytes:
    return await exchange(relay.url, raw)


def _last_answer(answer: bytes) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the last response on the connection."""
    last = answer[answer.rindex(b"HTTP/1.") :]
    head, _, body = last.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)


@pytest.mark.parametrize("raw", UNPARSABLE.values(), ids=UNPARSABLE.keys())
async def test_unparsable_requests_are_answered_and_logged_without_their_bytes(tmp_path: Path, raw: bytes) -> None:
    async with running_relay(tmp_path, []) as relay:
        with capture_logs() as logs:
            answer = await _exchange(relay, raw)
            await asyncio.sleep(0.05)  # the protocol logs after it has written the answer
    status, body = _last_answer(answer)
    assert status == 400 and body["success"] is False
    assert body["error"]["code"] == "bad_request"  # type: ignore[index]
    refused = [entry for entry in logs if entry["event"] == "bad_request"]
    assert refused and all(entry["peer"] == "127.0.0.1" and entry["reason"] for entry in refused)
    for text in (repr(logs).encode(), answer[answer.index(b"\r\n\r\n") :]):
        assert KEY not in text and MARKER not in text


@pytest.mark.parametrize("header", ["Authorization: Bearer ", "Authorization: ", "X-API-Key: "])
@pytest.mark.parametrize("value", [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", KEY + b"\xff"])
async def test_a_key_that_is_not_utf8_is_refused_with_401(tmp_path: Path, header: str, value: bytes) -> None:
    raw = _request(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + header.encode()
        + value
        + b"\r\n"
    )
    async with running_relay(tmp_path, []) as relay:
        with capture_logs() as logs:
            status, body = _last_answer(await _exchange(relay, raw))
    assert (status, body["error"]["code"]) == (401, "unauthorized")  # type: ignore[index]
    assert not [entry for entry in logs if entry["log_level"] == "error"]


@pytest.mark.parametrize(
    "header", ["Content-Type", "Content-Encoding", "Expect", "Origin", "Cookie", "Accept", "X-Forwarded-For", "Host"]
)
async def test_other_headers_that_are_not_utf8_never_get_a_5xx(tmp_path: Path, header: str) -> None:
    head = b"POST /v1/events HTTP/1.1\r\nConnection: close\r\nAuthorization: Bearer " + KEY + b"\r\n"
    if header != "Host":
        head += b"Host: x\r\n"
    if header != "Content-Type":
        head += b"Content-Type: application/json\r\n"
    raw = _request(head + header.encode() + b": \xff\xfe\x80\r\n")
    async with running_relay(tmp_path, []) as relay:
        with capture_logs() as logs:
            status, body = _last_answer(await _exchange(relay, raw))
        assert status < 500 and body["success"] is (status == 202)
        assert not [entry for entry in logs if entry["log_level"] == "error"]
        assert (await relay.post({"type": "after", "data": {}}))[0] == 202


async def test_an_unknown_expect_gets_417_in_the_envelope(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        for path in (b"/v1/events", b"/v1/no-such-route"):
            raw = _request(
                b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 999-foo\r\n"
                b"Content-Type: application/json\r\nAuthorization: Bearer " + KEY + b"\r\n"
            )
            status, body = _last_answer(await _exchange(relay, raw))
            assert status == 417
            assert body["error"] == {  # type: ignore[comparison-overlap]
                "code": "expectation_failed",
                "message": "the only Expect this server meets is 100-continue",
                "details": [],
            }
        # 100-continue still works: the client waits for the interim answer before it sends the body.
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        async with relay.http.post(f"{relay.url}/v1/events", data=BODY, headers=headers, expect100=True) as response:
            assert response.status == 202


@pytest.mark.parametrize("encoding", ["xyz", "br", "zstd", "compress", "gzip, deflate", "identity;q=0"])
async def test_a_body_in_an_encoding_relay_cannot_decode_gets_415(tmp_path: Path, encoding: str) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, body = await relay.post(None, raw=BODY, headers={"Content-Encoding": encoding})
        assert status == 415
        assert body["error"]["code"] == "unsupported_media_type"
        assert body["error"]["message"] == "Content-Encoding must be one of: identity, gzip, deflate"
        assert relay.sql("SELECT count(*) FROM events") == [(0,)]


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzip.compress), ("GZIP", gzip.compress), ("deflate", zlib.compress), ("identity", bytes)],
)
async def test_bodies_in_supported_encodings_are_decoded(tmp_path: Path, encoding: str, encode: object) -> None:
    assert callable(encode)
    async with running_relay(tmp_path, []) as relay:
        status, body = await relay.post(None, raw=encode(BODY), headers={"Content-Encoding": encoding})
        assert status == 202, body
        stored = await relay.event(body["data"]["id"])
        assert stored["data"] == {"note": MARKER.decode()}


async def test_a_leap_second_in_created_at_is_accepted_normalized(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, body = await relay.post(
            [
                {"type": "t", "data": {}, "created_at": "2016-12-31T23:59:60Z"},
                {"type": "t", "data": {}, "created_at": "2016-12-31T15:59:60.25-08:00"},
            ]
        )
        assert status == 202, body
        created = [(await relay.event(item["id"]))["created_at"] for item in body["data"]]
        assert created == ["2016-12-31T23:59:59Z", "2016-12-31T23:59:59.250Z"]
        status, body = await relay.post({"type": "t", "data": {}, "created_at": "2016-12-31T12:59:60Z"})
        assert status == 400 and body["error"]["details"][0]["path"] == "created_at"
