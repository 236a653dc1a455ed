"""The scheduler: claims due deliveries per webhook and runs their attempts within the concurrency limits.

Each webhook has a lane that knows the earliest time one of its deliveries falls due. The loop reads the clock
once per tick, claims for every lane that is due and has room (global ``concurrency``, ``per_webhook_concurrency``,
``rate_limit``), starts the attempts, and sleeps until the next due time or until something wakes it: an ingest
commit, a finished attempt, a change of webhooks. There is no polling on the happy path.

Leases are short (one attempt timeout and ``LEASE_MARGIN``) and renewed while their attempts run: every
``RENEW_EVERY`` seconds the loop extends the leases of the attempts still under way, in one store call per
timeout in use. A relay that dies stops renewing, so another takes its deliveries over soon after
(CONTRACT §8: within the timeout and 30 s), however long an attempt may take (a token fetch, a post, a refetch
after a 401 and a second post: up to six timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from relay.clock import Clock
from relay.config import DeliveryConfig
from relay.delivery import AttemptReport, Deliverer
from relay.errors import StoreError
from relay.models import Claim, DeliveryStatus, ErrorKind, Webhook, format_time
from relay.ratelimit import RateWindow
from relay.registry import Registry
from relay.retry import Decision, Outcome, RetryPolicy, decide
from relay.store import AttemptResult, Outbox, Room
from relay.store.base import RateWindows

log = structlog.get_logger()

STORE_BACKOFF = 1.0  # seconds to wait after the store refused a claim
# A lease runs one attempt timeout past its claim or its last renewal, and this margin more: room for a late
# renewal (a slow store, a busy loop) before another relay may take the delivery over. Kept well above
# RENEW_EVERY, and small enough that timeout + LEASE_MARGIN + the group's reclaim interval stays within
# timeout + 30 s (CONTRACT §8).
LEASE_MARGIN = 15.0
RENEW_EVERY = 5.0  # seconds between two renewals of the leases of attempts still running
ABANDONED_NAMED = 50  # at most this many delivery (and webhook) ids in one attempts_abandoned line; count has all
AttemptHook = Callable[[Webhook, Claim, AttemptReport, Decision], None]


@dataclass(slots=True)
class _Lane:
    webhook_id: str
    inflight: int = 0
    next_due: float = math.inf
    notified: float = math.inf  # due times announced while a claim was under way
    claiming: bool = False
    rate: RateWindow | None = None  # the webhook's rate_limit, once it has one

    def limiter(self, rate: float | None) -> RateWindow | None:
        """The lane's rate window for the webhook's current ``rate_limit`` (the starts it holds outlive a change)."""
        if rate is None:
            return None
        if self.rate is None or self.rate.rate != rate:
            window = RateWindow(rate)
            if self.rate is not None:
                window.starts = self.rate.starts
            self.rate = window
        return self.rate


@dataclass(slots=True)
class _InFlight:
    claim: Claim
    recording: bool = False  # the attempt ended: its result is being recorded under the lease it holds now
    lost: bool = False  # a renewal found the lease taken over: its result will be ignored
    task: asyncio.Task[None] | None = None


class Scheduler:
    def __init__(
        self,
        store: Outbox,
        registry: Registry,
        deliverer: Deliverer,
        clock: Clock,
        config: DeliveryConfig,
        *,
        rng: Callable[[], float] = random.random,
        on_attempt: AttemptHook | None = None,
        group_rates: RateWindows | None = None,
    ) -> None:
        self.store = store
        # A store shared by several relays keeps each webhook's rate window for all of them; None: this relay's own
        # window is the webhook's (one relay owns the store).
        self._group_rates = group_rates
        self.registry = registry
        self.deliverer = deliverer
        self.clock = clock
        self.config = config
        self.rng = rng
        self.on_attempt = on_attempt
        self._lanes: dict[str, _Lane] = {}
        self._in_flight: dict[str, _InFlight] = {}  # by delivery id, leased here: attempting, or recording the result
        self._attempting = 0  # HTTP attempts under way: what the concurrency limits count
        self._wake = asyncio.Event()
        self._stopping = False
        self._renew_at = math.inf  # when the leases of the attempts in flight are next renewed
        self._renewing = asyncio.Lock()  # a result is recorded under a lease no renewal is changing

    # -- signals from the rest of the daemon ------------------------------------------------------------

    def notify(self, webhook_ids: Iterable[str], due: float) -> None:
        """Deliveries of these webhooks fall due at ``due`` (an ingest commit, a retry decision)."""
        for webhook_id in webhook_ids:
            lane = self._lane(webhook_id)
            lane.next_due = min(lane.next_due, due)
            lane.notified = min(lane.notified, due)
        self._wake.set()

    async def refresh(self, webhook_ids: Iterable[str] | None = None) -> None:
        """Re-read due times from the store (startup, webhook changes, manual re-drive)."""
        due = await self.store.due_by_webhook()
        wanted = set(due) if webhook_ids is None else set(webhook_ids)
        for webhook_id in wanted:
            if webhook_id in due:
                self.notify([webhook_id], due[webhook_id])
        self._wake.set()

    def reserve(self, wanted: Mapping[str, int], now: float) -> dict[str, Room]:
        """Room for fresh deliveries to start at once, with no claim: how many of each webhook's new deliveries
        the ingest may commit already leased (``Store.ingest``), and until when.

        Only a lane with nothing due and no claim under way gets room, so fresh deliveries never overtake older
        ones. The room is taken from the limits now; ``start`` gives back what the commit did not use.
        """
        rooms: dict[str, Room] = {}
        if self._stopping:
            return rooms
        for webhook_id, count in wanted.items():
            webhook = self.registry.get(webhook_id)
            if webhook is None or not webhook.is_active:
                continue
            lane = self._lane(webhook_id)
            if lane.claiming or lane.next_due <= now:
                continue
            room = min(
                count,
                self.config.per_webhook_concurrency - lane.inflight,
                self.config.concurrency - self._attempting,
            )
            if webhook.rate_limit is not None and self._group_rates is not None:
                continue  # its starts come from the group's window, which a claim takes from
            if (limiter := lane.limiter(webhook.rate_limit)) is not None:
                room = min(room, limiter.available(now))
            if room <= 0:
                continue
            if limiter is not None:
                limiter.take(room, now)
            lane.inflight += room
            self._attempting += room
            rooms[webhook_id] = Room(room, self._lease_until(webhook, now))
        return rooms

    def start(self, rooms: Mapping[str, Room], claims: Iterable[Claim]) -> None:
        """Start the attempts of deliveries committed leased in ``rooms``; give back the room not used
        (duplicate ids, a failed commit: then ``claims`` is empty)."""
        unused = {webhook_id: room.count for webhook_id, room in rooms.items()}
        for claim in claims:
            webhook = self.registry.get(claim.webhook_id)
            if webhook is None or self._stopping:
                continue  # removed meanwhile, or shutting down: its lease runs out, or the next start reclaims it
            unused[claim.webhook_id] -= 1
            self._launch(self._lane(claim.webhook_id), webhook, claim)
        for webhook_id, count in unused.items():
            if count:
                lane = self._lane(webhook_id)
                lane.inflight -= count
                self._attempting -= count
                if lane.rate is not None:
                    lane.rate.give_back(count)
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._attempting

    # -- the loop ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.refresh()
        while not self._stopping:
            self._wake.clear()
            now = self.clock.now()
            wake_at = await self._tick(now)
            if self._stopping:
                break
            if self._in_flight:
                if now >= self._renew_at:
                    await self._renew(now)
                wake_at = min(wake_at, self._renew_at)
            await self.clock.wait(self._wake, None if wake_at == math.inf else wake_at)

    async def _tick(self, now: float) -> float:
        """Claim for every lane that is due and has room; return when the next lane falls due."""
        wake_at = math.inf
        free = self.config.concurrency - self._attempting
        starved = False  # a due lane got no room because the global limit went to the lanes before it
        claims: list[tuple[_Lane, int]] = []
        for lane in list(self._lanes.values()):
            webhook = self.registry.get(lane.webhook_id)
            if webhook is None or not webhook.is_active:
                if lane.inflight == 0:
                    del self._lanes[lane.webhook_id]
                continue
            if lane.next_due > now:
                wake_at = min(wake_at, lane.next_due)
                continue
            want = min(self.config.per_webhook_concurrency - lane.inflight, free)
            if self._group_rates is None and (limiter := lane.limiter(webhook.rate_limit)) is not None:
                if (allowed := limiter.available(now)) <= 0:
                    wake_at = min(wake_at, limiter.next_free_at(now))
                    continue
                want = min(want, allowed)
            if want <= 0:
                starved = starved or free <= 0
                continue  # a finishing attempt wakes the loop
            free -= want
            claims.append((lane, want))
        for lane, _ in claims:  # the lanes served go to the back of the line: when slots are scarce, they take turns
            self._lanes[lane.webhook_id] = self._lanes.pop(lane.webhook_id)
        if claims:
            results = await asyncio.gather(
                *(self._claim(lane, want, now) for lane, want in claims), return_exceptions=True
            )
            for (lane, want), result in zip(claims, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, StoreError):
                        raise result
                    log.warning("claim_failed", webhook_id=lane.webhook_id, error=str(result))
                    lane.next_due = min(lane.next_due, now + STORE_BACKOFF)
                elif starved and result < want:
                    # The room this claim did not use goes to the lanes it was kept from, at once: no attempt in
                    # flight may be left to wake the loop when it ends.
                    wake_at = now
                wake_at = min(wake_at, lane.next_due)
        return wake_at

    def _lease_until(self, webhook: Webhook | None, now: float) -> float:
        """A claim's (or a renewal's) lease end: one timeout and the margin; ``_renew`` extends it while the
        attempt runs (an attempt may take up to six timeouts)."""
        timeout = (webhook.timeout if webhook is not None else None) or self.config.timeout
        return now + timeout + LEASE_MARGIN

    async def _renew(self, now: float) -> None:
        """Extend the leases of the attempts still running (one store call per lease span in use); a lease
        another relay took over meanwhile is left to it."""
        self._renew_at = now + RENEW_EVERY
        async with self._renewing:
            spans: dict[float, list[_InFlight]] = {}
            for entry in self._in_flight.values():
                if entry.recording or entry.lost:
                    continue
                until = self._lease_until(self.registry.get(entry.claim.webhook_id), now)
                if entry.claim.lease.until < until:
                    spans.setdefault(until, []).append(entry)
            for until, entries in spans.items():
                claims = [entry.claim for entry in entries]
                try:
                    renewed = await self.store.renew(claims, now, until)
                except StoreError as exc:
                    log.warning("leases_not_renewed", count=len(claims), error=str(exc))
                    continue
                kept = {claim.delivery_id for claim in renewed}
                for entry in entries:
                    if entry.claim.delivery_id in kept:
                        entry.claim.lease.until = until
                    else:
                        entry.lost = True
                        log.warning(
                            "lease_lost", webhook_id=entry.claim.webhook_id, delivery_id=entry.claim.delivery_id
                        )

    async def _claim(self, lane: _Lane, want: int, now: float) -> int:
        """Claim up to ``want`` of the lane's due deliveries and start their attempts; how many started."""
        webhook = self.registry.get(lane.webhook_id)
        assert webhook is not None
        lease_until = self._lease_until(webhook, now)
        lane.notified = math.inf
        lane.claiming = True
        group = self._group_rates if webhook.rate_limit is not None else None
        try:
            if group is not None:
                assert webhook.rate_limit is not None
                want, free_at = await group.take_starts(lane.webhook_id, want, now, webhook.rate_limit)
                if not want:
                    lane.next_due = free_at  # nothing may start before then, however much is due
                    return 0
            claimed, remaining = await self.store.claim(lane.webhook_id, want, now, lease_until)
            if group is not None and len(claimed) < want:
                await group.give_back_starts(lane.webhook_id, want - len(claimed), now)
        finally:
            lane.claiming = False
        if group is None and (limiter := lane.limiter(webhook.rate_limit)) is not None:
            limiter.take(len(claimed), now)
        started = 0
        for claim in claimed:
            if (live := self._in_flight.get(claim.delivery_id)) is not None:
                # A lease that ran out under a live attempt: that attempt records the result, under the new lease.
                live.claim.lease = claim.lease
                live.lost = False
                continue
            lane.inflight += 1
            self._attempting += 1
            self._launch(lane, webhook, claim)
            started += 1
        if len(claimed) < want:
            lane.next_due = min(math.inf if remaining is None else remaining, lane.notified)
        return started

    def _launch(self, lane: _Lane, webhook: Webhook, claim: Claim) -> None:
        """Start the attempt of a leased delivery (its slot is already counted in the lane)."""
        entry = _InFlight(claim)
        if not self._in_flight:
            self._renew_at = self.clock.now() + RENEW_EVERY
        self._in_flight[claim.delivery_id] = entry
        entry.task = asyncio.create_task(self._attempt(lane, webhook, entry), name=f"attempt-{claim.delivery_id}")

    async def _attempt(self, lane: _Lane, webhook: Webhook, entry: _InFlight) -> None:
        claim = entry.claim
        # A delivery holding its ordering key keeps its slot until its result is recorded: the key's next delivery,
        # leased in the same commit, takes it over (``next_of_key``).
        holding = claim.lease.keyed
        try:
            try:
                report = await self._guarded_attempt(webhook, claim)
            finally:
                if not holding:  # the slot is free once the HTTP attempt ends; the lease covers the commit's wait
                    self._free_slot(lane)
            now = self.clock.now()
            policy = RetryPolicy(
                schedule=webhook.retry_schedule or self.config.retry_schedule,
                jitter=self.config.jitter,
                redrive_interval=self.config.redrive_interval,
                redrive_max_age=self.config.redrive_max_age,
            )
            decision = decide(
                policy,
                attempt_number=claim.attempt_number,
                outcome=Outcome(report.succeeded, report.retry_after),
                now=now,
                created_at=claim.created_at,
                rand=self.rng(),
            )
            attempt = report.to_attempt(claim.attempt_number, decision.next_attempt_at)
            async with self._renewing:  # a renewal under way ends first: the result goes under the lease it set
                entry.recording = True
            lease_next = self._lease_until(webhook, now) if holding else None
            result = AttemptResult(
                claim.lease,
                claim.delivery_id,
                claim.webhook_id,
                attempt,
                decision.status,
                decision.next_attempt_at,
                lease_next,
            )

            def hand_over(leased: list[Claim]) -> None:
                nonlocal holding
                if holding:
                    holding = False
                    self._next_of_key(lane, webhook, leased)

            try:
                # The key's next delivery starts as soon as the store decided it, before the commit's fsync
                # (``Outbox.record``): one attempt and one commit's statements apart, not one commit.
                leased = await (
                    self.store.record([result], on_leased=hand_over) if holding else self.store.record([result])
                )
            except StoreError as exc:
                # The lease runs out and the delivery is attempted again: at least once, never lost.
                log.error("attempt_not_recorded", delivery_id=claim.delivery_id, error=str(exc))
                self.notify([lane.webhook_id], claim.lease.until)
                return
            hand_over(leased)
            self._log(webhook, claim, report, decision)
            if self.on_attempt is not None:
                self.on_attempt(webhook, claim, report, decision)
            if decision.next_attempt_at is not None:
                self.notify([lane.webhook_id], decision.next_attempt_at)
            if claim.lease.keyed:  # its key may have moved on: the next delivery of the key is due now
                self.notify([lane.webhook_id], now)
        finally:
            if holding:
                self._free_slot(lane)
            self._in_flight.pop(claim.delivery_id, None)

    def _free_slot(self, lane: _Lane) -> None:
        lane.inflight -= 1
        self._attempting -= 1
        self._wake.set()

    def _next_of_key(self, lane: _Lane, webhook: Webhook, leased: list[Claim]) -> None:
        """The slot of a keyed attempt whose result the store took: to the key's next delivery when the store leased
        it with the result (no claim, no second commit), else free. One leased while the scheduler stops, or for a
        webhook switched off, is not started: it is due again when its lease runs out (or at the next start)."""
        current = self.registry.get(webhook.id)
        if leased and not self._stopping and current is not None and current.is_active:
            self._launch(lane, current, leased[0])  # takes over the slot: inflight and attempting stay
        else:
            self._free_slot(lane)

    async def _guarded_attempt(self, webhook: Webhook, claim: Claim) -> AttemptReport:
        """The attempt; a fault of relay's own becomes a failed attempt that follows the schedule.

        Without this, an unexpected exception would leave the delivery leased until the lease ran out and then
        loop through the same fault with no attempt ever recorded.
        """
        started_at = self.clock.now()
        try:
            return await self.deliverer.attempt(webhook, claim)
        except Exception as exc:
            log.exception(
                "attempt_crashed", webhook_id=webhook.id, delivery_id=claim.delivery_id, event_id=claim.event.id
            )
            detail = f"{type(exc).__name__} inside relay (logged as attempt_crashed)"
            return AttemptReport(started_at, 0.0, None, ErrorKind.INTERNAL_ERROR, detail, None, None)

    def _log(self, webhook: Webhook, claim: Claim, report: AttemptReport, decision: Decision) -> None:
        fields = {
            "webhook_id": webhook.id,
            "delivery_id": claim.delivery_id,
            "event_id": claim.event.id,
            "attempt": claim.attempt_number,
            "status_code": report.status_code,
            "duration_ms": round(report.duration_ms, 1),
        }
        if decision.status is DeliveryStatus.SUCCEEDED:
            # A first try's success is routine; one after retries or a re-drive closes what was logged as a failure.
            (log.info if claim.attempt_number > 1 else log.debug)("delivery_succeeded", **fields)
            return
        fields.update(error=report.error, error_detail=report.error_detail)
        if decision.status is DeliveryStatus.PENDING:
            log.info("delivery_retry_scheduled", next_attempt_at=format_time(decision.next_attempt_at), **fields)
        elif decision.status is DeliveryStatus.FAILED:
            log.warning("delivery_parked", next_attempt_at=format_time(decision.next_attempt_at), **fields)
        else:
            log.warning("delivery_dead", **fields)

    def _lane(self, webhook_id: str) -> _Lane:
        lane = self._lanes.get(webhook_id)
        if lane is None:
            lane = self._lanes[webhook_id] = _Lane(webhook_id)
        return lane

    # -- shutdown ----------------------------------------------------------------------------------------

    def stop_claiming(self) -> None:
        self._stopping = True
        self._wake.set()

    async def drain(self, timeout: float) -> None:
        """Let attempts in flight finish within ``timeout``; give back the leases of those that did not."""
        tasks = {entry.task for entry in self._in_flight.values() if entry.task is not None}
        deadline = asyncio.get_running_loop().time() + timeout
        while tasks and (left := deadline - asyncio.get_running_loop().time()) > 0:
            _, tasks = await asyncio.wait(tasks, timeout=min(left, RENEW_EVERY))
            if tasks:  # the loop has stopped: the leases of attempts still running are renewed here
                await self._renew(self.clock.now())
        unfinished = list(self._in_flight.values())
        for entry in unfinished:
            if entry.task is not None:
                entry.task.cancel()
        for entry in unfinished:
            if entry.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await entry.task
        if unfinished:
            claims = [entry.claim for entry in unfinished]
            log.warning(
                "attempts_abandoned",
                count=len(claims),
                delivery_ids=[c.delivery_id for c in claims[:ABANDONED_NAMED]],
                webhook_ids=sorted({c.webhook_id for c in claims})[:ABANDONED_NAMED],
            )
            with contextlib.suppress(StoreError):
                await self.store.release(claims, self.clock.now())
