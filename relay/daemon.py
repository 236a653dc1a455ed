"""The daemon's lifecycle, in one object: startup -> wait for a stop -> shutdown.

Signal handlers only set events. Every long-lived task has a name; if one dies unexpectedly the daemon stops
with a non-zero status (and systemd restarts it) instead of limping on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
from collections.abc import Callable

import aiohttp
import structlog
from aiohttp import web
from aiohttp.abc import AbstractResolver

from relay import __version__
from relay.api import build_app, build_health_app
from relay.auth import Authenticator, build_authenticator
from relay.clock import Clock, SystemClock
from relay.config import Config, Listen
from relay.delivery import Deliverer
from relay.errors import ConfigError, RelayError, StoreError
from relay.http import Services
from relay.listeners import DIRECT_ROUTES, GuardedProtocolFactory, start_listener
from relay.metrics import Metrics
from relay.models import Webhook
from relay.outbound import make_session
from relay.registry import Registry
from relay.scheduler import Scheduler
from relay.store import open_store
from relay.systemd import Notifier

log = structlog.get_logger()

PRUNE_INTERVAL = 3600.0
# On a shared store, every this many seconds one relay of the group makes the deliveries of dead relays (their
# leases ran out: the scheduler's LEASE_MARGIN) due again. Each relay checks twice per interval, so runs are at
# most 1.5 intervals apart: a delivery held by a relay killed with kill -9 is attempted elsewhere within
# timeout + LEASE_MARGIN (15 s) + 7.5 s of the kill, inside the timeout + 30 s of CONTRACT §8.
TAKE_OVER_INTERVAL = 5.0
GROUP_RETRY = 1.0  # seconds before following the group again after the store refused


# The collector's first threshold: allocations (less deallocations) between two young collections. Python's 700
# made ~270 young collections a second under single-event ingest. With the frozen startup heap: single ingest 35-38 %
# of the bare handler -> 39-43 % (make bench --only single, three alternating runs each), RSS +1 MB.
GC_YOUNG_THRESHOLD = 20_000


def settle_heap() -> None:
    """Once the daemon is serving: move everything startup made (modules, config, the app, the registry) out of
    the collector's sight, and collect the young generation less often. Startup's objects live as long as the
    process, so every full collection re-scanned them for nothing (~14 ms each, the p99 latency's spikes)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        reload_config: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.resolver = resolver  # tests inject a stub; the policy wraps whatever resolves
        self.config = config
        self.clock = clock or SystemClock()
        self.reload_config = reload_config
        self.notifier = notifier or Notifier()
        self.store = open_store(config.storage)
        self.registry = Registry()
        self.metrics = Metrics(self.store)
        self._stop = asyncio.Event()
        self._resync = asyncio.Event()  # another relay changed webhooks, or signals were lost: follow the group
        self._rescan_all = False  # signals were lost: due times too
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: list[web.AppRunner] = []
        self._listeners: list[asyncio.Server] = []
        self._authenticators: dict[str, tuple[object, Authenticator]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.scheduler: Scheduler | None = None
        self.services: Services | None = None
        self.exit_code = 0
        self.bound: list[str] = []  # the addresses really listened on (port 0 resolved), API first

    # -- the whole life ----------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        try:
            try:
                await self.start()
            except (RelayError, OSError) as exc:
                log.error("startup_failed", error=str(exc))
                self.exit_code = 1
                return self.exit_code
            settle_heap()
            await self._wait_for_stop()
        finally:
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return self.exit_code

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set() and sig == signal.SIGINT:
            log.warning("forced_exit")
            os._exit(1)  # a second Ctrl-C: the user wants out now
        log.info("stop_requested", signal=sig.name)
        self._stop.set()

    def _on_reload_signal(self) -> None:
        self._spawn(self.reload(), "reload", watched=False)

    def request_stop(self) -> None:
        self._stop.set()

    async def _wait_for_stop(self) -> None:
        stopper = asyncio.create_task(self._stop.wait(), name="stop-event")
        watched = [t for t in self._tasks if t.get_name() != "reload"]
        done, _ = await asyncio.wait([stopper, *watched], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            stopper.cancel()
            for task in done:
                error = None if task.cancelled() else task.exception()
                log.error("task_died", task=task.get_name(), error=repr(error))
            self.exit_code = 1

    # -- startup -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        await self.store.open()
        self._follow_store_clock()
        now = self.clock.now()
        reclaimed = await self.store.reclaim_abandoned(now)
        delivery = config.delivery
        self._session = make_session(delivery, resolver=self.resolver)
        deliverer = Deliverer(
            self._session,
            clock=self.clock,
            user_agent=delivery.user_agent,
            default_timeout=delivery.timeout,
            authenticator_for=self._authenticator_for,
        )
        self.scheduler = Scheduler(
            self.store,
            self.registry,
            deliverer,
            self.clock,
            delivery,
            on_attempt=self.metrics.attempted,
            group_rates=self.store if self.store.rescan_interval is not None else None,  # shared by relays
        )
        self.services = Services(
            config, self.store, self.registry, self.scheduler, self.clock, ready=self._ready, metrics=self.metrics
        )
        await self.services.webhooks.load(config.webhooks)
        self.services.on_ingest.append(self.metrics.ingested)
        self.store.on_signals(self._on_due_elsewhere, self._resync.set, self._on_signals_lost)
        server = config.server
        if server.health_listen is None:
            await self._serve(build_app(self.services, with_health=True), server.listen)
        else:
            await self._serve(build_app(self.services, with_health=False), server.listen)
            await self._serve(build_health_app(self.services), server.health_listen)
        self._spawn(self.scheduler.run(), "scheduler")
        self._spawn(self._prune_loop(), "pruner")
        self._spawn(self.store.stopped(), "store")  # its writer, and on PostgreSQL its listener
        if self.store.rescan_interval is not None:
            self._spawn(self._follow_group(self.store.rescan_interval), "group-follower")
            self._spawn(self._take_over_loop(), "take-over")
        if self.notifier.watchdog_interval:
            self._spawn(self._watchdog_loop(self.notifier.watchdog_interval), "watchdog")
        log.info(
            "relay_started",
            version=__version__,
            listen=self.bound[0] if self.bound else str(server.listen),
            health_listen=self.bound[-1] if self.bound else str(server.listen),
            store=config.storage.describe(),
            webhooks=len(self.registry.all()),
            reclaimed=reclaimed,
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],  # "asyncio" or "uvloop"
        )
        self.notifier.notify("READY=1", f"STATUS=listening on {server.listen}", f"MAINPID={os.getpid()}")

    async def _serve(self, app: web.Application, listen: Listen) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        server = self.config.server
        factory = GuardedProtocolFactory(
            runner.server,  # type: ignore[arg-type]
            request_timeout=server.request_timeout,
            max_connections=server.max_connections,
            direct=app.get(DIRECT_ROUTES),
        )
        listener = await start_listener(factory, listen)
        self._listeners.append(listener)
        for sock in listener.sockets:
            name = sock.getsockname()
            self.bound.append(name if isinstance(name, str) else f"{name[0]}:{name[1]}")

    def _spawn(self, coro: object, name: str, *, watched: bool = True) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        task.set_name(name)
        if watched:
            self._tasks.append(task)

    async def _ready(self) -> str | None:
        if self.scheduler is None or not any(t.get_name() == "scheduler" and not t.done() for t in self._tasks):
            return "scheduler is not running"
        try:
            async with asyncio.timeout(2.0):
                await self.store.check_writable()
        except TimeoutError:
            return "store: a write did not commit within 2s"
        except StoreError as exc:
            return f"store is not writable: {exc}"
        return None

    async def _watchdog_loop(self, interval: float) -> None:
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _prune_loop(self) -> None:
        """Every interval, prune, on one relay of the group (``claim_job``: a store one relay owns always says
        yes)."""
        interval = min(PRUNE_INTERVAL, max(1.0, self.config.storage.retention / 4))
        while True:
            await self.clock.sleep(interval)
            try:
                if not await self.store.claim_job("prune", self.clock.now(), interval):
                    continue
                log.info("job_started", job="prune")
                pruned = await self.store.prune(self.clock.now() - self.config.storage.retention)
            except StoreError as exc:
                log.warning("prune_failed", error=str(exc))
                continue
            if pruned:
                log.info("events_pruned", count=pruned)

    # -- the other relays of a shared store ------------------------------------------------------------------

    def _on_due_elsewhere(self, webhook_ids: list[str]) -> None:
        """Another relay queued deliveries of these webhooks, due now: whichever relay claims first takes them."""
        if self.scheduler is not None:
            self.scheduler.notify(webhook_ids, self.clock.now())

    async def _take_over_loop(self) -> None:
        """A shared store: once per ``TAKE_OVER_INTERVAL`` across the group (``claim_job``), deliveries that dead
        relays held are due again; the others hear of it from the store, this relay's scheduler from here."""
        while True:
            await self.clock.sleep(TAKE_OVER_INTERVAL / 2)
            now = self.clock.now()
            try:
                if not await self.store.claim_job("take_over", now, TAKE_OVER_INTERVAL):
                    continue
                webhook_ids = await self.store.take_over(now)
            except StoreError as exc:
                log.warning("take_over_failed", error=str(exc))
                continue
            if webhook_ids and self.scheduler is not None:
                log.info("deliveries_taken_over", webhook_ids=webhook_ids)
                self.scheduler.notify(webhook_ids, now)

    def _on_signals_lost(self) -> None:
        self._rescan_all = True
        self._resync.set()

    def _follow_store_clock(self) -> None:
        """On a store shared by several relays, read the store's clock (CLUSTERING point 3): leases, due times and
        rate windows are compared across relays. A clock a test injected stays as it is."""
        offset = self.store.clock_offset()
        if offset is not None and isinstance(self.clock, SystemClock):
            if abs(offset - self.clock.offset) > 1.0:
                log.warning(
                    "clock_offset", seconds=round(offset, 3), reason="this machine's clock differs from the store's"
                )
            self.clock.offset = offset

    async def _follow_group(self, interval: float) -> None:
        """A shared store: take the other relays' webhook changes into the Registry when signalled; and scan for
        due work no signal announced, once signals may have been lost and every ``interval`` as a safety net
        (the signals are the main path)."""
        assert self.services is not None and self.scheduler is not None
        next_scan = self.clock.now() + interval
        while True:
            await self.clock.wait(self._resync, next_scan)
            self._resync.clear()
            scan = self._rescan_all or self.clock.now() >= next_scan
            self._rescan_all = False
            self._follow_store_clock()  # as the store's heartbeat last measured it
            try:
                changed = await self.services.webhooks.reload_api_webhooks()
                if scan:
                    await self.scheduler.refresh()
                elif changed:
                    await self.scheduler.refresh(changed)
            except StoreError as exc:
                log.warning("group_sync_failed", error=str(exc))
                next_scan = self.clock.now() + GROUP_RETRY
                continue
            if scan:
                next_scan = self.clock.now() + interval

    # -- webhooks ----------------------------------------------------------------------------------------

    def _authenticator_for(self, webhook: Webhook) -> Authenticator:
        # The metrics hook is bound to the webhook's source (its label): an id that moves between the config file
        # and the API gets a new authenticator.
        key = (webhook.auth, webhook.source)
        cached = self._authenticators.get(webhook.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        assert self._session is not None
        authenticator = build_authenticator(
            webhook.id,
            webhook.auth,
            session=self._session,
            timeout=webhook.timeout or self.config.delivery.timeout,
            clock=self.clock,
            tokens=self.store,
            on_token_request=functools.partial(self.metrics.token_requested, webhook),
        )
        self._authenticators[webhook.id] = (key, authenticator)
        return authenticator

    async def reload(self) -> None:
        """SIGHUP: re-read the file; webhooks are added, changed or removed; an invalid file changes nothing."""
        if self.reload_config is None or self.services is None or self.scheduler is None:
            return
        self.notifier.notify("RELOADING=1")
        try:
            try:
                config = self.reload_config()
                await self.services.webhooks.apply_config(config.webhooks)
            except ConfigError as exc:
                log.error("reload_failed", problems=[str(p) for p in exc.problems])
                return
            self.config = config
            self.services.config = config
            await self.scheduler.refresh()
            log.info("config_reloaded", webhooks=len(config.webhooks))
        except StoreError as exc:
            log.error("reload_failed", error=str(exc))
        finally:
            self.notifier.notify("READY=1")

    # -- shutdown ----------------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        if self.services is not None:
            self.services.accepting = False
        if self.scheduler is not None:
            self.scheduler.stop_claiming()
        for task in self._tasks:
            if task.get_name() != "scheduler":
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.scheduler is not None:
            await self.scheduler.drain(self.config.server.shutdown_timeout)
        for listener in self._listeners:
            listener.close()
        for runner in self._runners:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
        await self.store.close()
        log.info("relay_stopped", exit_code=self.exit_code)
