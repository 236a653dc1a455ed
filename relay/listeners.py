"""Listening sockets with the server-side hardening aiohttp leaves to us.

aiohttp has no deadline for reading a request's headers, so a client that trickles bytes (slowloris) could
hold a connection forever, and it has no cap on open connections. ``GuardedProtocolFactory`` wraps the
runner's protocol factory:

- every connection must bring a request's headers within ``request_timeout`` of opening, or of the end of
  its previous request; the rest of the body is read under the same budget (``read_body``);
- at most ``max_connections`` are open; when a new one arrives at the cap, the connection idle the longest
  is closed to make room, else the one that has been trickling a request body the longest (so neither idle nor
  slow-body connections can starve ingest); only when every connection is being answered is the new one
  refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, cast

import structlog
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from relay.config import Listen
from relay.views import error_body

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (method, path) -> handler: requests the listener answers itself, without the router and aiohttp's middleware
# chain. The handler does what the app's middlewares would (relay.http.serve_api); an app lists its own here.
DIRECT_ROUTES = web.AppKey("direct_routes", dict[tuple[str, str], Handler])


class ConnectionGuard(asyncio.Protocol):
    """Forwards to aiohttp's protocol, with a deadline on idle or trickling connections."""

    def __init__(self, factory: GuardedProtocolFactory, inner: Any) -> None:
        self.factory = factory
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline_at = 0.0  # when the request being read must be in (kept while it is answered)
        self.expires_at = math.inf  # when the connection is cut if no request has come in; inf: disarmed
        self.busy = False

    # the deadline: one lazy timer per connection. Arming and disarming only move ``expires_at``; the timer,
    # when it fires early, sets itself again for the new time. Keep-alive requests then cost no timer work.

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self.deadline_at = self.expires_at = loop.time() + self.factory.request_timeout
        if self.timer is None:
            self.timer = loop.call_at(self.expires_at, self._check)

    def _disarm(self) -> None:
        self.expires_at = math.inf

    def _stop_timer(self) -> None:
        self._disarm()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        self.timer = None
        if self.expires_at == math.inf:
            return  # a request is being answered; the next _arm sets a timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self.expires_at:
            self.timer = loop.call_at(self.expires_at, self._check)
            return
        log.info("connection_timed_out", timeout=self.factory.request_timeout)
        if self.transport is not None:
            self.transport.abort()

    def request_started(self, *, reading: bool = True) -> float:
        """The headers are in: stop the clock; return how long the body may still take. ``reading``: the body
        is still on its way (it is not when it came with the headers, the common case)."""
        self._disarm()
        self.busy = True
        self.factory.idle.pop(self, None)
        if not reading:
            return 0.0
        self.factory.reading[self] = None
        return max(0.0, self.deadline_at - asyncio.get_running_loop().time())

    def body_received(self) -> None:
        """The whole request is in: from now on the connection is being answered and is not evicted."""
        self.factory.reading.pop(self, None)

    def request_finished(self) -> None:
        self.busy = False
        self.factory.reading.pop(self, None)
        if self.transport is not None and not self.transport.is_closing():
            self.factory.idle[self] = None
            self._arm()

    # asyncio.Protocol, forwarded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)
        if not self.factory.admit(self):
            self.transport.abort()
            return
        self.factory.idle[self] = None
        self._arm()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self.factory.release(self):
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedProtocolFactory:
    def __init__(
        self,
        server: web.Server,
        *,
        request_timeout: float,
        max_connections: int,
        direct: dict[tuple[str, str], Handler] | None = None,
    ) -> None:
        self.server = server
        self.direct = direct or {}
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.open: set[ConnectionGuard] = set()
        self.idle: OrderedDict[ConnectionGuard, None] = OrderedDict()  # waiting for a request, oldest first
        self.reading: OrderedDict[ConnectionGuard, None] = OrderedDict()  # reading a request body, oldest first

    def __call__(self) -> ConnectionGuard:
        # What web.Server.__call__ does, with our handler class (the runner is built with access_log=None).
        inner = _JsonErrorHandler(
            self.server,
            self.direct,
            loop=asyncio.get_running_loop(),
            access_log=None,  # None: no access log
        )
        return ConnectionGuard(self, inner)

    def admit(self, guard: ConnectionGuard) -> bool:
        if len(self.open) >= self.max_connections:
            victims = self.idle or self.reading
            if not victims:
                log.warning("connection_refused", open=len(self.open), max_connections=self.max_connections)
                return False
            oldest, _ = victims.popitem(last=False)
            if oldest.transport is not None:
                oldest.transport.abort()
            self.open.discard(oldest)
        self.open.add(guard)
        return True

    def release(self, guard: ConnectionGuard) -> bool:
        """Forget a closed connection; True if it had been admitted (and so handed to aiohttp)."""
        self.idle.pop(guard, None)
        self.reading.pop(guard, None)
        admitted = guard in self.open or guard.inner.transport is not None
        self.open.discard(guard)
        return admitted


