"""The PostgreSQL backend: one outbox that several relays share (CONTRACT §8, ``[storage] url``).

Each relay keeps a pool of ``pool_size`` connections. Ingests go through one writer task and its group commit
(``postgres_writer``), attempt results through another; every other write takes a pooled connection and a
transaction of its own; the statements are
in ``postgres_outbox``, the reads in ``postgres_reads``, the schema and the error translation in
``postgres_schema``. Commits are as durable as the server's ``synchronous_commit`` (on by default, and relay never
turns it off): a 202 means the event is on the database's disk.

Relays know each other through the ``relays`` table: a relay registers its owner id when it opens, refreshes its
``seen_at`` (the database's clock) every ``HEARTBEAT`` seconds and at every ``check_writable``, and removes it when
it closes. A lease belongs to a live relay while its owner is registered and was seen within ``ALIVE_WITHIN``
seconds; ``reclaim_abandoned`` (at startup) and ``take_over`` (the daemon's job, once per group every few seconds)
give back every other lease (a relay that closed, or died), and every lease that ran out: the scheduler keeps the
leases of its running attempts short and renews them (``renew``), so a dead relay's run out soon. Lease ends themselves
are the callers' clock (``now``, ``lease_until``), as on SQLite; the daemon moves its clock onto the database's
(``clock_offset``, measured at open and by the heartbeat), so the relays of a group share one clock.

Relays wake each other (``postgres_signals``): a commit that queues deliveries due now, or changes an API webhook,
notifies the others, which ``LISTEN`` on a connection of their own and pass it on to the daemon's callbacks
(``on_signals``). Jobs the group runs once per interval (pruning) are claimed in the ``jobs`` table
(``claim_job``): a row whose ``next_run_at`` has come, taken with ``FOR UPDATE SKIP LOCKED``.

When the database cannot be reached, every operation raises ``StoreUnavailable`` (the API answers 503, never a
false 202); the pool opens new connections when next asked, so the store comes back by itself with the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]  # no stubs or py.typed
import structlog

from relay.errors import StoreError
from relay.models import Claim, Delivery, Scope, Secret
from relay.ratelimit import RateWindow
from relay.store import postgres_config, postgres_keys
from relay.store import postgres_outbox as outbox
from relay.store.base import AttemptResult, IngestResult, NewEvent, RefreshTokenSession, Room
from relay.store.postgres_schema import DRIVER_ERRORS, migrate, translate
from relay.store.postgres_signals import Listener, notify_due, notify_webhooks_changed, queued_webhooks
from relay.store.postgres_tenants import PostgresTenants
from relay.store.postgres_writer import GroupWriter, Job, ResultJob
from relay.store.rows import check_cancellable, check_quota, spec_tenant

log = structlog.get_logger()

T = TypeVar("T")

CONNECT_TIMEOUT = 5.0  # seconds to open a connection: an unreachable database fails fast, as unavailable
CLOSE_TIMEOUT = 5.0  # seconds close waits for connections in use before it cuts them
HEARTBEAT = 10.0  # seconds between two refreshes of this relay's row in ``relays``
ALIVE_WITHIN = 60.0  # a relay not seen for this long (the database's clock) holds no lease any more
GROUP_TRIES = 3  # a group that deadlocks with another relay's (the same ids, the same rows) is tried again
PRUNE_BATCH = 1000
RESCAN_INTERVAL = 30.0  # seconds between two safety scans for work no notification announced (the daemon's)

# Takes job $1's run at $2 when it is due and no other relay holds its row; the next run is due at $2 + $3.
_CLAIM_JOB = (
    "WITH due AS (SELECT name FROM jobs WHERE name = $1 AND next_run_at <= $2 FOR UPDATE SKIP LOCKED)"
    " UPDATE jobs j SET next_run_at = $2 + $3, last_run_at = $2, last_owner = $4 FROM due WHERE j.name = due.name"
    " RETURNING true"
)

_REGISTER = (
    "INSERT INTO relays (owner, started_at, seen_at)"
    " VALUES ($1, extract(epoch FROM clock_timestamp()), extract(epoch FROM clock_timestamp()))"
    " ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at"
)


class PostgresStore(PostgresTenants):
    """The outbox in a PostgreSQL database. ``open()`` connects and migrates it; ``close()`` drains the writer."""

    def __init__(self, url: Secret | str, pool_size: int = 10) -> None:
        self._url = url if isinstance(url, Secret) else Secret(url)
        self.pool_size = pool_size
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"  # whose leases these are
        self.commits = 0  # write transactions committed
        self._pool: Any = None
        self._writer = GroupWriter[Job](self._commit_ingest)
        self._results = GroupWriter[ResultJob](self._commit_results, name="store-results")
        self._heartbeat: asyncio.Task[None] | None = None
        self._clock_offset = 0.0  # the database's clock minus this machine's (``clock_offset``)
        self.listener = Listener(self._url, self.owner)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await self._create_pool()
            async with self._connection() as conn:
                await migrate(conn)
                if await conn.fetchval("SELECT current_setting('synchronous_commit')") == "off":
                    log.warning("store_commits_not_durable", setting="synchronous_commit = off")
            async with self._transaction() as conn:
                await conn.execute(_REGISTER, self.owner)
            await self._measure_clock()
        except BaseException:
            await self.close()
            raise
        self._writer.open()
        self._results.open()
        self.listener.start()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="store-heartbeat")

    async def _create_pool(self) -> Any:
        """The pool, once a first connection has proved the URL and the database. Connections open when asked
        (and close after 5 minutes idle): with a floor of its own, asyncpg would retry the floor in the background
        through an outage, logging a traceback each time."""
        pool = asyncpg.create_pool(
            self._url.reveal(),
            min_size=0,
            max_size=self.pool_size,
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": "relay"},
        )
        try:
            await pool
            async with pool.acquire():  # the URL is read here
                pass
        except ValueError:  # the URL does not parse (asyncpg's ClientConfigurationError): its text is not shown
            pool.terminate()
            raise StoreError("storage.url is not a PostgreSQL URL asyncpg can use") from None
        except DRIVER_ERRORS as exc:
            pool.terminate()
            raise translate(exc) from exc
        return pool

    async def close(self) -> None:
        await self.listener.close()
        await self._writer.close()
        await self._results.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:  # this relay's leases are abandoned from now on (``reclaim_abandoned``); best effort
            async with asyncio.timeout(CLOSE_TIMEOUT), pool.acquire() as conn:
                await conn.execute("DELETE FROM relays WHERE owner = $1", self.owner)
        except DRIVER_ERRORS as exc:
            log.warning("store_unregister_failed", error=str(exc))
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await pool.close()
        except TimeoutError:
            pool.terminate()

    async def stopped(self) -> None:
        tasks = [
            asyncio.ensure_future(self._writer.stopped()),
            asyncio.ensure_future(self._results.stopped()),
            asyncio.ensure_future(self.listener.stopped()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()

    async def check_writable(self) -> None:
        """Raise ``StoreUnavailable`` with the reason unless a write commits now: this relay's heartbeat, in a
        read-write transaction (a read-only or shutting-down database, or none, fails it)."""
        async with self._transaction() as conn:
            await conn.execute(_REGISTER, self.owner)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self.check_writable()
                await self._measure_clock()
            except StoreError as exc:
                log.warning("store_heartbeat_failed", error=str(exc))

    def clock_offset(self) -> float | None:
        return self._clock_offset

    async def _measure_clock(self) -> None:
        """The database's clock minus this machine's, read halfway through one round trip."""
        async with self._connection() as conn:
            sent = time.time()
            database = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
            received = time.time()
        self._clock_offset = database - (sent + received) / 2

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A pooled connection inside a transaction, counted in ``commits`` once it committed."""
        async with self._connection() as conn:
            async with conn.transaction():
                yield conn
            self.commits += 1

    # -- the outbox --------------------------------------------------------------------------------------

    async def ingest(
        self, events: Sequence[NewEvent], now: float, rooms: Mapping[str, Room] | None = None
    ) -> list[IngestResult]:
        return await self.submit_ingest(events, now, rooms)

    def submit_ingest(
        self,
        events: Sequence[NewEvent],
        now: float,
        rooms: Mapping[str, Room] | None = None,
        on_commit: Callable[[list[IngestResult] | None], None] | None = None,
    ) -> asyncio.Future[list[IngestResult]]:
        rows = len(events) + sum([len(e.webhook_ids) for e in events])
        job = Job(list(events), now, rooms, rows, on_commit)
        self._writer.submit(job)
        return job.future

    async def _commit_ingest(self, jobs: list[Job]) -> list[list[IngestResult]]:
        """The writer's group: one transaction on one connection. A deadlock with another relay's group (both
        inserting the same ids, in another order) rolls this one back; it is tried again, from the start."""

        async def apply(conn: Any) -> list[list[IngestResult]]:
            outcomes = await outbox.apply_ingest(conn, jobs, self.owner)
            await notify_due(conn, self.owner, queued_webhooks(jobs, outcomes))
            return outcomes

        return await self._group_transaction(apply)

    async def claim(
        self, webhook_id: str, limit: int, now: float, lease_until: float
    ) -> tuple[list[Claim], float | None]:
        async with self._connection() as conn:  # one statement: a transaction of its own
            found = await outbox.claim(conn, self.owner, webhook_id, limit, now, lease_until)
        self.commits += 1
        return found

    async def record(
        self, results: Sequence[AttemptResult], on_leased: Callable[[list[Claim]], None] | None = None
    ) -> list[Claim]:
        """Queue the results for the results writer's next group; return once it committed. A key's next delivery
        is made due, not leased (``lease_next_until`` is not taken up here): a claim of the group takes it."""
        if results:
            job = ResultJob(list(results), len(results))
            self._results.submit(job)
            await job.future
        return []

    async def _commit_results(self, jobs: list[ResultJob]) -> list[None]:
        """The results writer's group: every job's results in one transaction, as one ``record`` of them all
        would (in the order the calls came). A deadlock with another relay's transaction is tried again."""
        results = [r for job in jobs for r in job.results]
        await self._group_transaction(lambda conn: outbox.record(conn, results))
        return [None] * len(jobs)

    async def _group_transaction(self, apply: Callable[[Any], Awaitable[T]]) -> T:
        """A writer's group: ``apply`` in one transaction on one connection. A deadlock with another relay's
        transaction (the same rows, locked in another order), or an event id another relay stored while it ran
        (``GroupRetry``), rolls it back; it is tried again, from the start, up to ``GROUP_TRIES`` times in all."""
        async with self._connection() as conn:
            tries = 1
            while True:
                try:
                    async with conn.transaction():
                        outcome = await apply(conn)
                except (asyncpg.TransactionRollbackError, outbox.GroupRetry):
                    if tries >= GROUP_TRIES:
                        raise
                    tries += 1
                    continue
                self.commits += 1
                return outcome

    async def release(self, claims: Sequence[Claim], now: float) -> None:
        if claims:
            async with self._transaction() as conn:
                await outbox.release(conn, claims, now)
                await notify_due(conn, self.owner, [claim.webhook_id for claim in claims])

    async def renew(self, claims: Sequence[Claim], now: float, until: float) -> list[Claim]:
        if not claims:
            return []
        async with self._connection() as conn:  # one statement: a transaction of its own
            renewed = await outbox.renew(conn, claims, now, until)
        self.commits += 1
        return renewed

    async def reclaim_abandoned(self, now: float) -> int:
        """Leases of relays that closed or died (not seen for ``ALIVE_WITHIN`` seconds), and leases that ran out;
        never one a live relay holds."""
        async with self._transaction() as conn:
            return await outbox.reclaim_abandoned(conn, now, ALIVE_WITHIN)

    async def take_over(self, now: float) -> list[str]:
        """What ``reclaim_abandoned`` takes, while relays run (the daemon's take-over job, once per group); the
        other relays hear of it (``relay_due``)."""
        async with self._transaction() as conn:
            webhook_ids = await outbox.take_over(conn, now, ALIVE_WITHIN)
            await notify_due(conn, self.owner, webhook_ids)
        return webhook_ids

    async def replay(
        self,
        event_id: str,
        webhook_ids: Sequence[str],
        now: float,
        *,
        scope: Scope,
        orderings: Sequence[str] = (),
    ) -> list[Delivery] | None:
        async with self._transaction() as conn:
            seqs = await outbox.replay(conn, event_id, webhook_ids, now, scope.tenant, orderings)
            if seqs:
                await notify_due(conn, self.owner, webhook_ids)
        return None if seqs is None else await self._deliveries_by_seq(seqs)

    async def cancel(self, delivery_id: str, now: float, *, scope: Scope) -> Delivery | None:
        async with self._transaction() as conn:
            found = await postgres_keys.cancel(conn, delivery_id, now, scope.tenant)
            if found is not None and found[2]:
                await notify_due(conn, self.owner, found[2])
        if found is None:
            return None
        seq, before, _ = found
        check_cancellable(delivery_id, before)
        deliveries = await self._deliveries_by_seq([seq])
        return deliveries[0] if deliveries else None

    async def redrive(self, now: float, webhook_ids: Sequence[str], *, include_dead: bool) -> dict[str, int]:
        statuses = ("failed", "dead") if include_dead else ("failed",)
        async with self._transaction() as conn:
            counts = await outbox.redrive(conn, now, webhook_ids, statuses)
            await notify_due(conn, self.owner, [webhook_id for webhook_id, n in counts.items() if n])
            return counts

    async def prune(self, cutoff: float, batch: int = PRUNE_BATCH) -> int:
        async with self._transaction() as conn:
            await outbox.drop_hours(conn, cutoff)
        total = 0
        while True:
            async with self._transaction() as conn:
                pruned = await outbox.prune(conn, cutoff, batch)
            total += pruned
            if pruned < batch:
                return total

    # -- the group -------------------------------------------------------------------------------------------

    @property
    def rescan_interval(self) -> float | None:
        return RESCAN_INTERVAL

    def on_signals(
        self,
        due: Callable[[list[str]], None],
        webhooks_changed: Callable[[], None],
        rescan: Callable[[], None],
    ) -> None:
        self.listener.due, self.listener.webhooks_changed, self.listener.rescan = due, webhooks_changed, rescan

    async def take_starts(self, webhook_id: str, want: int, now: float, rate: float) -> tuple[int, float]:
        """The webhook's row is locked while its window is read and written, so relays claiming at once share it."""
        async with self._transaction() as conn:
            window = RateWindow(rate)  # the scheduler's own window, on the group's starts
            window.starts.extend(await _held_window(conn, webhook_id))
            taken = max(0, min(want, window.available(now)))  # ``available`` drops the starts out of the window
            window.take(taken, now)
            await conn.execute(
                "UPDATE rate_windows SET starts = $2 WHERE webhook_id = $1", webhook_id, list(window.starts)
            )
            return taken, window.next_free_at(now)

    async def give_back_starts(self, webhook_id: str, count: int, now: float) -> None:
        async with self._transaction() as conn:
            starts = await _held_window(conn, webhook_id)
            for _ in range(count):
                if now in starts:
                    starts.remove(now)
            await conn.execute("UPDATE rate_windows SET starts = $2 WHERE webhook_id = $1", webhook_id, starts)

    async def claim_job(self, name: str, now: float, interval: float) -> bool:
        """Take this run of job ``name`` when it is due and no other relay is taking it (``SKIP LOCKED``); the row
        keeps when it last ran, and where, for whoever looks."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO jobs (name, next_run_at) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING", name
            )
            return bool(await conn.fetchval(_CLAIM_JOB, name, now, interval, self.owner))

    # -- webhooks ----------------------------------------------------------------------------------------
    # An API webhook's whole definition lives in ``spec`` (secrets included, so the relay can sign after a
    # restart). Every API statement is guarded by ``source = 'api'``: a config-declared webhook is never changed
    # through them.

    async def sync_config_webhooks(self, specs: Mapping[str, bytes], now: float) -> list[str]:
        """This relay's declarations (see ``postgres_config``): a config webhook another live relay still declares
        stays, and relays that declare one differently log ``config_conflict``."""
        async with self._transaction() as conn:
            return await postgres_config.sync_config_webhooks(conn, self.owner, specs, now, ALIVE_WITHIN)

    async def insert_api_webhook(
        self, webhook_id: str, spec: bytes, now: float, *, max_per_tenant: int | None = None
    ) -> bool:
        tenant = spec_tenant(spec)
        async with self._transaction() as conn:
            if tenant is not None and max_per_tenant is not None:
                # One creation per tenant at a time, group-wide: two relays cannot both see room for the last one.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tenant:' || $1))", tenant)
                held = await conn.fetchval("SELECT count(*) FROM webhooks WHERE tenant = $1", tenant)
                check_quota(tenant, int(held), max_per_tenant)
            status = await conn.execute(
                "INSERT INTO webhooks (id, source, spec, created_at, updated_at, tenant)"
                " VALUES ($1, 'api', $2, $3, $3, $4) ON CONFLICT (id) DO NOTHING",
                webhook_id,
                spec,
                now,
                tenant,
            )
            if status == "INSERT 0 1":
                await notify_webhooks_changed(conn, self.owner)
        return bool(status == "INSERT 0 1")

    async def update_api_webhook(
        self, webhook_id: str, spec: bytes, now: float, *, rotation: tuple[str | None, float | None] | None = None
    ) -> bool:
        sql, args = "UPDATE webhooks SET spec = $2, updated_at = $3", list[Any]([webhook_id, spec, now])
        if rotation is not None:
            sql, args = f"{sql}, previous_secret = $4, previous_secret_until = $5", [*args, *rotation]
        async with self._transaction() as conn:
            status = await conn.execute(f"{sql} WHERE id = $1 AND source = 'api'", *args)
            if status == "UPDATE 1":
                await notify_webhooks_changed(conn, self.owner)
        return bool(status == "UPDATE 1")

    async def delete_api_webhook(self, webhook_id: str, now: float) -> int | None:
        async with self._transaction() as conn:
            status = await conn.execute("DELETE FROM webhooks WHERE id = $1 AND source = 'api'", webhook_id)
            if status != "DELETE 1":
                return None
            await conn.execute("DELETE FROM oauth_tokens WHERE webhook_id = $1", webhook_id)
            await notify_webhooks_changed(conn, self.owner)
            return await outbox.cancel_queued(conn, webhook_id, now)

    @contextlib.asynccontextmanager
    async def refresh_token_session(self, webhook_id: str) -> AsyncIterator[RefreshTokenSession]:
        """The webhook's token held under a transaction-scoped advisory lock until the session commits: relays of
        the group refresh one webhook's token one at a time, each reading what the last one saved."""
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"relay:refresh:{webhook_id}")
            current = await conn.fetchval("SELECT refresh_token FROM oauth_tokens WHERE webhook_id = $1", webhook_id)
            yield _HeldToken(current, conn, webhook_id)

    async def save_refresh_token(self, webhook_id: str, token: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO oauth_tokens (webhook_id, refresh_token, updated_at)"
                " VALUES ($1, $2, extract(epoch FROM clock_timestamp()))"
                " ON CONFLICT (webhook_id) DO UPDATE SET refresh_token = excluded.refresh_token,"
                " updated_at = excluded.updated_at",
                webhook_id,
                token,
            )


