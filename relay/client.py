"""relay's Python client: post events to a relay, and call its management API (the ``relay`` commands use it).

    from relay.client import Client

    client = Client("http://127.0.0.1:8080", "KEY")  # or "unix:/run/relay/relay.sock"
    client.send("consent.created", {"subject_id": "u1"})  # Accepted(id='evt_01…', deliveries=2)
    client.send_batch([{"type": "consent.created", "data": {…}}, …])  # [Accepted, …], in order

``AsyncClient`` is the same on aiohttp (``async with AsyncClient(url, key) as client: await client.send(…)``).

Each event gets its id (``evt_`` + a ULID, unless it has one) before the first try, so trying again can never
store it twice. A send that fails for a reason that may pass (a refused connection, a timeout, a 502, 503 or
504) is tried again with backoff for ``RetryPolicy.total`` seconds (30 by default), then raises
``UnavailableError``; every 4xx raises ``RejectedError`` at once, with the API's code, message and details. A
batch goes in requests of at most ``max_batch`` events and ``max_body_size`` bytes (relay's defaults); one that
fails after some of its requests were accepted raises ``PartialBatchError``, which names them. Every error is a
``RelayClientError``.

``Client`` uses the standard library only, and one connection per request, so one may be shared by threads.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tenacity import Retrying

from relay.client_core import (
    DEFAULT_URL,
    EVENTS_PATH,
    Accepted,
    BaseClient,
    RetryPolicy,
    accepted,
    answer,
    batch_body,
    batch_failed,
    describe,
    encode_event,
    new_event,
    request_of,
    split_batch,
    transient_answer,
)
from relay.client_errors import (
    PartialBatchError,
    RejectedError,
    RelayClientError,
    ServerError,
    Transient,
    UnavailableError,
)

if TYPE_CHECKING:
    from relay.client_async import AsyncClient
    from relay.config import Listen

__all__ = [
    "DEFAULT_URL",
    "Accepted",
    "ApiFailure",
    "AsyncClient",
    "Client",
    "PartialBatchError",
    "RejectedError",
    "RelayClientError",
    "RetryPolicy",
    "ServerError",
    "UnavailableError",
    "quoted",
    "url_for",
]

ApiFailure = RelayClientError  # the name the management commands knew it by


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":  # aiohttp is imported by those who use it, not by every `relay` command
        from relay.client_async import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def url_for(listen: Listen) -> str:
    """The URL a client on this machine reaches ``listen`` at (a wildcard address becomes loopback)."""
    if listen.path is not None:
        return f"unix:{listen.path}"
    host = listen.host or "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{listen.port}" if ":" in host else f"http://{host}:{listen.port}"


def quoted(value: str) -> str:
    """A path segment: ids chosen by producers may hold characters a URL path cannot."""
    return quote(value, safe="")


class Client(BaseClient):
    """A relay's API over HTTP(S) or a unix socket, synchronously.

    ``Client(url, api_key, *, timeout=10.0, retry=RetryPolicy(), max_batch=1000, max_body_size=1 MiB)``;
    ``ValueError`` for a URL that is not a relay's.
    """

    def send(
        self,
        type: str,
        data: Any,
        *,
        id: str | None = None,
        tenant: str | None = None,
        ordering_key: str | None = None,
        created_at: str | datetime | None = None,
    ) -> Accepted:
        """Post one event; fields left as None are not sent."""
        event = new_event(type, data, id=id, tenant=tenant, ordering_key=ordering_key, created_at=created_at)
        try:
            return accepted(self._post_events(event.body), [event], self.url)[0]
        except RelayClientError as exc:
            exc.event_ids = (event.id,)
            raise

    def send_batch(self, events: Iterable[Mapping[str, Any]]) -> list[Accepted]:
        """Post events (mappings with ``type``, ``data`` and optionally ``id``, ``tenant``, ``ordering_key``,
        ``created_at``) in as few requests as the limits allow; the accepted events, in order."""
        encoded = [encode_event(event) for event in events]
        done: list[Accepted] = []
        for chunk in split_batch(encoded, self.max_batch, self.max_body_size):
            try:
                done += accepted(self._post_events(batch_body(chunk), index_offset=len(done)), chunk, self.url)
            except RelayClientError as exc:
                batch_failed(done, encoded, exc)
        return done

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str | int | None] | None = None,
    ) -> dict[str, Any] | None:
        """One request to the API, not tried again; the JSON answer of a 2xx (None when it has no body)."""
        target, data = request_of(path, query, body)
        try:
            status, _, raw = self._exchange(method, target, data)
        except Transient as exc:
            raise UnavailableError(exc.reason) from None
        return answer(self.url, status, raw)

    def _post_events(self, body: bytes, *, index_offset: int = 0) -> Any:
        """POST /v1/events, tried again while it fails for a reason that may pass; the answer's ``data``."""
        for attempt in Retrying(**self.retry.settings()):
            with attempt:
                status, wait, raw = self._exchange("POST", EVENTS_PATH, body)
                if (again := transient_answer(status, raw, wait)) is not None:
                    raise again
                result = answer(self.url, status, raw, index_offset=index_offset)
                if result is None or "data" not in result:
                    raise ServerError(f"{self.url} did not answer like a relay (HTTP {status} without data)")
                return result["data"]
        raise AssertionError("unreachable: tenacity returns or raises")

    def _exchange(self, method: str, target: str, body: bytes | None) -> tuple[int, str | None, bytes]:
        """One request: the status, the ``Retry-After`` header and the body. ``Transient`` when it could not be
        made or answered; ``UnavailableError`` for a TLS failure (trying again would not help)."""
        headers = self._headers(json_body=body is not None)
        try:
            connection = self._connection()
            try:
                connection.request(method, self.target.prefix + target, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.getheader("Retry-After"), response.read()
            finally:
                connection.close()
        except ssl.SSLError as exc:
            raise UnavailableError(f"cannot reach the relay at {self.url}: TLS: {describe(exc)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise Transient(f"cannot reach the relay at {self.url}: {describe(exc)}") from exc

    def _connection(self) -> http.client.HTTPConnection:
        target = self.target
        if target.unix_path is not None:
            return _UnixConnection(target.unix_path, self.timeout)
        if target.scheme == "https":
            return http.client.HTTPSConnection(target.host, target.port, timeout=self.timeout)
        return http.client.HTTPConnection(target.host, target.port, timeout=self.timeout)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
