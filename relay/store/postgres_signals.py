"""How relays sharing one PostgreSQL outbox wake each other (CLUSTERING point 4): ``NOTIFY`` inside the writing
transaction (delivered at commit, and only if it commits), ``LISTEN`` on one dedicated connection per relay.

Two channels:
- ``relay_due``: deliveries of these webhooks were committed queued and due now (an ingest group, a replay, a
  re-drive, deliveries given back at shutdown). The payload is JSON ``[owner, [webhook ids...]]``, chunked so that
  no payload comes near PostgreSQL's 8000-byte limit.
- ``relay_webhooks``: a webhook was created, changed or deleted through the API; the payload is the owner.

A relay ignores what it sent itself (it already told its own scheduler). The listening connection is not the
pool's: it stays open for the relay's life and reconnects by itself, with backoff, when it drops (a database
restart, a network cut; a keepalive query finds a connection that died silently). Notifications sent while it was
down are lost, so once it is back it calls ``rescan``: the relay then reads due times and webhooks again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed
import orjson
import structlog

from relay.models import Secret
from relay.store.base import IngestResult
from relay.store.postgres_schema import DRIVER_ERRORS
from relay.store.postgres_writer import Job

log = structlog.get_logger()

DUE_CHANNEL = "relay_due"
WEBHOOKS_CHANNEL = "relay_webhooks"
PAYLOAD_BYTES = 4000  # a due payload's ids stop there (PostgreSQL refuses payloads of 8000 bytes)
CONNECT_TIMEOUT = 5.0
KEEPALIVE = 10.0  # seconds between two checks that a quiet listening connection still answers
BACKOFF_FIRST = 0.1  # seconds before the first reconnection; doubled after each failure ...
BACKOFF_MAX = 2.0  # ... up to this

Conn = Any  # an asyncpg connection (asyncpg has no types)


def due_payloads(owner: str, webhook_ids: Iterable[str]) -> list[str]:
    """The ``relay_due`` payloads announcing ``webhook_ids`` (each id once), each well under the size limit."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = len(owner) + 16
    for webhook_id in sorted(set(webhook_ids)):
        if chunk and size + len(webhook_id) + 4 > PAYLOAD_BYTES:
            payloads.append(orjson.dumps([owner, chunk]).decode())
            chunk, size = [], len(owner) + 16
        chunk.append(webhook_id)
        size += len(webhook_id.encode()) + 4
    if chunk:
        payloads.append(orjson.dumps([owner, chunk]).decode())
    return payloads


def queued_webhooks(jobs: list[Job], outcomes: list[list[IngestResult]]) -> set[str]:
    """The webhooks an ingest group committed new deliveries of that are queued (not leased to the ingesting
    relay): what the other relays hear of it."""
    counts: Counter[str] = Counter()
    for job, answers in zip(jobs, outcomes, strict=True):
        for event, answer in zip(job.events, answers, strict=True):
            if answer.created:
                counts.update(event.webhook_ids)
                counts.subtract(claim.webhook_id for claim in answer.leased)
    return {webhook_id for webhook_id, count in counts.items() if count > 0}


async def notify_due(conn: Conn, owner: str, webhook_ids: Iterable[str]) -> None:
    """Announce queued deliveries of ``webhook_ids``, inside the caller's transaction (sent if it commits)."""
    payloads = due_payloads(owner, webhook_ids)
    if payloads:
        await conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", DUE_CHANNEL, payloads)


async def notify_webhooks_changed(conn: Conn, owner: str) -> None:
    """Announce a change of API webhooks, inside the caller's transaction."""
    await conn.execute("SELECT pg_notify($1, $2)", WEBHOOKS_CHANNEL, owner)


def _ignore_ids(webhook_ids: list[str]) -> None:
    pass


def _ignore() -> None:
    pass


class Listener:
    """The relay's ``LISTEN`` connection and the callbacks its notifications go to (``Signals.on_signals``)."""

    def __init__(self, url: Secret, owner: str) -> None:
        self._url = url
        self._owner = owner
        self.due: Callable[[list[str]], None] = _ignore_ids
        self.webhooks_changed: Callable[[], None] = _ignore
        self.rescan: Callable[[], None] = _ignore
        self.listening = asyncio.Event()  # set while the connection listens (tests wait on it)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-listener")

    async def stopped(self) -> None:
        """Return if the listening task ends before ``close`` (a fault of relay's own: it never gives up)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        connected_before = False
        while True:
            try:
                conn = await asyncpg.connect(
                    self._url.reveal(),
                    timeout=CONNECT_TIMEOUT,
                    server_settings={"application_name": "relay-listen"},
                )
            except DRIVER_ERRORS as exc:
                log.debug("store_listener_connect_failed", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            try:
                await self._listen(conn, connected_before)
            except DRIVER_ERRORS as exc:
                log.warning("store_listener_lost", error=str(exc))
            finally:
                self.listening.clear()
                with contextlib.suppress(*DRIVER_ERRORS):
                    await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT)
                conn.terminate()
            connected_before = True

    async def _listen(self, conn: Conn, reconnected: bool) -> None:
        """Listen on ``conn`` until it drops (raises the driver's error, or returns once it was terminated)."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(DUE_CHANNEL, self._on_notification)
        await conn.add_listener(WEBHOOKS_CHANNEL, self._on_notification)
        self.listening.set()
        if reconnected:
            log.info("store_listener_reconnected")
            self._call(self.rescan)
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    await lost.wait()
                break
            except TimeoutError:  # quiet for a while: does the connection still answer?
                await asyncio.wait_for(conn.fetchval("SELECT 1"), CONNECT_TIMEOUT)
        log.warning("store_listener_lost", error="the connection was closed")

    def _on_notification(self, _conn: Conn, _pid: int, channel: str, payload: str) -> None:
        if channel == WEBHOOKS_CHANNEL:
            if payload != self._owner:
                self._call(self.webhooks_changed)
            return
        try:
            owner, webhook_ids = orjson.loads(payload)
            ids = [str(webhook_id) for webhook_id in webhook_ids]
        except (orjson.JSONDecodeError, TypeError, ValueError):
            log.warning("store_signal_unreadable", channel=channel)
            self._call(self.rescan)
            return
        if owner != self._owner:
            self._call(lambda: self.due(ids))

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        """Run a callback of the daemon's; its fault is logged, never the listener's."""
        try:
            callback()
        except Exception:
            log.exception("store_signal_callback_failed")
