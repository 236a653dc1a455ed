"""The one outbound HTTP session, with the destination policy built in (CONTRACT §6).

Every request relay makes (deliveries and OAuth2 token fetches alike) goes through it:

- hostnames are resolved by ``PolicyResolver``, which refuses the whole host when ANY address it resolves to is
  in a refused range, so a DNS answer cannot smuggle a private address in behind a public one;
- IP-literal hosts, which aiohttp never passes to the resolver (``2130706433``, ``127.1``, ``[::ffff:10.0.0.1]``
  included), and ``http://`` URLs are checked when the request starts, before any socket opens;
- proxy environment variables are ignored and redirects are never followed (the callers pass
  ``allow_redirects=False``);
- an answer's body is read through :func:`read_capped`, never whole: a remote server cannot make relay hold more
  than the caller's limit of it in memory.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from relay.config import DeliveryConfig
from relay.errors import BlockedDestination
from relay.policy import blocked_range, parse_ip_host


class PolicyResolver(AbstractResolver):
    """Resolves with ``inner`` and refuses hosts with an address in a refused range."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for result in results:
            ip = parse_ip_host(result["host"])
            refused = blocked_range(ip) if ip is not None else "unparseable address"
            if refused is not None:
                raise BlockedDestination(
                    f"{host} resolves to {result['host']}, in a refused range ({refused});"
                    " set delivery.allow_private_networks = true to allow it"
                )
        return results

    async def close(self) -> None:
        await self.inner.close()


def check_destination(url: Any, *, allow_http: bool, allow_private_networks: bool) -> None:
    """Refuse ``http://`` (unless allowed) and IP-literal hosts in a refused range (unless allowed)."""
    if url.scheme == "http" and not allow_http:
        raise BlockedDestination("http:// URLs are refused; set delivery.allow_http = true to allow them")
    if allow_private_networks or not url.host:
        return
    ip = parse_ip_host(url.host)
    refused = blocked_range(ip) if ip is not None else None
    if refused is not None:
        raise BlockedDestination(
            f"destination {url.host} is in a refused range ({refused});"
            " set delivery.allow_private_networks = true to allow it"
        )


def make_session(config: DeliveryConfig, *, resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """The shared session: keep-alive per endpoint, at most ``concurrency`` connections, the policy enforced."""
    allow_http, allow_private = config.allow_http, config.allow_private_networks

    # A client middleware, not a trace hook: it runs before the connection is taken, and tracing (any trace
    # config at all) makes aiohttp build a parameter object for every signal of every request.
    async def destination_policy(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        check_destination(request.url, allow_http=allow_http, allow_private_networks=allow_private)
        return await handler(request)

    chosen = resolver if allow_private else PolicyResolver(resolver)
    connector = aiohttp.TCPConnector(limit=config.concurrency, limit_per_host=0, ttl_dns_cache=60, resolver=chosen)
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, auto_decompress=False, middlewares=(destination_policy,)
    )


_DRAIN_CHUNK = 16 * 1024


async def read_capped(response: aiohttp.ClientResponse, limit: int, *, drain: int = 0) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the answer's body, and whether it holds more.

    One byte past ``limit`` is read to tell. When there is more, up to ``drain`` further bytes are read and dropped
    so the connection can be reused; an answer longer still has its connection closed, unread.
    """
    content = response.content
    chunks: list[bytes] = []
    size = 0
    # ``read(n)`` returns what has arrived (up to n), not n bytes: loop until the limit or the end.
    while size <= limit and (chunk := await content.read(limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    if size <= limit:
        return body, False
    dropped = size - limit
    while dropped < drain and (chunk := await content.read(_DRAIN_CHUNK)):
        dropped += len(chunk)
    if not content.at_eof():
        response.close()
    return body[:limit], True


_SSL_REASON = re.compile(r"^\[SSL(?:: [A-Z0-9_]+)?\] (?P<words>.+?)(?: \(_ssl\.c:\d+\))?$")


def describe_client_error(exc: BaseException) -> str:
    """What went wrong with a request, in words: aiohttp's own text names its connection key
    (``Cannot connect to host example.com:443 ssl:default [Connect call failed …]``), "ssl" even for ``http://``.

    ``cannot connect to 127.0.0.1:9: connection refused``, ``cannot resolve example.invalid: Name or service not
    known``, ``TLS handshake with example.com:443 failed: wrong version number``.
    """
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"[{exc.host}]:{exc.port}" if ":" in exc.host else f"{exc.host}:{exc.port}"
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            text = f"TLS certificate of {where} not accepted: {_os_reason(exc.certificate_error)}"
        elif isinstance(exc, aiohttp.ClientSSLError):
            text = f"TLS handshake with {where} failed: {_os_reason(exc.os_error)}"
        elif isinstance(exc, aiohttp.ClientConnectorDNSError):
            text = f"cannot resolve {exc.host}: {_os_reason(exc.os_error)}"
        else:
            text = f"cannot connect to {where}: {_os_reason(exc.os_error)}"
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS error: {_os_reason(exc)}"
    else:
        text = str(exc) or type(exc).__name__
    return text[:500]


def _os_reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    if isinstance(error, ssl.SSLError):
        text = error.strerror or str(error)
        match = _SSL_REASON.match(text)
        return match["words"] if match else text
    if isinstance(error, socket.gaierror) and error.strerror:
        return error.strerror
    if isinstance(error, OSError) and error.errno is not None and error.errno > 0:
        return os.strerror(error.errno).lower()  # asyncio's strerror is "Connect call failed ('10.0.0.1', 443)"
    return str(error) or type(error).__name__