async def _held_window(conn: Any, webhook_id: str) -> list[float]:
    """The webhook's window of starts, oldest first, its row locked until the transaction ends."""
    await conn.execute("INSERT INTO rate_windows (webhook_id) VALUES ($1) ON CONFLICT DO NOTHING", webhook_id)
    return sorted(await conn.fetchval("SELECT starts FROM rate_windows WHERE webhook_id = $1 FOR UPDATE", webhook_id))


class _HeldToken:
    """A refresh-token session's connection: a rotated token is saved in the session's own transaction."""

    def __init__(self, current: str | None, conn: Any, webhook_id: str) -> None:
        self.current = current
        self._conn = conn
        self._webhook_id = webhook_id

    async def save(self, token: str) -> None:
        await self._conn.execute(_SAVE_TOKEN, self._webhook_id, token)


_SAVE_TOKEN = (
    "INSERT INTO oauth_tokens (webhook_id, refresh_token, updated_at)"
    " VALUES ($1, $2, extract(epoch FROM clock_timestamp()))"
    " ON CONFLICT (webhook_id) DO UPDATE SET refresh_token = excluded.refresh_token,"
    " updated_at = excluded.updated_at"
)


async def migrate_only(url: Secret | str) -> tuple[int, int]:
    """``relay migrate``: connect, run the migrations due (under the lock), disconnect; the versions before and
    after. No pool, no writer, no registration as a relay."""
    text = url.reveal() if isinstance(url, Secret) else url
    try:
        conn = await asyncpg.connect(text, timeout=CONNECT_TIMEOUT, server_settings={"application_name": "relay"})
    except ValueError:
        raise StoreError("storage.url is not a PostgreSQL URL asyncpg can use") from None
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    try:
        return await migrate(conn)
    except DRIVER_ERRORS as exc:
        raise translate(exc) from exc
    finally:
        with contextlib.suppress(*DRIVER_ERRORS):
            await conn.close()
