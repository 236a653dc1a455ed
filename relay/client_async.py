"""``AsyncClient``: ``relay.client.Client`` on aiohttp, for producers that run an event loop.

    async with AsyncClient("http://127.0.0.1:8080", "KEY") as client:
        await client.send("consent.created", {"subject_id": "u1"})

The same arguments, retries, errors and batch splitting as ``Client`` (``relay.client_core`` holds them). Its
connection pool belongs to the event loop that first uses it: ``close()`` it (or use ``async with``) there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
from tenacity import AsyncRetrying

from relay.client_core import (
    EVENTS_PATH,
    Accepted,
    BaseClient,
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
    RelayClientError,
    ServerError,
    Transient,
    UnavailableError,
)


class AsyncClient(BaseClient):
    """A relay's API over HTTP(S) or a unix socket, on aiohttp.

    ``AsyncClient(url, api_key, *, timeout=10.0, retry=RetryPolicy(), max_batch=1000, max_body_size=1 MiB)``;
    ``ValueError`` for a URL that is not a relay's.
    """

    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(
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
            return accepted(await self._post_events(event.body), [event], self.url)[0]
        except RelayClientError as exc:
            exc.event_ids = (event.id,)
            raise

    async def send_batch(self, events: Iterable[Mapping[str, Any]]) -> list[Accepted]:
        """Post events (mappings with ``type``, ``data`` and optionally ``id``, ``tenant``, ``ordering_key``,
        ``created_at``) in as few requests as the limits allow; the accepted events, in order."""
        encoded = [encode_event(event) for event in events]
        done: list[Accepted] = []
        for chunk in split_batch(encoded, self.max_batch, self.max_body_size):
            try:
                data = await self._post_events(batch_body(chunk), index_offset=len(done))
                done += accepted(data, chunk, self.url)
            except RelayClientError as exc:
                batch_failed(done, encoded, exc)
        return done

    async def call(
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
            status, _, raw = await self._exchange(method, target, data)
        except Transient as exc:
            raise UnavailableError(exc.reason) from None
        return answer(self.url, status, raw)

    async def _post_events(self, body: bytes, *, index_offset: int = 0) -> Any:
        """POST /v1/events, tried again while it fails for a reason that may pass; the answer's ``data``."""
        async for attempt in AsyncRetrying(**self.retry.settings()):
            with attempt:
                status, wait, raw = await self._exchange("POST", EVENTS_PATH, body)
                if (again := transient_answer(status, raw, wait)) is not None:
                    raise again
                result = answer(self.url, status, raw, index_offset=index_offset)
                if result is None or "data" not in result:
                    raise ServerError(f"{self.url} did not answer like a relay (HTTP {status} without data)")
                return result["data"]
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _exchange(self, method: str, target: str, body: bytes | None) -> tuple[int, str | None, bytes]:
        """One request: the status, the ``Retry-After`` header and the body. ``Transient`` when it could not be
        made or answered; ``UnavailableError`` for a TLS failure (trying again would not help)."""
        url = self._base() + target
        headers = self._headers(json_body=body is not None)
        try:
            async with self._client().request(method, url, data=body, headers=headers) as response:
                return response.status, response.headers.get("Retry-After"), await response.read()
        except aiohttp.ClientSSLError as exc:
            raise UnavailableError(f"cannot reach the relay at {self.url}: TLS: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            raise Transient(f"cannot reach the relay at {self.url}: {describe(exc.os_error)}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Transient(f"cannot reach the relay at {self.url}: {describe(exc)}") from exc

    def _base(self) -> str:
        target = self.target
        if target.unix_path is not None:
            return "http://localhost"
        return self.url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = None if self.target.unix_path is None else aiohttp.UnixConnector(path=self.target.unix_path)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session