class _JsonErrorHandler(RequestHandler):
    """aiohttp's protocol, except that requests it cannot parse (a request line over 8 KiB, broken headers) get
    relay's JSON error envelope too, and a client's mistake is not logged as a server error with a traceback.

    An ``Expect`` other than ``100-continue`` gets the envelope as well (a 417).
    """

    __slots__ = ()

    def __init__(self, manager: Any, direct: dict[tuple[str, str], Handler], **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        handler = self._request_handler
        assert handler is not None

        async def expecting(request: web.BaseRequest) -> web.StreamResponse:
            # aiohttp answers an unknown Expect outside the app's middlewares, in plain text that quotes it (and
            # fails with a 500 on bytes that are not UTF-8): refuse it here, before routing, in the envelope.
            expect = request.headers.get("Expect") if request.version >= (1, 1) else None
            if expect is not None and expect.lower() != "100-continue":
                return _error_response(417, "expectation_failed", "the only Expect this server meets is 100-continue")
            # The target as sent: "/v1/events" exactly, what every client sends, is answered here without decoding
            # the path; any other spelling of it (a query string, percent-escapes) goes through the router.
            route = direct.get((request.method, request.raw_path))
            if route is None:
                return await handler(request)
            if expect is not None:  # 100-continue: what the router's expect handler does for a routed request
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0
                await request.writer.drain()
            return await route(cast(web.Request, request))  # the runner's request factory makes web.Request

        self._request_handler = expecting

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        return _protocol_error_response(request, status, exc, message)


# What a request body may be encoded with: what aiohttp decodes without optional packages. Anything else is a 415,
# never read as if it were plain JSON.
SUPPORTED_ENCODINGS = ("identity", "gzip", "deflate")
UNSUPPORTED_ENCODING = f"Content-Encoding must be one of: {', '.join(SUPPORTED_ENCODINGS)}"

# The parser's reasons carry the raw bytes it choked on (keys, bodies): only these fixed words reach a log or an
# answer. Most specific class first.
_PARSER_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header field is longer than the limit"),
    (http_exceptions.BadHttpMethod, "the request line has an invalid method"),
    (http_exceptions.BadStatusLine, "the request line is malformed"),
    (http_exceptions.InvalidURLError, "the request target is invalid"),
    (http_exceptions.InvalidHeader, "a header is invalid"),
    (http_exceptions.ContentLengthError, "the body does not match its Content-Length"),
    (http_exceptions.TransferEncodingError, "the body's transfer encoding is invalid"),
    (http_exceptions.ContentEncodingError, "the body cannot be decoded by its Content-Encoding"),
)


# llhttp's own reasons are fixed words ("Invalid header token"); aiohttp puts the bytes after them.
_LLHTTP_REASON = re.compile(r"([A-Za-z][A-Za-z ]{2,80}):\n\n")


def parser_reason(exc: BaseException | None) -> str:
    """Why a request could not be parsed, in words that hold nothing the client sent."""
    for kind, reason in _PARSER_REASONS:
        if isinstance(exc, kind):
            return reason
    if type(exc) is http_exceptions.BadHttpMessage and (match := _LLHTTP_REASON.match(exc.message)):
        return match.group(1).lower()
    return "the request is not valid HTTP/1.1"


def _unsupported_encoding(exc: BaseException | None) -> bool:
    """aiohttp refuses ``br`` and ``zstd`` when their optional packages are missing, before any handler runs."""
    return isinstance(exc, http_exceptions.ContentEncodingError) and "Please install" in str(exc)


def _protocol_error_response(
    request: web.BaseRequest, status: int, exc: BaseException | None, message: str | None
) -> web.StreamResponse:
    peer = request.remote
    if status >= 500:
        log.error("request_failed", peer=peer, path=request.path, error=type(exc).__name__)
    if request.writer is not None and request.writer.output_size > 0:
        raise ConnectionError("the response had started; no error response can follow")
    if status >= 500:
        response = _error_response(status, "internal_error", "an internal error occurred; it has been logged")
    elif _unsupported_encoding(exc):
        log.info("bad_request", peer=peer, status=415, reason=UNSUPPORTED_ENCODING)
        response = _error_response(415, "unsupported_media_type", UNSUPPORTED_ENCODING)
    else:
        # The request line may not have been read: method and path are aiohttp's placeholders then, not the client's.
        reason = parser_reason(exc)
        log.info("bad_request", peer=peer, status=status, reason=reason)
        code = "payload_too_large" if status == 413 else "bad_request"
        response = _error_response(status, code, f"the request could not be parsed as HTTP: {reason}")
    response.force_close()
    return response


def _error_response(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(code, message), content_type="application/json")


def guard_of(request: web.Request) -> ConnectionGuard | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, ConnectionGuard) else None


async def start_listener(factory: GuardedProtocolFactory, listen: Listen) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    if listen.path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listen.path)  # a socket left by a previous run
        server = await loop.create_unix_server(factory, listen.path)
        os.chmod(listen.path, 0o660)
    else:
        server = await loop.create_server(factory, listen.host, listen.port or 0, reuse_address=True)
    return server
