"""Raw HTTP/1.1 bytes for tests that go below aiohttp's client: requests its parser refuses, and the exchange."""

from __future__ import annotations

import asyncio

import orjson


def raw_request(head: bytes, body: bytes) -> bytes:
    """``head`` (request line and headers, each ending CRLF) with a Content-Length and ``body``."""
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def unparsable_requests(key: bytes, marker: bytes) -> dict[str, bytes]:
    """Requests aiohttp cannot parse, each holding a valid API key and an event body carrying ``marker``; its
    parser quotes such bytes in its error messages, so none of them may reach a log line or an answer."""
    body = orjson.dumps({"type": "consent.created", "data": {"note": marker.decode()}})
    good = raw_request(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
        + key
        + b"\r\n",
        body,
    )
    return {
        "bare LF line endings": good.replace(b"\r\n", b"\n"),
        "a space before the colon": good.replace(b"Authorization:", b"Authorization :"),
        "a header line over the limit": good.replace(b"Host: x\r\n", b"Host: x\r\nX-Long: " + key * 600 + b"\r\n"),
        "garbage pipelined after a good request": good + b"GARBAGE " + key + b" " + marker + b"\x01\r\n\r\n",
        "the key as the method": b"Bearer" + key + b" /v1/events HTTP/1.1\r\nHost: x\r\n\r\n",
        "a control byte in a header value": good.replace(b"Host: x", b"Host: x\x01" + key),
    }


async def exchange(url: str, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to ``http://host:port`` on a connection of their own; all that is answered until it closes."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
