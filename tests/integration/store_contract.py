"""The store contract: what every backend of ``relay.store.Store`` does, whatever it keeps its data in.

``StoreContract`` is not collected by itself (its name does not start with ``Test``). Each backend's test module
subclasses it as ``Test<Backend>Store`` and overrides the ``make_store`` fixture: a function that makes a new,
unopened store on the same storage each time it is called (the same file, the same data), so that a test can
close a store and open its storage again, as a restart does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay.errors import Conflict, StoreUnavailable, ValidationError
from relay.models import EVERYTHING, Attempt, Claim, Delivery, DeliveryStatus, ErrorKind, Scope
from relay.store import (
    Activity,
    AttemptResult,
    HourCount,
    IngestResult,
    NewEvent,
    Room,
    Store,
    TenantKey,
    WebhookActivity,
)

T0 = 1_700_000_000.0
S = DeliveryStatus


def event(event_id: str, *webhooks: str, event_type: str = "t", created_at: str = "2024-01-15T10:35:00Z") -> NewEvent:
    return NewEvent(event_id, event_type, created_at, b'{"n":1}', tuple(webhooks))


def keyed(event_id: str, key: str, **orderings: str) -> NewEvent:
    """An event with ordering key ``key`` to the webhooks named, each with its ordering ("fifo", "latest", "none")."""
    return NewEvent(
        event_id,
        "t",
        "2024-01-15T10:35:00Z",
        b'{"n":1}',
        tuple(orderings),
        ordering_key=key,
        orderings=tuple(orderings.values()),
    )


def tenant_event(event_id: str, tenant: str | None, *webhooks: str) -> NewEvent:
    return NewEvent(event_id, "t", "2024-01-15T10:35:00Z", b'{"n":1}', tuple(webhooks), tenant=tenant)


async def tenants_ab(store: Store) -> None:
    """Tenant a: a config-declared webhook "ca" and an API one "wa"; tenant b: "wb"; "p" is platform-wide. Events
    "ea" (a's: to ca, wa, p), "eb" (b's: to wb, p) and "e0" (no tenant: to p)."""
    await store.sync_config_webhooks({"ca": b'{"id":"ca","tenant":"a"}', "p": b'{"id":"p","tenant":null}'}, T0)
    assert await store.insert_api_webhook("wa", b'{"url":"a","tenant":"a"}', T0)
    assert await store.insert_api_webhook("wb", b'{"url":"b","tenant":"b"}', T0)
    await store.ingest(
        [tenant_event("ea", "a", "ca", "wa", "p"), tenant_event("eb", "b", "wb", "p"), tenant_event("e0", None, "p")],
        T0,
    )


def tenant_key(key_id: str, tenant: str, at: float) -> TenantKey:
    return TenantKey(key_id, tenant, f"rk_{key_id}", f"key {key_id}", at, None)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def attempt(number: int, at: float, *, ok: bool, next_at: float | None = None) -> Attempt:
    return Attempt(number, at, 12.5, 200 if ok else 500, None if ok else ErrorKind.HTTP_ERROR, None, "body", next_at)


def instant(number: int, at: float, *, ok: bool, next_at: float | None = None) -> Attempt:
    """``attempt`` taking no time: it ends when it starts (the time its key moves on)."""
    return replace(attempt(number, at, ok=ok, next_at=next_at), duration_ms=0.0)


def result(claim: Claim, tried: Attempt, status: DeliveryStatus) -> AttemptResult:
    """The result of the attempt ``tried`` on ``claim``, due again when that attempt says (if at all)."""
    return AttemptResult(claim.lease, claim.delivery_id, claim.webhook_id, tried, status, tried.next_attempt_at)


class Stores:
    """Opens stores on one storage and closes every one it opened at the end of the test."""

    def __init__(self, make: Callable[[], Store]) -> None:
        self.make = make
        self.opened: list[Store] = []

    async def open(self) -> Store:
        store = self.make()
        await store.open()
        self.opened.append(store)
        return store

    async def reopen(self, store: Store) -> Store:
        """A restart: ``store`` closes, a new store opens the same storage."""
        await store.close()
        return await self.open()

    async def close(self) -> None:
        for store in self.opened:
            await store.close()


async def pages(fetch: Callable[[str | None], Awaitable[tuple[list[str], str | None]]]) -> list[list[str]]:
    """Every page of a list, from the first to the last, each as the ids it holds."""
    found: list[list[str]] = []
    cursor = None
    while True:
        ids, cursor = await fetch(cursor)
        found.append(ids)
        if cursor is None:
            return found
        assert len(found) < 10_000, "the list does not end"


async def event_pages(store: Store, limit: int, **filters: Any) -> list[list[str]]:
    given = {"event_type": None, "since": None, "until": None, "scope": EVERYTHING, **filters}

    async def fetch(cursor: str | None) -> tuple[list[str], str | None]:
        page = await store.list_events(cursor=cursor, limit=limit, **given)
        return [e.id for e in page.events], page.next_cursor

    return await pages(fetch)


async def delivery_pages(store: Store, limit: int, **filters: Any) -> list[list[str]]:
    """Pages of deliveries, each as ``event_id/webhook_id`` of the deliveries it holds."""
    given = {"webhook_id": None, "status": None, "since": None, "until": None, "scope": EVERYTHING, **filters}

    async def fetch(cursor: str | None) -> tuple[list[str], str | None]:
        page = await store.list_deliveries(cursor=cursor, limit=limit, **given)
        return [f"{d.event_id}/{d.webhook_id}" for d in page.deliveries], page.next_cursor

    return await pages(fetch)


def flat(found: list[list[str]]) -> list[str]:
    return [item for page in found for item in page]


async def delivery_of(store: Store, event_id: str, webhook_id: str) -> Delivery:
    """The last delivery of ``event_id`` to ``webhook_id`` (a replay adds one)."""
    found = await store.get_event(event_id, scope=EVERYTHING)
    assert found is not None
    return [d for d in found[1] if d.webhook_id == webhook_id][-1]


async def claimed(store: Store, webhook_id: str, now: float, limit: int = 10) -> list[Claim]:
    return (await store.claim(webhook_id, limit, now, now + 60))[0]


async def succeed(store: Store, claim: Claim, at: float) -> None:
    await store.record([result(claim, instant(claim.attempt_number, at, ok=True), S.SUCCEEDED)])


async def status_of(store: Store, event_id: str) -> dict[str, DeliveryStatus]:
    found = await store.get_event(event_id, scope=EVERYTHING)
    assert found is not None
    return {d.webhook_id: d.status for d in found[1]}


H = T0 - T0 % 3600  # the start of the hour holding T0


def tried(claim: Claim, at: float, *, ok: bool, owner: str | None = None) -> AttemptResult:
    """An attempt of ``claim`` started at ``at``: succeeded, or failed for good (dead); recorded by the relay ``owner``
    when given (another node than the one that claimed)."""
    done = result(claim, attempt(1, at, ok=ok), S.SUCCEEDED if ok else S.DEAD)
    return done if owner is None else replace(done, lease=replace(claim.lease, owner=owner))


async def attempted(store: Store, webhook_id: str, *moments: tuple[float, bool]) -> None:
    """One new delivery to ``webhook_id`` per moment, each attempted once then (succeeded or not), one by one."""
    for at, ok in moments:
        await store.ingest([event(f"evt_{webhook_id}_{at}", webhook_id)], at)
        [claim] = await claimed(store, webhook_id, at)
        await store.record([tried(claim, at, ok=ok)])


def hours(activity: Activity) -> list[tuple[float, int, int]]:
    return [(h.start, h.attempts, h.failures) for h in activity.hours]


class StoreContract:
    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        raise NotImplementedError("a backend's test class provides make_store")

    @pytest.fixture
    async def stores(self, make_store: Callable[[], Store]) -> AsyncIterator[Stores]:
        stores = Stores(make_store)
        yield stores
        await stores.close()

    @pytest.fixture
    async def store(self, stores: Stores) -> Store:
        return await stores.open()

    # -- ingest ------------------------------------------------------------------------------------------

    async def test_ingest_commits_events_and_one_delivery_per_webhook(self, store: Store) -> None:
        results = await store.ingest([event("e1", "a", "b"), event("e2")], T0)
        assert [(r.id, r.deliveries, r.created) for r in results] == [("e1", 2, True), ("e2", 0, True)]
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        _, deliveries = found
        assert sorted(d.webhook_id for d in deliveries) == ["a", "b"]
        assert all(d.status is DeliveryStatus.PENDING and d.next_attempt_at == T0 for d in deliveries)

    async def test_a_known_id_answers_as_the_first_time(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [again] = await store.ingest([event("e1", "a", "b")], T0 + 1)
        assert (again.deliveries, again.created) == (1, False)

    async def test_a_generated_id_a_producer_already_used_is_replaced(self, store: Store) -> None:
        """Generated ids count up, so a producer can post one before relay makes it: relay's event gets another,
        whether the producer's event is stored already or comes earlier in the same group."""
        await store.ingest([event("evt_taken", "a")], T0)
        foreseen, twin = event("evt_taken", "a", "b"), event("evt_twin", "a")
        foreseen.generated = twin.generated = True
        results = await store.ingest([event("evt_twin"), foreseen, twin], T0 + 1)
        assert [r.created for r in results] == [True, True, True]
        ids = [r.id for r in results]
        assert ids[0] == "evt_twin" and len({"evt_taken", *ids}) == 4
        assert all(i.startswith("evt_") for i in ids)
        found = await store.get_event(ids[1], scope=EVERYTHING)
        assert found is not None
        assert sorted(d.webhook_id for d in found[1]) == ["a", "b"]
        first = await store.get_event("evt_taken", scope=EVERYTHING)
        assert first is not None and [d.webhook_id for d in first[1]] == ["a"]

    async def test_concurrent_duplicates_in_one_group_are_stored_once(self, store: Store) -> None:
        first, second = await asyncio.gather(
            store.ingest([event("same", "a")], T0), store.ingest([event("same", "a")], T0)
        )
        assert first[0].created != second[0].created
        assert first[0].deliveries == second[0].deliveries == 1
        found = await store.get_event("same", scope=EVERYTHING)
        assert found is not None and len(found[1]) == 1

    async def test_submit_ingest_resolves_once_committed(self, store: Store) -> None:
        future = store.submit_ingest([event("e1", "a")], T0)
        [answer] = await future
        assert (answer.id, answer.created) == ("e1", True)
        assert await store.get_event("e1", scope=EVERYTHING) is not None

    async def test_on_commit_runs_before_the_answer_and_also_for_a_cancelled_one(self, store: Store) -> None:
        seen: list[tuple[str, Any]] = []

        def on_commit(results: list[IngestResult] | None) -> None:
            seen.append(("committed", None if results is None else [r.id for r in results]))

        future = store.submit_ingest([event("e1", "a")], T0, None, on_commit)
        future.add_done_callback(lambda _: seen.append(("answered", None)))
        await asyncio.sleep(0)  # the done callback runs on the loop's next turn
        await future
        await asyncio.sleep(0)
        assert seen == [("committed", ["e1"]), ("answered", None)]

        seen.clear()
        cancelled = store.submit_ingest([event("e2", "a")], T0, None, on_commit)
        cancelled.cancel()  # its request went away: the commit and its bookkeeping go on
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.005)
        assert seen == [("committed", ["e2"])]
        assert await store.get_event("e2", scope=EVERYTHING) is not None

    # -- tenants (CONTRACT §9) ------------------------------------------------------------------------------

    async def test_reads_inside_a_tenant_see_its_events_and_its_webhooks_deliveries(self, store: Store) -> None:
        await tenants_ab(store)
        a = Scope("a")
        found = await store.get_event("ea", scope=a)
        assert found is not None and found[0].tenant == "a"
        assert sorted(d.webhook_id for d in found[1]) == ["ca", "wa"]  # not the platform's "p"
        assert await store.get_event("eb", scope=a) is None and await store.get_event("e0", scope=a) is None
        everything = await store.get_event("ea", scope=EVERYTHING)
        assert everything is not None and sorted(d.webhook_id for d in everything[1]) == ["ca", "p", "wa"]
        assert flat(await event_pages(store, 10, scope=a)) == ["ea"]
        assert flat(await event_pages(store, 1, scope=Scope("b"))) == ["eb"]
        assert flat(await event_pages(store, 10, scope=Scope("nobody"))) == []
        assert flat(await event_pages(store, 10)) == ["e0", "eb", "ea"]
        assert sorted(flat(await delivery_pages(store, 1, scope=a))) == ["ea/ca", "ea/wa"]
        assert flat(await delivery_pages(store, 10, scope=a, webhook_id="p")) == []
        assert flat(await delivery_pages(store, 10, scope=a, webhook_id="wb")) == []
        assert sorted(flat(await delivery_pages(store, 10))) == ["e0/p", "ea/ca", "ea/p", "ea/wa", "eb/p", "eb/wb"]
        assert await store.status_counts(scope=a) == {"ca": {"pending": 1}, "wa": {"pending": 1}}
        assert set(await store.status_counts(scope=EVERYTHING)) == {"ca", "wa", "wb", "p"}
        assert await store.status_totals(scope=a) == {"pending": 2}
        assert await store.status_totals(scope=Scope("b"), succeeded=False) == {"pending": 1}
        assert await store.status_totals(scope=Scope("nobody")) == {}

    async def test_an_event_summary_counts_the_deliveries_inside_the_scope(self, store: Store) -> None:
        await tenants_ab(store)
        page = await store.list_events(event_type=None, since=None, until=None, cursor=None, limit=10, scope=Scope("a"))
        assert [(e.id, e.tenant, e.deliveries) for e in page.events] == [("ea", "a", 2)]
        page = await store.list_events(event_type=None, since=None, until=None, cursor=None, limit=10, scope=EVERYTHING)
        assert [(e.id, e.tenant, e.deliveries) for e in page.events] == [
            ("e0", None, 1),
            ("eb", "b", 2),
            ("ea", "a", 3),
        ]

    async def test_replay_inside_a_tenant_finds_only_its_events(self, store: Store) -> None:
        await tenants_ab(store)
        a = Scope("a")
        assert await store.replay("eb", ["wa"], T0 + 1, scope=a) is None
        assert await store.replay("e0", ["wa"], T0 + 1, scope=a) is None
        replayed = await store.replay("ea", ["wa"], T0 + 1, scope=a)
        assert replayed is not None and [(d.event_id, d.webhook_id) for d in replayed] == [("ea", "wa")]
        found = await store.get_event("eb", scope=EVERYTHING)
        assert found is not None and len(found[1]) == 2  # b's event got nothing

    async def test_tenant_keys_are_found_by_digest_listed_touched_and_deleted(self, store: Store) -> None:
        await store.insert_tenant_key(tenant_key("k2", "a", T0 + 1), b"d2" * 16)
        await store.insert_tenant_key(tenant_key("k1", "a", T0), b"d1" * 16)
        await store.insert_tenant_key(tenant_key("k3", "b", T0), b"d3" * 16)
        assert await store.tenant_key_by_digest(b"d1" * 16) == tenant_key("k1", "a", T0)
        assert await store.tenant_key_by_digest(b"d9" * 16) is None
        assert [k.id for k in await store.tenant_keys("a")] == ["k1", "k2"]  # oldest first
        assert await store.tenant_keys("nobody") == []
        await store.touch_tenant_key("k1", T0 + 60)
        found = await store.tenant_key_by_digest(b"d1" * 16)
        assert found is not None and found.last_used_at == T0 + 60
        assert [k.last_used_at for k in await store.tenant_keys("a")] == [T0 + 60, None]
        assert not await store.delete_tenant_key("b", "k1")  # not b's
        assert await store.delete_tenant_key("a", "k1")
        assert not await store.delete_tenant_key("a", "k1")
        assert await store.tenant_key_by_digest(b"d1" * 16) is None
        assert [k.id for k in await store.tenant_keys("a")] == ["k2"]
        assert [k.id for k in await store.tenant_keys("b")] == ["k3"]

    async def test_tenant_summaries_count_webhooks_keys_and_deliveries(self, store: Store) -> None:
        await tenants_ab(store)
        await store.insert_tenant_key(tenant_key("k1", "a", T0), b"d1" * 16)
        await store.insert_tenant_key(tenant_key("kc", "c", T0), b"dc" * 16)
        [claim], _ = await store.claim("wa", 1, T0, T0 + 60)
        await store.record([result(claim, attempt(1, T0, ok=True), S.SUCCEEDED)])
        summaries = await store.tenant_summaries()
        assert [(t.id, t.webhooks, t.keys, t.deliveries) for t in summaries] == [
            ("a", 2, 1, {"pending": 1, "succeeded": 1}),
            ("b", 1, 0, {"pending": 1}),
            ("c", 0, 1, {}),
        ]
        assert [t.id for t in await store.tenant_summaries("b")] == ["b"]
        assert await store.tenant_summaries("nobody") == []

    async def test_deleting_a_tenant_removes_its_api_webhooks_and_keys_and_nothing_else(self, store: Store) -> None:
        await tenants_ab(store)
        await store.insert_tenant_key(tenant_key("k1", "a", T0), b"d1" * 16)
        await store.insert_tenant_key(tenant_key("k3", "b", T0), b"d3" * 16)
        assert await store.tenant_removed_at("a") is None
        removed = await store.delete_tenant("a", T0 + 5)
        assert (removed.webhook_ids, removed.cancelled, removed.keys) == (["wa"], 1, 1)
        assert await status_of(store, "ea") == {"ca": S.PENDING, "wa": S.CANCELLED, "p": S.PENDING}
        assert await status_of(store, "eb") == {"wb": S.PENDING, "p": S.PENDING}
        assert await store.api_webhook("wa") is None and await store.api_webhook("wb") is not None
        assert await store.claim("wa", 10, T0 + 100, T0 + 160) == ([], None)
        assert await store.tenant_key_by_digest(b"d1" * 16) is None
        assert await store.tenant_key_by_digest(b"d3" * 16) is not None
        assert await store.tenant_removed_at("a") == T0 + 5 and await store.tenant_removed_at("b") is None
        assert [(t.id, t.webhooks, t.keys) for t in await store.tenant_summaries()] == [("a", 1, 0), ("b", 1, 1)]
        await store.delete_tenant("a", T0 + 9)
        assert await store.tenant_removed_at("a") == T0 + 9  # the last deletion

    async def test_an_api_webhook_past_its_tenants_quota_is_a_conflict(self, store: Store) -> None:
        await tenants_ab(store)  # a holds two (one config-declared), b one
        with pytest.raises(Conflict):
            await store.insert_api_webhook("wa2", b'{"tenant":"a"}', T0, max_per_tenant=2)
        assert await store.api_webhook("wa2") is None
        assert await store.insert_api_webhook("wb2", b'{"tenant":"b"}', T0, max_per_tenant=2)
        assert await store.insert_api_webhook("p2", b"{}", T0, max_per_tenant=1)  # platform-wide: no quota
        assert await store.insert_api_webhook("wa3", b'{"tenant":"a"}', T0)  # no quota asked

    async def test_an_id_of_another_tenants_event_stores_nothing_of_the_request(self, store: Store) -> None:
        await tenants_ab(store)
        results = await store.ingest([tenant_event("fresh", "b", "wb"), tenant_event("ea", "b", "wb")], T0 + 1)
        assert [(r.id, r.created, r.taken) for r in results] == [("fresh", False, False), ("ea", False, True)]
        assert await store.get_event("fresh", scope=EVERYTHING) is None
        [taken] = await store.ingest([tenant_event("e0", "b", "wb")], T0 + 1)  # no tenant's is not b's either
        assert taken.taken and not taken.created
        [taken] = await store.ingest([tenant_event("eb", None, "p")], T0 + 1)  # nor is b's an admin's of none
        assert taken.taken
        [again] = await store.ingest([tenant_event("eb", "b", "wb", "p")], T0 + 1)
        assert (again.created, again.taken, again.deliveries) == (False, False, 2)  # its own: the first answer
        found = await store.get_event("ea", scope=EVERYTHING)
        assert found is not None and found[0].tenant == "a" and len(found[1]) == 3
        assert flat(await event_pages(store, 10)) == ["e0", "eb", "ea"]

    async def test_an_id_taken_within_one_group_stores_nothing_of_the_later_request(self, store: Store) -> None:
        first = store.submit_ingest([tenant_event("x", "a", "wa")], T0)
        second = store.submit_ingest([tenant_event("y", "b"), tenant_event("x", "b")], T0)
        [one], two = await first, await second
        assert (one.id, one.created, one.taken) == ("x", True, False), one
        assert [(r.id, r.created, r.taken) for r in two] == [("y", False, False), ("x", False, True)]
        assert await store.get_event("y", scope=EVERYTHING) is None
        found = await store.get_event("x", scope=EVERYTHING)
        assert found is not None and found[0].tenant == "a"

    async def test_an_id_held_by_a_refused_request_of_the_group_is_free_for_a_later_one(self, store: Store) -> None:
        await store.ingest([tenant_event("of-a", "a")], T0)
        refused = store.submit_ingest([tenant_event("y", "b"), tenant_event("of-a", "b")], T0 + 1)
        later = store.submit_ingest([tenant_event("y", "a")], T0 + 1)
        got = await refused
        assert [r.taken for r in got] == [False, True], got
        [stored] = await later
        assert (stored.id, stored.created, stored.taken) == ("y", True, False)
        found = await store.get_event("y", scope=EVERYTHING)
        assert found is not None and found[0].tenant == "a"

    async def test_the_signing_key_is_made_once_and_kept(self, store: Store, stores: Stores) -> None:
        key = await store.signing_key()
        assert len(key) >= 32 and await store.signing_key() == key
        assert await (await stores.reopen(store)).signing_key() == key

    # -- dashboard sessions signed out -------------------------------------------------------------------

    async def test_an_ended_session_stays_ended_and_no_other_does(self, store: Store, stores: Stores) -> None:
        assert not await store.session_ended("n1")
        await store.end_session("n1", T0 + 3600, T0)
        assert await store.session_ended("n1") and not await store.session_ended("n2")
        assert not await store.session_ended("")  # a portal link's nonce is never one
        await store.end_session("n1", T0 + 3600, T0 + 1)  # signed out twice (two tabs): still ended
        assert await store.session_ended("n1")
        assert await (await stores.reopen(store)).session_ended("n1")

    async def test_ended_sessions_past_their_expiry_go_at_the_next_end(self, store: Store) -> None:
        await store.end_session("short", T0 + 10, T0)
        await store.end_session("long", T0 + 3600, T0)
        await store.end_session("edge", T0 + 20, T0 + 1)
        assert [await store.session_ended(n) for n in ("short", "long", "edge")] == [True, True, True]
        await store.end_session("later", T0 + 7200, T0 + 20)  # expiry at or before now: forgotten
        assert [await store.session_ended(n) for n in ("short", "long", "edge", "later")] == [False, True, False, True]

    # -- claims and leases -------------------------------------------------------------------------------

    async def test_claim_leases_due_deliveries_oldest_first(self, store: Store) -> None:
        await store.ingest([event("e1", "a"), event("e2", "a"), event("e3", "b")], T0)
        claims, next_due = await store.claim("a", 10, T0, T0 + 60)
        assert [c.event.id for c in claims] == ["e1", "e2"]
        assert all(c.attempt_number == 1 and c.event.data == b'{"n":1}' for c in claims)
        assert next_due == T0 + 60  # the leases run out then
        assert await store.claim("a", 10, T0, T0 + 60) == ([], T0 + 60)  # leased
        claims, _ = await store.claim("a", 10, T0 + 61, T0 + 120)
        assert [c.event.id for c in claims] == ["e1", "e2"]  # ran out
        assert await store.claim("c", 10, T0, T0 + 60) == ([], None)  # nothing queued

    async def test_a_limited_claim_takes_the_earliest_due_and_answers_in_creation_order(self, store: Store) -> None:
        await store.ingest([event("e1", "a"), event("e2", "a"), event("e3", "a"), event("e4", "a")], T0)
        first, second, third, fourth = (await store.claim("a", 4, T0, T0 + 10))[0]
        # Due again at different times: e3 first, then e1 and e4 together, e2 last.
        await store.record([result(third, attempt(1, T0, ok=False, next_at=T0 + 20), S.PENDING)])
        await store.record([result(fourth, attempt(1, T0, ok=False, next_at=T0 + 30), S.PENDING)])
        await store.record([result(first, attempt(1, T0, ok=False, next_at=T0 + 30), S.PENDING)])
        await store.record([result(second, attempt(1, T0, ok=False, next_at=T0 + 40), S.PENDING)])
        claims, next_due = await store.claim("a", 3, T0 + 100, T0 + 200)
        assert [c.event.id for c in claims] == ["e1", "e3", "e4"]  # the 3 earliest due; created first, first
        assert next_due == T0 + 40
        assert [c.attempt_number for c in claims] == [2, 2, 2]
        assert all(c.lease.until == T0 + 200 for c in claims)

    async def test_claims_carry_the_event_and_a_lease_until_the_time_asked(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [claim], _ = await store.claim("a", 1, T0 + 5, T0 + 65)
        assert (claim.webhook_id, claim.attempt_number, claim.created_at) == ("a", 1, T0)
        assert (claim.event.id, claim.event.type, claim.event.ingested_at) == ("e1", "t", T0)
        assert claim.event.created_at == "2024-01-15T10:35:00Z"
        assert claim.lease.until == T0 + 65 and claim.lease.owner
        assert claim.delivery_id.startswith("dlv_")
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        [delivery] = found[1]
        assert (delivery.id, delivery.status, delivery.next_attempt_at) == (claim.delivery_id, S.DELIVERING, None)

    async def test_ingest_can_commit_new_deliveries_already_leased(self, store: Store) -> None:
        await store.ingest([event("old", "a")], T0)
        rooms = {"a": Room(2, T0 + 70), "b": Room(5, T0 + 80)}
        results = await store.ingest(
            [event("old", "a"), event("e1", "a", "b"), event("e2", "a", "c"), event("e3", "a")], T0 + 1, rooms
        )
        assert [r.created for r in results] == [False, True, True, True]
        assert results[0].leased == ()  # a known id takes no room
        leased = [claim for r in results for claim in r.leased]
        assert [(c.event.id, c.webhook_id) for c in leased] == [("e1", "a"), ("e1", "b"), ("e2", "a")]  # a: 2 only
        first = leased[0]
        assert (first.attempt_number, first.created_at, first.event.data) == (1, T0 + 1, b'{"n":1}')
        assert first.event.ingested_at == T0 + 1 and first.event.created_at == "2024-01-15T10:35:00Z"
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        assert {(d.id, d.status) for d in found[1]} == {(c.delivery_id, DeliveryStatus.DELIVERING) for c in leased[:2]}
        assert found[0] == first.event and [c.lease.until for c in leased] == [T0 + 70, T0 + 80, T0 + 70]
        # Not claimable while leased: only what was committed pending is, until the lease runs out.
        claims, next_due = await store.claim("a", 10, T0 + 1, T0 + 300)
        assert sorted(c.event.id for c in claims) == ["e3", "old"] and next_due == T0 + 70
        assert (await store.claim("a", 10, T0 + 69, T0 + 200))[0] == []  # e1 and e2 leased until T0 + 70 ...
        claims, _ = await store.claim("a", 10, T0 + 70, T0 + 200)
        assert sorted(c.event.id for c in claims) == ["e1", "e2"]  # ... then due again
        assert [c.event.id for c in (await store.claim("c", 10, T0 + 1, T0 + 60))[0]] == ["e2"]

    async def test_a_result_under_a_lease_that_ran_out_and_was_claimed_again_is_ignored(self, store: Store) -> None:
        """Fencing: the relay that stalled past its lease cannot overwrite what the newer lease holds."""
        await store.ingest([event("e1", "a")], T0)
        [stale], _ = await store.claim("a", 1, T0, T0 + 60)
        [fresh], _ = await store.claim("a", 1, T0 + 61, T0 + 120)  # the lease ran out: claimed again
        assert fresh.delivery_id == stale.delivery_id and fresh.attempt_number == stale.attempt_number == 1
        await store.record([result(stale, attempt(1, T0 + 1, ok=True), S.SUCCEEDED)])  # the stalled one ends
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        [delivery] = found[1]
        assert (delivery.status, delivery.attempt_count) == (S.DELIVERING, 0)
        assert await store.claim("a", 1, T0 + 119, T0 + 200) == ([], T0 + 120)  # still under the fresh lease
        await store.record([result(fresh, attempt(1, T0 + 61, ok=False, next_at=T0 + 500), S.PENDING)])
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        [delivery] = found[1]
        assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == (S.PENDING, 1, T0 + 500)
        assert [(a.number, a.status_code) for a in delivery.attempts] == [(1, 500)]  # the fresh attempt's

    async def test_renew_extends_the_leases_still_held(self, store: Store) -> None:
        await store.ingest([event("e1", "a"), event("e2", "a")], T0)
        claims, _ = await store.claim("a", 2, T0, T0 + 20)
        renewed = await store.renew(claims, T0 + 10, T0 + 40)
        assert [c.delivery_id for c in renewed] == [c.delivery_id for c in claims]
        for claim in renewed:
            claim.lease.until = T0 + 40
        assert await store.claim("a", 5, T0 + 30, T0 + 60) == ([], T0 + 40)  # not claimable: the lease goes on
        await store.record([result(claims[0], attempt(1, T0 + 31, ok=True), S.SUCCEEDED)])  # under the renewed lease
        assert await status_of(store, "e1") == {"a": S.SUCCEEDED}
        [again], _ = await store.claim("a", 5, T0 + 40, T0 + 60)  # e2 ran out once the renewed lease did
        assert again.delivery_id == claims[1].delivery_id

    async def test_a_lease_taken_over_is_not_renewed_and_its_result_is_ignored(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [stale], _ = await store.claim("a", 1, T0, T0 + 20)
        [fresh], _ = await store.claim("a", 1, T0 + 21, T0 + 50)  # it ran out: another claim took it over
        assert await store.renew([stale], T0 + 22, T0 + 60) == []
        assert await store.claim("a", 1, T0 + 49, T0 + 80) == ([], T0 + 50)  # the fresh lease's end held
        await store.record([result(stale, attempt(1, T0 + 23, ok=True), S.SUCCEEDED)])
        assert await status_of(store, "e1") == {"a": S.DELIVERING}
        assert fresh.delivery_id == stale.delivery_id

    async def test_a_result_recorded_twice_counts_once(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        failed = result(claim, attempt(1, T0, ok=False, next_at=T0 + 5), S.PENDING)
        await store.record([failed])
        await store.record([result(claim, attempt(1, T0, ok=True), S.SUCCEEDED)])  # the lease is spent
        assert await status_of(store, "e1") == {"a": S.PENDING}

    async def test_a_release_under_a_stale_lease_changes_nothing(self, store: Store) -> None:
        await store.ingest([event("e1", "a"), event("e2", "a")], T0)
        [stale, done], _ = await store.claim("a", 2, T0, T0 + 60)
        [fresh], _ = await store.claim("a", 1, T0 + 61, T0 + 120)  # e1's lease ran out; claimed again
        assert fresh.delivery_id == stale.delivery_id
        await store.record([result(done, attempt(1, T0, ok=True), S.SUCCEEDED)])
        await store.release([stale, done], T0 + 62)  # neither still holds its delivery
        assert await status_of(store, "e1") == {"a": S.DELIVERING}
        assert await status_of(store, "e2") == {"a": S.SUCCEEDED}
        assert await store.claim("a", 5, T0 + 62, T0 + 200) == ([], T0 + 120)
        await store.release([fresh], T0 + 63)  # the live lease gives it back: due at once
        assert await store.due_by_webhook() == {"a": T0 + 63}

    async def test_reclaim_and_release_make_leased_deliveries_due_at_once(self, store: Store, stores: Stores) -> None:
        await store.ingest([event("e1", "a"), event("e2", "a")], T0)
        claims, _ = await store.claim("a", 2, T0, T0 + 600)
        await store.release([claims[0]], T0 + 1)
        again, _ = await store.claim("a", 5, T0 + 1, T0 + 600)
        assert [c.event.id for c in again] == ["e1"]
        store = await stores.reopen(store)  # a restart: the leases of the relay's earlier life are abandoned
        assert await store.reclaim_abandoned(T0 + 2) == 2
        assert await store.due_by_webhook() == {"a": T0 + 2}
        assert await store.reclaim_abandoned(T0 + 3) == 0

    async def test_due_by_webhook_is_the_earliest_due_time_of_what_is_queued(self, store: Store) -> None:
        assert await store.due_by_webhook() == {}
        await store.ingest([event("e1", "a", "b")], T0)
        await store.ingest([event("e2", "a", "c")], T0 + 5)
        [claim], _ = await store.claim("c", 1, T0 + 5, T0 + 50)
        assert await store.due_by_webhook() == {"a": T0, "b": T0, "c": T0 + 50}  # a lease counts until it ends
        await store.record([result(claim, attempt(1, T0 + 5, ok=True), S.SUCCEEDED)])
        assert await store.due_by_webhook() == {"a": T0, "b": T0}

    # -- results: retry, park, re-drive, dead ------------------------------------------------------------

    async def test_results_move_deliveries_and_keep_every_attempt(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        await store.record([result(claim, attempt(1, T0, ok=False, next_at=T0 + 60), DeliveryStatus.PENDING)])
        assert await store.claim("a", 1, T0 + 59, T0 + 120) == ([], T0 + 60)
        [claim], _ = await store.claim("a", 1, T0 + 60, T0 + 120)
        assert claim.attempt_number == 2
        await store.record([result(claim, attempt(2, T0 + 60, ok=True), DeliveryStatus.SUCCEEDED)])
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        [delivery] = found[1]
        assert delivery.status is DeliveryStatus.SUCCEEDED and delivery.attempt_count == 2
        assert [a.number for a in delivery.attempts] == [1, 2]
        assert delivery.attempts[0].error is ErrorKind.HTTP_ERROR and delivery.attempts[0].next_attempt_at == T0 + 60
        assert await store.claim("a", 1, T0 + 10_000, T0 + 10_060) == ([], None)  # nothing left queued

    async def test_a_parked_delivery_is_re_driven_on_its_interval_then_dies(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        await store.record([result(claim, attempt(1, T0, ok=False, next_at=T0 + 3600), S.FAILED)])  # parked
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        [parked] = found[1]
        assert (parked.status, parked.next_attempt_at, parked.attempt_count) == (S.FAILED, T0 + 3600, 1)
        assert await store.due_by_webhook() == {"a": T0 + 3600}
        assert await store.claim("a", 1, T0 + 3599, T0 + 3700) == ([], T0 + 3600)
        [claim], _ = await store.claim("a", 1, T0 + 3600, T0 + 3700)  # the re-drive interval came
        assert claim.attempt_number == 2
        await store.record([result(claim, attempt(2, T0 + 3600, ok=False), S.DEAD)])
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        [dead] = found[1]
        assert (dead.status, dead.next_attempt_at, dead.attempt_count) == (S.DEAD, None, 2)
        assert await store.due_by_webhook() == {}
        assert await store.claim("a", 1, T0 + 99_999, T0 + 100_000) == ([], None)

    async def test_redrive_makes_parked_and_with_include_dead_dead_deliveries_due_now(self, store: Store) -> None:
        await store.ingest([event("p", "a", "b"), event("d", "a"), event("ok", "a")], T0)
        for webhook in ("a", "b"):
            for claim in (await store.claim(webhook, 10, T0, T0 + 60))[0]:
                status = {"p": S.FAILED, "d": S.DEAD, "ok": S.SUCCEEDED}[claim.event.id]
                next_at = T0 + 3600 if status is S.FAILED else None
                await store.record([result(claim, attempt(1, T0, ok=status is S.SUCCEEDED, next_at=next_at), status)])
        assert await store.redrive(T0 + 10, ["a"], include_dead=False) == {"a": 1}
        assert await status_of(store, "p") == {"a": S.PENDING, "b": S.FAILED}  # only the webhooks named
        assert await status_of(store, "d") == {"a": S.DEAD}
        assert await store.redrive(T0 + 20, ["a", "b"], include_dead=True) == {"a": 1, "b": 1}
        assert await status_of(store, "d") == {"a": S.PENDING}
        assert await status_of(store, "ok") == {"a": S.SUCCEEDED}
        assert await store.redrive(T0 + 30, ["a", "b"], include_dead=True) == {}
        claims, _ = await store.claim("a", 10, T0 + 20, T0 + 80)
        assert sorted(c.event.id for c in claims) == ["d", "p"] and {c.attempt_number for c in claims} == {2}

    # -- replay and cancel -------------------------------------------------------------------------------

    async def test_replay_adds_new_deliveries_of_a_stored_event_due_now(self, store: Store) -> None:
        await store.ingest([event("e1", "a")], T0)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        await store.record([result(claim, attempt(1, T0, ok=True), S.SUCCEEDED)])
        replayed = await store.replay("e1", ["a", "b"], T0 + 100, scope=EVERYTHING)
        assert replayed is not None
        assert [(d.webhook_id, d.event_id, d.status) for d in replayed] == [
            ("a", "e1", S.PENDING),
            ("b", "e1", S.PENDING),
        ]
        assert all(d.next_attempt_at == d.created_at == T0 + 100 and d.attempt_count == 0 for d in replayed)
        assert claim.delivery_id not in {d.id for d in replayed} and len({d.id for d in replayed}) == 2
        assert await store.replay("unknown", ["a"], T0 + 100, scope=EVERYTHING) is None
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None and [d.id for d in found[1]] == [claim.delivery_id, *(d.id for d in replayed)]
        [again] = await store.ingest([event("e1", "a")], T0 + 101)
        assert (again.created, again.deliveries) == (False, 1)  # the first answer, whatever was replayed
        [claimed], _ = await store.claim("a", 5, T0 + 100, T0 + 160)
        assert (claimed.delivery_id, claimed.attempt_number) == (replayed[0].id, 1)

    async def test_deleting_an_api_webhook_cancels_its_queued_deliveries(self, store: Store) -> None:
        assert await store.insert_api_webhook("a", b"{}", T0)
        await store.ingest([event("e1", "a", "b"), event("e2", "a")], T0)
        [done], _ = await store.claim("a", 1, T0, T0 + 60)
        await store.record([result(done, attempt(1, T0, ok=True), S.SUCCEEDED)])
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        await store.save_refresh_token("a", "rt")
        assert await store.delete_api_webhook("a", T0 + 1) == 1  # e2's; e1's had ended
        assert await store.delete_api_webhook("a", T0 + 2) is None
        assert await status_of(store, "e1") == {"a": S.SUCCEEDED, "b": S.PENDING}
        assert await status_of(store, "e2") == {"a": S.CANCELLED}
        found = await store.get_event("e2", scope=EVERYTHING)
        assert found is not None and found[1][0].next_attempt_at is None
        assert await store.claim("a", 10, T0 + 100, T0 + 160) == ([], None)
        assert await store.load_refresh_token("a") is None
        await store.record([result(claim, attempt(1, T0, ok=True), S.SUCCEEDED)])  # its attempt ends meanwhile
        assert await status_of(store, "e2") == {"a": S.CANCELLED}

    async def test_a_cancelled_delivery_stays_cancelled_when_its_attempt_ends(self, store: Store) -> None:
        await store.insert_api_webhook("a", b"{}", T0)
        await store.ingest([event("e1", "a")], T0)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        assert await store.delete_api_webhook("a", T0) == 1
        await store.record([result(claim, attempt(1, T0, ok=True), DeliveryStatus.SUCCEEDED)])
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None and found[1][0].status is DeliveryStatus.CANCELLED

    async def test_config_webhooks_sync_cancels_what_removed_ones_left(self, store: Store) -> None:
        await store.sync_config_webhooks({"a": b"{}", "b": b"{}"}, T0)
        await store.ingest([event("e1", "a", "b")], T0)
        assert await store.sync_config_webhooks({"b": b"{}"}, T0 + 1) == ["a"]
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None
        assert {d.webhook_id: d.status for d in found[1]} == {"a": "cancelled", "b": "pending"}

    # -- webhooks ----------------------------------------------------------------------------------------

    async def test_api_webhooks_are_created_read_updated_and_deleted(self, store: Store) -> None:
        assert await store.api_webhooks() == []
        assert await store.insert_api_webhook("w2", b'{"url":"2"}', T0 + 1)
        assert await store.insert_api_webhook("w1", b'{"url":"1"}', T0 + 1)
        assert not await store.insert_api_webhook("w1", b'{"url":"again"}', T0 + 2)  # taken
        assert [(w.id, w.spec, w.created_at) for w in await store.api_webhooks()] == [
            ("w1", b'{"url":"1"}', T0 + 1),
            ("w2", b'{"url":"2"}', T0 + 1),
        ]  # by creation time, then id
        assert await store.update_api_webhook("w1", b'{"url":"1b"}', T0 + 5)
        w1 = await store.api_webhook("w1")
        assert w1 is not None
        assert (w1.spec, w1.created_at, w1.updated_at, w1.previous_secret) == (b'{"url":"1b"}', T0 + 1, T0 + 5, None)
        assert await store.update_api_webhook("w1", b'{"url":"1c"}', T0 + 6, rotation=("whsec_old", T0 + 100))
        w1 = await store.api_webhook("w1")
        assert w1 is not None and (w1.previous_secret, w1.previous_secret_until) == ("whsec_old", T0 + 100)
        assert await store.update_api_webhook("w1", b'{"url":"1d"}', T0 + 7)  # no rotation: kept as it is
        w1 = await store.api_webhook("w1")
        assert w1 is not None and (w1.spec, w1.previous_secret) == (b'{"url":"1d"}', "whsec_old")
        assert await store.update_api_webhook("w1", b'{"url":"1e"}', T0 + 8, rotation=(None, None))
        w1 = await store.api_webhook("w1")
        assert w1 is not None and (w1.previous_secret, w1.previous_secret_until) == (None, None)
        assert not await store.update_api_webhook("nope", b"{}", T0 + 8)
        assert await store.delete_api_webhook("w2", T0 + 9) == 0
        assert await store.api_webhook("w2") is None
        assert [w.id for w in await store.api_webhooks()] == ["w1"]

    async def test_config_and_api_webhooks_never_change_each_other(self, store: Store) -> None:
        assert await store.sync_config_webhooks({"c": b'{"from":"config"}'}, T0) == []
        assert not await store.insert_api_webhook("c", b"{}", T0 + 1)  # the id is taken by any webhook
        assert await store.api_webhook("c") is None and await store.api_webhooks() == []
        assert not await store.update_api_webhook("c", b"{}", T0 + 1)
        assert await store.delete_api_webhook("c", T0 + 1) is None
        assert await store.insert_api_webhook("api", b'{"from":"api"}', T0 + 2)
        assert await store.sync_config_webhooks({"c": b"{}", "api": b'{"from":"config"}'}, T0 + 3) == []
        found = await store.api_webhook("api")
        assert found is not None and found.spec == b'{"from":"api"}'  # not overwritten by the config
        assert await store.webhook_created_at() == {"c": T0, "api": T0 + 2}  # a sync keeps the creation time
        assert await store.sync_config_webhooks({}, T0 + 4) == ["c"]  # API webhooks are not the config's to remove
        assert await store.webhook_created_at() == {"api": T0 + 2}

    # -- refresh tokens ----------------------------------------------------------------------------------

    async def test_refresh_tokens_rotate_and_survive_a_reopen(self, store: Store, stores: Stores) -> None:
        await store.save_refresh_token("w", "rt-1")
        assert await store.load_refresh_token("w") == "rt-1"
        await store.save_refresh_token("w", "rt-2")
        assert await store.load_refresh_token("w") == "rt-2"
        again = await stores.reopen(store)
        assert await again.load_refresh_token("w") == "rt-2"
        assert await again.load_refresh_token("other") is None

    # -- reads -------------------------------------------------------------------------------------------

    async def test_a_webhook_history_is_paged_newest_first_with_an_opaque_cursor(self, store: Store) -> None:
        await store.ingest([event(f"e{n}", "a", "b") for n in range(5)], T0)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)  # e0's
        await store.record([result(claim, attempt(1, T0, ok=True), S.SUCCEEDED)])
        found = await delivery_pages(store, 2, webhook_id="a")
        assert found == [["e4/a", "e3/a"], ["e2/a", "e1/a"], ["e0/a"]]
        page = await store.list_deliveries(
            webhook_id="a", status="succeeded", since=None, until=None, cursor=None, limit=10, scope=EVERYTHING
        )
        assert [(d.event_id, len(d.attempts)) for d in page.deliveries] == [("e0", 1)] and page.next_cursor is None
        assert await delivery_pages(store, 4, webhook_id="a", status="pending") == [["e4/a", "e3/a", "e2/a", "e1/a"]]
        assert await delivery_pages(store, 10, webhook_id="nobody") == [[]]

    async def test_deliveries_are_listed_across_webhooks_by_status_and_creation_time(self, store: Store) -> None:
        await store.ingest([event("e1", "a", "b")], T0)
        await store.ingest([event("e2", "b")], T0 + 10)
        await store.ingest([event("e3", "a", "c")], T0 + 20)
        [claim], _ = await store.claim("b", 1, T0 + 20, T0 + 60)  # e1's
        await store.record([result(claim, attempt(1, T0 + 21, ok=False), S.DEAD)])
        replayed = await store.replay("e1", ["c"], T0 + 30, scope=EVERYTHING)
        assert replayed is not None
        assert flat(await delivery_pages(store, 2)) == ["e1/c", "e3/c", "e3/a", "e2/b", "e1/b", "e1/a"]
        assert await delivery_pages(store, 10, status="dead") == [["e1/b"]]
        assert await delivery_pages(store, 10, webhook_id="c", status="pending") == [["e1/c", "e3/c"]]
        assert await delivery_pages(store, 10, webhook_id="c", status="succeeded") == [[]]
        # since is inclusive, until exclusive: [T0 + 10, T0 + 20) holds e2's delivery alone.
        assert await delivery_pages(store, 10, since=T0 + 10, until=T0 + 20) == [["e2/b"]]
        assert flat(await delivery_pages(store, 1, since=T0 + 20)) == ["e1/c", "e3/c", "e3/a"]
        assert await delivery_pages(store, 10, until=T0 + 10, webhook_id="b") == [["e1/b"]]
        assert await delivery_pages(store, 10, since=T0 + 5, until=T0 + 5) == [[]]
        assert await delivery_pages(store, 10, webhook_id="unknown") == [[]]

    async def test_events_are_listed_newest_first_as_ingested_with_their_delivery_counts(self, store: Store) -> None:
        await store.ingest([event("late", "a", "b", created_at="2024-03-01T00:00:00Z")], T0)
        await store.ingest([event("early", event_type="u", created_at="2024-01-01T00:00:00.25Z")], T0 + 5)
        await store.ingest([event("mid", "a", created_at="2024-02-01T00:00:00Z")], T0 + 9)
        await store.replay("late", ["c"], T0 + 10, scope=EVERYTHING)
        page = await store.list_events(event_type=None, since=None, until=None, cursor=None, limit=10, scope=EVERYTHING)
        assert page.next_cursor is None
        assert [(e.id, e.type, e.created_at, e.ingested_at, e.deliveries) for e in page.events] == [
            ("mid", "t", "2024-02-01T00:00:00Z", T0 + 9, 1),
            ("early", "u", "2024-01-01T00:00:00.25Z", T0 + 5, 0),
            ("late", "t", "2024-03-01T00:00:00Z", T0, 3),  # two at ingest, one replayed
        ]
        assert await event_pages(store, 1, event_type="t") == [["mid"], ["late"]]
        assert await event_pages(store, 10, event_type="nope") == [[]]

    async def test_created_at_bounds_compare_as_times_not_as_text(self, store: Store) -> None:
        """Normalised texts carry 0, 3 or 6 fractional digits: "…:00Z" sorts after "…:00.5Z" as text."""
        texts = {
            "before": "2024-01-15T10:34:59.999999Z",
            "whole": "2024-01-15T10:35:00Z",
            "micro": "2024-01-15T10:35:00.000001Z",
            "milli": "2024-01-15T10:35:00.499Z",
            "half": "2024-01-15T10:35:00.5Z",
            "next": "2024-01-15T10:35:01Z",
            "epoch": "1969-12-31T23:59:59.999Z",
            "far": "9999-12-31T23:59:59.999999Z",
        }
        await store.ingest([event(name, created_at=text) for name, text in texts.items()], T0)
        found = await event_pages(store, 10, since=at("2024-01-15T10:35:00Z"), until=at("2024-01-15T10:35:00.5Z"))
        assert found == [["milli", "micro", "whole"]]  # since inclusive, until exclusive
        found = await event_pages(store, 10, since=at("2024-01-15T10:35:00.000001Z"))
        assert found == [["far", "next", "half", "milli", "micro"]]
        assert await event_pages(store, 10, until=at("1970-01-01T00:00:00Z")) == [["epoch"]]
        assert await event_pages(store, 10, until=at("2024-01-15T10:35:00Z"), since=at("2000-01-01T00:00Z")) == [
            ["before"]
        ]
        assert await event_pages(store, 10, since=at("2024-01-15T10:35:00Z"), until=at("2024-01-15T10:35:00Z")) == [[]]

    async def test_event_pages_hold_every_match_once_whatever_is_ingested_meanwhile(self, store: Store) -> None:
        """Events created in no particular order: each window's pages are exactly its events, newest ingested first,
        none twice and none left out, while events of that window are ingested between pages. There are enough
        that a window far from the newest events is found past the first rows a backend may walk."""
        rng = random.Random(16)
        base = datetime(2024, 1, 1, tzinfo=UTC)
        created: dict[str, datetime] = {}
        newest_first: list[str] = []

        async def ingest(named: dict[str, datetime], now: float) -> None:
            made = [event(i, created_at=m.isoformat().replace("+00:00", "Z")) for i, m in named.items()]
            await store.ingest(made, now)
            created.update(named)
            newest_first[:0] = reversed(named)

        def moment() -> datetime:
            return base + timedelta(seconds=rng.randrange(86_400), microseconds=rng.choice([0, 500_000, 7]))

        await ingest({f"old{n}": moment() for n in range(300)}, T0)
        # The 2,000 newest were created after 06:00: the events of an earlier window were all ingested before them.
        await ingest({f"new{n}": max(moment(), base + timedelta(hours=6)) for n in range(2000)}, T0 + 1)
        windows = [
            (base, base + timedelta(hours=6)),
            (base + timedelta(hours=12), base + timedelta(hours=12, minutes=30)),  # a thin slice of both
            (base + timedelta(hours=23, minutes=59, seconds=59, microseconds=500_000), None),
            (None, base + timedelta(minutes=20)),
        ]
        for number, (since, until) in enumerate(windows):
            expected = [
                i
                for i in newest_first
                if (since is None or created[i] >= since) and (until is None or created[i] < until)
            ]
            inside = since if since is not None else until - timedelta(microseconds=1)
            got: list[str] = []
            cursor = None
            while True:
                page = await store.list_events(
                    event_type=None, since=since, until=until, cursor=cursor, limit=40, scope=EVERYTHING
                )
                got.extend(e.id for e in page.events)
                await ingest({f"meanwhile{number}.{len(got)}": inside}, T0 + 2)  # in the window, never in a next page
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert got == expected, (since, until)

    async def test_lists_combine_type_and_time_and_page_by_any_size(self, store: Store) -> None:
        rng = random.Random(7)
        base = datetime(2024, 1, 1, tzinfo=UTC)
        made = [
            event(f"e{n}", event_type=rng.choice(["a", "b"]), created_at=f"2024-01-01T00:{rng.randrange(60):02d}:00Z")
            for n in range(1200)
        ]
        await store.ingest(made, T0)
        since, until = base + timedelta(minutes=10), base + timedelta(minutes=12)
        expected = [
            e.id for e in reversed(made) if e.type == "b" and since <= datetime.fromisoformat(e.created_at) < until
        ]
        for limit in (1, 7, 500):
            found = await event_pages(store, limit, event_type="b", since=since, until=until)
            assert flat(found) == expected and all(len(page) == limit for page in found[:-1])
            assert 0 < len(found[-1]) <= limit or expected == []

    @pytest.mark.parametrize("cursor", ["", "abc", "-1", "1.5", "1" * 19, "١٢"])
    async def test_a_cursor_the_list_did_not_give_is_a_validation_error(self, store: Store, cursor: str) -> None:
        with pytest.raises(ValidationError) as raised:
            await store.list_deliveries(
                webhook_id="a", status=None, since=None, until=None, cursor=cursor, limit=10, scope=EVERYTHING
            )
        assert [p.path for p in raised.value.problems] == ["cursor"]
        with pytest.raises(ValidationError) as raised:
            await store.list_events(event_type=None, since=None, until=None, cursor=cursor, limit=10, scope=EVERYTHING)
        assert [p.path for p in raised.value.problems] == ["cursor"]

    async def test_status_counts_by_webhook_and_in_total(self, store: Store) -> None:
        assert await store.status_counts(scope=EVERYTHING) == {} and await store.status_totals() == {}
        await store.ingest([event("e1", "a", "b"), event("e2", "a")], T0)
        [claim], _ = await store.claim("b", 1, T0, T0 + 60)
        await store.record([result(claim, attempt(1, T0, ok=False), S.DEAD)])
        await store.claim("a", 1, T0, T0 + 60)
        assert await store.status_counts(scope=EVERYTHING) == {"a": {"delivering": 1, "pending": 1}, "b": {"dead": 1}}
        assert await store.status_totals() == {"delivering": 1, "pending": 1, "dead": 1}
        [claim] = [c for c in (await store.claim("a", 1, T0 + 1, T0 + 60))[0]]
        await store.record([result(claim, attempt(1, T0 + 1, ok=True), S.SUCCEEDED)])
        assert await store.status_totals() == {"delivering": 1, "succeeded": 1, "dead": 1}
        assert await store.status_totals(succeeded=False) == {"delivering": 1, "dead": 1}

    async def test_earliest_due_is_that_of_the_first_pending_or_failed_delivery(self, store: Store) -> None:
        assert await store.earliest_due() is None
        await store.ingest([event("e1", "a", "b")], T0)
        await store.ingest([event("e2", "a", "c")], T0 + 5)
        assert await store.earliest_due() == T0
        [a1], _ = await store.claim("a", 1, T0 + 10, T0 + 70)
        [b1], _ = await store.claim("b", 1, T0 + 10, T0 + 70)
        assert await store.earliest_due() == T0 + 5, "a delivery being attempted is not waiting"
        await store.record([result(b1, attempt(1, T0 + 10, ok=False, next_at=T0 + 3), S.FAILED)])
        assert await store.earliest_due() == T0 + 3, "a parked delivery waits for its re-drive"
        await store.record([result(a1, attempt(1, T0 + 10, ok=True), S.SUCCEEDED)])
        [b2], _ = await store.claim("b", 1, T0 + 10, T0 + 70)
        await store.record([result(b2, attempt(2, T0 + 10, ok=False), S.DEAD)])
        [c2], _ = await store.claim("c", 1, T0 + 10, T0 + 70)
        await store.record([result(c2, attempt(1, T0 + 10, ok=False, next_at=T0 + 600), S.PENDING)])
        assert await store.earliest_due() == T0 + 5  # a's e2; c's retry is later
        [a2], _ = await store.claim("a", 1, T0 + 10, T0 + 70)
        await store.record([result(a2, attempt(1, T0 + 10, ok=True), S.SUCCEEDED)])
        assert await store.earliest_due() == T0 + 600
        [c3], _ = await store.claim("c", 1, T0 + 600, T0 + 700)
        await store.record([result(c3, attempt(2, T0 + 600, ok=True), S.SUCCEEDED)])
        assert await store.earliest_due() is None

    # -- ordering keys (CONTRACT §11) --------------------------------------------------------------------

    async def test_fifo_keeps_one_head_per_key_and_the_rest_wait_unclaimable(self, store: Store) -> None:
        await store.ingest([keyed("e1", "k", f="fifo"), keyed("e2", "k", f="fifo"), keyed("e3", "k", f="fifo")], T0)
        await store.ingest([keyed("e4", "k2", f="fifo"), keyed("e5", "k", f="none"), event("e6", "f")], T0)
        waiting = await delivery_of(store, "e2", "f")
        assert (waiting.status, waiting.next_attempt_at) == (S.PENDING, None)
        claims = await claimed(store, "f", T0)
        assert [c.event.id for c in claims] == ["e1", "e4", "e5", "e6"]  # one head per key; "none" is not ordered
        assert [c.lease.keyed for c in claims] == [True, True, False, False]
        for other in claims[1:]:
            await succeed(store, other, T0)
        assert await claimed(store, "f", T0 + 30) == []  # never a second delivery of a key in flight
        await succeed(store, claims[0], T0 + 1)
        [second] = await claimed(store, "f", T0 + 1)
        assert second.event.id == "e2" and second.lease.keyed
        await store.record([result(second, instant(1, T0 + 2, ok=False, next_at=T0 + 100), S.PENDING)])
        assert await claimed(store, "f", T0 + 50) == []  # e3 waits behind e2's retry
        [again] = await claimed(store, "f", T0 + 100)
        assert (again.event.id, again.attempt_number) == ("e2", 2)
        await succeed(store, again, T0 + 101)
        assert [c.event.id for c in await claimed(store, "f", T0 + 101)] == ["e3"]

    async def test_a_batch_keeps_its_array_order_and_a_leased_head_holds_its_key(self, store: Store) -> None:
        results = await store.ingest([keyed(f"e{n}", "k", f="fifo") for n in range(1, 5)], T0, {"f": Room(3, T0 + 60)})
        leased = [c for r in results for c in r.leased]
        assert [(c.event.id, c.lease.keyed) for c in leased] == [("e1", True)]  # the head alone, room or not
        order = []
        claim = leased[0]
        for n in range(1, 5):
            order.append(claim.event.id)
            await succeed(store, claim, T0 + n)
            found = await claimed(store, "f", T0 + n)
            assert len(found) <= 1
            claim = found[0] if found else claim
        assert order == ["e1", "e2", "e3", "e4"]

    async def test_a_parked_head_blocks_its_key_until_cancelled_other_keys_flow(self, store: Store) -> None:
        await store.ingest([keyed("e1", "k", f="fifo"), keyed("e2", "k", f="fifo")], T0)
        [head] = await claimed(store, "f", T0)
        await store.record([result(head, instant(1, T0, ok=False, next_at=T0 + 3600), S.FAILED)])
        assert await claimed(store, "f", T0 + 10) == []
        await store.ingest([keyed("o1", "other", f="fifo")], T0 + 10)
        assert [c.event.id for c in await claimed(store, "f", T0 + 10)] == ["o1"]
        cancelled = await store.cancel(head.delivery_id, T0 + 20, scope=EVERYTHING)
        assert cancelled is not None and (cancelled.id, cancelled.status) == (head.delivery_id, S.CANCELLED)
        assert (await delivery_of(store, "e2", "f")).next_attempt_at == T0 + 20
        [nxt] = await claimed(store, "f", T0 + 20)
        assert nxt.event.id == "e2"

    async def test_a_dead_head_lets_its_key_move_on_and_its_redrive_waits_behind_the_new_head(
        self, store: Store
    ) -> None:
        await store.ingest([keyed("e1", "k", f="fifo"), keyed("e2", "k", f="fifo"), keyed("e3", "k", f="fifo")], T0)
        [head] = await claimed(store, "f", T0)
        await store.record([result(head, instant(1, T0 + 1, ok=False), S.DEAD)])
        assert (await delivery_of(store, "e2", "f")).next_attempt_at == T0 + 1  # the key moved on
        assert await store.redrive(T0 + 2, ["f"], include_dead=True) == {"f": 1}
        dead = await delivery_of(store, "e1", "f")
        assert (dead.status, dead.next_attempt_at) == (S.PENDING, None)  # back in its key's queue, waiting
        [second] = await claimed(store, "f", T0 + 2)
        assert second.event.id == "e2"
        await succeed(store, second, T0 + 3)
        [again] = await claimed(store, "f", T0 + 3)  # the oldest waiting: the re-driven one, before e3
        assert (again.event.id, again.attempt_number) == ("e1", 2)

    async def test_replay_of_a_keyed_event_goes_to_the_end_of_its_keys_queue(self, store: Store) -> None:
        await store.ingest([keyed("e1", "k", f="fifo", n="none")], T0)
        [first] = await claimed(store, "f", T0)
        await succeed(store, first, T0 + 1)
        await store.ingest([keyed("e2", "k", f="fifo")], T0 + 2)
        replayed = await store.replay("e1", ["f", "n"], T0 + 3, scope=EVERYTHING, orderings=("fifo", "none"))
        assert replayed is not None
        assert [(d.webhook_id, d.next_attempt_at) for d in replayed] == [("f", None), ("n", T0 + 3)]
        found = await store.get_event("e1", scope=EVERYTHING)
        assert found is not None and found[0].ordering_key == "k"
        [second] = await claimed(store, "f", T0 + 3)
        assert second.event.id == "e2"
        await succeed(store, second, T0 + 4)
        [last] = await claimed(store, "f", T0 + 4)
        assert (last.event.id, last.delivery_id) == ("e1", replayed[0].id)
        # A replay to a key with no head is the head, due now.
        await succeed(store, last, T0 + 5)
        [again] = await store.replay("e1", ["f"], T0 + 6, scope=EVERYTHING, orderings=("fifo",)) or []
        assert again.next_attempt_at == T0 + 6

    async def test_latest_supersedes_older_pending_and_parked_deliveries(self, store: Store) -> None:
        await store.ingest([keyed("e1", "k", l="latest"), keyed("e2", "k", l="latest")], T0)  # one batch
        await store.ingest([keyed("e3", "k", l="latest")], T0 + 1)
        assert [(await delivery_of(store, e, "l")).status for e in ("e1", "e2", "e3")] == [
            S.SUPERSEDED,
            S.SUPERSEDED,
            S.PENDING,
        ]
        [head] = await claimed(store, "l", T0 + 1)
        assert head.event.id == "e3"
        await store.record([result(head, instant(1, T0 + 2, ok=False, next_at=T0 + 3600), S.FAILED)])
        await store.ingest([keyed("e4", "k", l="latest")], T0 + 3)
        assert (await delivery_of(store, "e3", "l")).status is S.SUPERSEDED
        newest = await delivery_of(store, "e4", "l")
        assert (newest.status, newest.next_attempt_at) == (S.PENDING, T0 + 3)
        assert [c.event.id for c in await claimed(store, "l", T0 + 3)] == ["e4"]

    async def test_latest_waits_behind_an_attempt_in_flight_and_supersedes_it_if_it_fails(self, store: Store) -> None:
        await store.ingest([keyed("e1", "k", l="latest")], T0)
        [first] = await claimed(store, "l", T0)
        await store.ingest([keyed("e2", "k", l="latest")], T0 + 1)
        waiting = await delivery_of(store, "e2", "l")
        assert (waiting.status, waiting.next_attempt_at) == (S.PENDING, None)
        assert await claimed(store, "l", T0 + 1) == []
        await succeed(store, first, T0 + 2)  # the older one succeeded first: then the newer one goes
        [second] = await claimed(store, "l", T0 + 2)
        assert second.event.id == "e2"
        await store.ingest([keyed("e3", "k", l="latest")], T0 + 3)
        await store.ingest([keyed("e4", "k", l="latest")], T0 + 4)  # supersedes e3, waiting; waits behind e2
        assert (await delivery_of(store, "e3", "l")).status is S.SUPERSEDED
        await store.record([result(second, instant(1, T0 + 5, ok=False, next_at=T0 + 60), S.PENDING)])
        assert (await delivery_of(store, "e2", "l")).status is S.SUPERSEDED  # no retry: e4 replaces it
        [last] = await claimed(store, "l", T0 + 5)
        assert last.event.id == "e4"
        await store.record([result(last, instant(1, T0 + 6, ok=False, next_at=T0 + 60), S.PENDING)])
        assert (await delivery_of(store, "e4", "l")).status is S.PENDING  # nothing newer: retried

    async def test_a_result_may_lease_its_keys_next_delivery_in_the_same_commit(self, store: Store) -> None:
        """``lease_next_until``: the key's next delivery comes back leased (SQLite), or is due at once (a backend
        that leases none); either way it is the only one of its key out, and its own result moves the key on."""
        await store.ingest([keyed(f"e{n}", "k", f="fifo") for n in range(1, 4)], T0)
        [head] = await claimed(store, "f", T0)
        done = instant(1, T0 + 1, ok=True)
        asked = AttemptResult(
            head.lease, head.delivery_id, head.webhook_id, done, S.SUCCEEDED, None, lease_next_until=T0 + 61
        )
        leased = await store.record([asked])
        if leased:
            [second] = leased
            assert (second.event.id, second.lease.until, second.lease.keyed) == ("e2", T0 + 61, True)
            assert (await delivery_of(store, "e2", "f")).status is S.DELIVERING
            assert await claimed(store, "f", T0 + 1) == []  # held: no claim hands out its key
        else:
            [second] = await claimed(store, "f", T0 + 1)
            assert second.event.id == "e2"
        await succeed(store, second, T0 + 2)
        [third] = await claimed(store, "f", T0 + 2)
        assert third.event.id == "e3"
        # A result that asks for a lease when its key has no next delivery gets none.
        last = AttemptResult(
            third.lease, third.delivery_id, third.webhook_id, instant(1, T0 + 3, ok=True), S.SUCCEEDED, None, T0 + 90
        )
        assert await store.record([last]) == []

    async def test_on_leased_hears_the_leased_deliveries_once(self, store: Store) -> None:
        """A backend that hands the key's next delivery over early (before its commit is durable) does it once,
        with what ``record`` then returns; one that leases none never calls it."""
        await store.ingest([keyed("e1", "k", f="fifo"), keyed("e2", "k", f="fifo")], T0)
        [head] = await claimed(store, "f", T0)
        heard: list[list[Claim]] = []
        done = instant(1, T0 + 1, ok=True)
        asked = AttemptResult(
            head.lease, head.delivery_id, head.webhook_id, done, S.SUCCEEDED, None, lease_next_until=T0 + 61
        )
        leased = await store.record([asked], on_leased=heard.append)
        assert heard in ([], [leased])
        assert bool(heard) == bool(leased)

    async def test_latest_never_delivers_a_replayed_or_redriven_older_event_after_a_newer_one(
        self, store: Store
    ) -> None:
        await store.ingest([keyed("old", "k", l="latest")], T0)
        [first] = await claimed(store, "l", T0)
        await store.record([result(first, instant(1, T0 + 1, ok=False), S.DEAD)])
        await store.ingest([keyed("new", "k", l="latest")], T0 + 2)
        [newest] = await claimed(store, "l", T0 + 2)
        await succeed(store, newest, T0 + 3)
        # Re-driving the dead older one would deliver it after the newer success: it ends superseded instead.
        assert await store.redrive(T0 + 4, ["l"], include_dead=True) == {}
        assert (await delivery_of(store, "old", "l")).status is S.SUPERSEDED
        # Replaying the older event neither follows the newer success nor replaces a newer one waiting.
        [replayed] = await store.replay("old", ["l"], T0 + 5, scope=EVERYTHING, orderings=("latest",)) or []
        assert replayed.status is S.SUPERSEDED
        assert await claimed(store, "l", T0 + 5) == []
        # Replaying the newest is delivered again.
        [again] = await store.replay("new", ["l"], T0 + 6, scope=EVERYTHING, orderings=("latest",)) or []
        assert (again.status, again.next_attempt_at) == (S.PENDING, T0 + 6)

    async def test_cancel_of_a_delivery_in_flight_or_ended_is_a_conflict(self, store: Store) -> None:
        await tenants_ab(store)
        await store.ingest([keyed("k1", "k", p="fifo"), keyed("k2", "k", p="fifo")], T0)
        [ea, *_] = await claimed(store, "p", T0)
        with pytest.raises(Conflict, match="being attempted right now"):
            await store.cancel(ea.delivery_id, T0, scope=EVERYTHING)
        await succeed(store, ea, T0 + 1)
        with pytest.raises(Conflict, match=r"has already ended \(succeeded\)"):
            await store.cancel(ea.delivery_id, T0 + 2, scope=EVERYTHING)
        assert await store.cancel("dlv_missing", T0, scope=EVERYTHING) is None
        waiting = await delivery_of(store, "k2", "p")
        assert await store.cancel(waiting.id, T0, scope=Scope("a")) is None  # "p" is platform-wide: not a's
        wa = await delivery_of(store, "ea", "wa")
        assert await store.cancel(wa.id, T0, scope=Scope("b")) is None
        done = await store.cancel(wa.id, T0 + 3, scope=Scope("a"))
        assert done is not None and done.status is S.CANCELLED and done.next_attempt_at is None
        plain = await store.cancel((await delivery_of(store, "k2", "p")).id, T0 + 4, scope=EVERYTHING)
        assert plain is not None and plain.status is S.CANCELLED  # a waiting one leaves its key as it was

    async def test_earliest_due_and_due_by_webhook_ignore_deliveries_waiting_on_their_keys(self, store: Store) -> None:
        await store.ingest([keyed("e1", "k", f="fifo"), keyed("e2", "k", f="fifo")], T0)
        [head] = await claimed(store, "f", T0)
        assert await store.earliest_due() is None
        assert await store.due_by_webhook() == {"f": T0 + 60}  # the lease's end; e2 has no due time
        await store.record([result(head, instant(1, T0, ok=False), S.DEAD)])
        assert await store.earliest_due() == T0 and await store.due_by_webhook() == {"f": T0}

    async def test_prune_treats_superseded_as_ended(self, store: Store) -> None:
        await store.ingest([keyed("e1", "k", l="latest"), keyed("e2", "k", l="latest")], T0)
        [claim] = await claimed(store, "l", T0)
        await succeed(store, claim, T0 + 1)
        assert await store.prune(T0 + 10) == 2

    # -- activity (CONTRACT §10) ---------------------------------------------------------------------------

    async def test_activity_counts_attempts_and_failures_hour_by_hour_with_empty_hours(self, store: Store) -> None:
        await store.ingest([event(f"e{n}", "a") for n in range(3)], H + 5)
        first, second, third = await claimed(store, "a", H + 5)
        # One batch, not in time order: counted together, the newest attempt by its start; a failure to be tried
        # again counts as one too.
        retried = result(first, attempt(1, H + 10, ok=False, next_at=H + 70), S.PENDING)
        await store.record([retried, tried(second, H + 30, ok=True), tried(third, H + 20, ok=False)])
        await attempted(store, "b", (H + 3600 + 5, False))
        found = await store.activity(H, H + 3 * 3600, scope=EVERYTHING)
        assert hours(found) == [(H, 3, 2), (H + 3600, 1, 1), (H + 7200, 0, 0)]
        assert found.webhooks == {
            "a": WebhookActivity(3, 2, H + 30, True),
            "b": WebhookActivity(1, 1, H + 3600 + 5, False),
        }
        empty = await store.activity(H + 7200, H + 3 * 3600, scope=EVERYTHING)
        assert hours(empty) == [(H + 7200, 0, 0)]
        assert empty.webhooks["a"] == WebhookActivity(0, 0, H + 30, True)  # outside the window: its last attempt only

    async def test_activity_takes_the_hour_holding_since_and_ends_before_until(self, store: Store) -> None:
        await attempted(store, "a", (H - 1, False), (H, True), (H + 3599, False), (H + 3600, True))
        inside = await store.activity(H + 1800, H + 3600, scope=EVERYTHING)
        assert hours(inside) == [(H, 2, 1)]  # H - 1 is the hour before; H + 3600 starts at until
        assert inside.webhooks["a"] == WebhookActivity(2, 1, H + 3600, True)  # the newest of all, after the window
        wider = await store.activity(H - 0.5, H + 3600.5, scope=EVERYTHING)
        assert hours(wider) == [(H - 3600, 1, 1), (H, 2, 1), (H + 3600, 1, 0)]
        assert (wider.webhooks["a"].attempts, wider.webhooks["a"].failures) == (4, 2)
        assert (await store.activity(H, H, scope=EVERYTHING)).hours == []

    async def test_activity_keeps_a_webhooks_last_attempt_older_than_the_window(self, store: Store) -> None:
        await attempted(store, "old", (H - 5 * 3600 + 7, True), (H - 5 * 3600 + 9, False))
        await attempted(store, "new", (H + 60, True))
        found = await store.activity(H, H + 3600, scope=EVERYTHING)
        assert hours(found) == [(H, 1, 0)]
        assert found.webhooks == {
            "old": WebhookActivity(0, 0, H - 5 * 3600 + 9, False),
            "new": WebhookActivity(1, 0, H + 60, True),
        }
        assert (await store.activity(H, H + 3600, scope=Scope("nobody"))) == Activity([HourCount(H, 0, 0)], {})

    async def test_activity_inside_a_tenant_counts_only_its_webhooks(self, store: Store) -> None:
        await tenants_ab(store)  # deliveries to ca, wa (a), wb (b), p (platform-wide) at T0
        for webhook_id, ok in (("ca", True), ("wa", False), ("wb", False), ("p", True)):
            claims = await claimed(store, webhook_id, T0)
            await store.record([tried(claim, T0 + 1, ok=ok) for claim in claims])
        await attempted(store, "gone", (T0 + 2, False))  # a webhook the store no longer knows
        window = (H, H + 3600)
        a = await store.activity(*window, scope=Scope("a"))
        assert hours(a) == [(H, 2, 1)]
        assert a.webhooks == {"ca": WebhookActivity(1, 0, T0 + 1, True), "wa": WebhookActivity(1, 1, T0 + 1, False)}
        b = await store.activity(*window, scope=Scope("b"))
        assert hours(b) == [(H, 1, 1)] and list(b.webhooks) == ["wb"]
        everything = await store.activity(*window, scope=EVERYTHING)
        assert hours(everything) == [(H, 7, 3)]  # p had three deliveries
        assert sorted(everything.webhooks) == ["ca", "gone", "p", "wa", "wb"]
        assert everything.webhooks["p"] == WebhookActivity(3, 0, T0 + 1, True)

    async def test_prune_drops_the_counts_of_hours_that_ended_by_its_cutoff(self, store: Store) -> None:
        await attempted(store, "a", (H - 3 * 3600 + 5, False), (H - 3600 + 5, True), (H + 5, False))
        await attempted(store, "b", (H - 2 * 3600, True))
        await store.prune(H)
        found = await store.activity(H - 3 * 3600, H + 3600, scope=EVERYTHING)
        assert hours(found) == [(H - 3 * 3600, 0, 0), (H - 2 * 3600, 0, 0), (H - 3600, 0, 0), (H, 1, 1)]
        assert found.webhooks == {"a": WebhookActivity(1, 1, H + 5, False)}  # b has no row left
        await store.prune(H + 3599)
        assert hours(await store.activity(H, H + 1, scope=EVERYTHING)) == [(H, 1, 1)]  # its hour has not ended

    async def test_activity_sums_what_several_relays_recorded_for_one_webhook_and_hour(self, store: Store) -> None:
        await store.ingest([event(f"e{n}", "a") for n in range(4)], T0)
        first, second, third, fourth = await claimed(store, "a", T0)
        await store.record([tried(first, T0 + 10, ok=False)])
        await store.record([tried(second, T0 + 40, ok=True, owner="relay-b")])  # another node, the newest attempt
        await store.record([tried(third, T0 + 30, ok=False)])  # the first node's row again
        await store.record([tried(fourth, T0 + 20, ok=True, owner="relay-c"), tried(fourth, T0 + 20, ok=True)])
        found = await store.activity(H, H + 3600, scope=EVERYTHING)
        assert hours(found) == [(H, 5, 2)]
        assert found.webhooks == {"a": WebhookActivity(5, 2, T0 + 40, True)}

    # -- pruning -----------------------------------------------------------------------------------------

    async def test_prune_removes_only_old_events_that_are_done(self, store: Store) -> None:
        await store.ingest([event("done", "a"), event("failing", "b"), event("none")], T0)
        await store.ingest([event("recent", "a")], T0 + 100)
        [claim], _ = await store.claim("a", 1, T0, T0 + 60)
        await store.record([result(claim, attempt(1, T0, ok=True), DeliveryStatus.SUCCEEDED)])
        assert await store.prune(T0 + 50) == 2  # "done" and "none"; "failing" still owes a delivery
        assert (
            await store.get_event("done", scope=EVERYTHING) is None
            and await store.get_event("none", scope=EVERYTHING) is None
        )
        assert (
            await store.get_event("failing", scope=EVERYTHING) is not None
            and await store.get_event("recent", scope=EVERYTHING) is not None
        )

    async def test_a_pruned_id_is_new_again(self, store: Store) -> None:
        await store.ingest([event("e1")], T0)
        assert await store.prune(T0 + 1) == 1
        [again] = await store.ingest([event("e1", "a")], T0 + 2)
        assert (again.created, again.deliveries) == (True, 1)

    async def test_a_stale_attempt_cannot_touch_a_delivery_made_after_its_own_was_pruned(self, store: Store) -> None:
        await store.insert_api_webhook("a", b"{}", T0)
        await store.ingest([event("old", "a")], T0)
        [stale], _ = await store.claim("a", 1, T0, T0 + 30)  # an attempt starts ...
        await store.delete_api_webhook("a", T0)  # ... its webhook is removed ...
        assert await store.prune(T0 + 1) == 1  # ... and the event, all its deliveries ended, is pruned
        await store.ingest([event("new", "a")], T0 + 2)
        [fresh], _ = await store.claim("a", 1, T0 + 2, T0 + 30)  # the same lease end as the stale one
        await store.record([result(stale, attempt(1, T0, ok=True), S.SUCCEEDED)])  # the stale one ends
        found = await store.get_event("new", scope=EVERYTHING)
        assert found is not None
        [delivery] = found[1]
        assert delivery.id == fresh.delivery_id
        assert (delivery.status, delivery.attempts) == (S.DELIVERING, ()), "never attempted, yet marked done"

    async def test_a_lease_left_from_a_pruned_delivery_releases_nothing(self, store: Store) -> None:
        await store.insert_api_webhook("a", b"{}", T0)
        await store.ingest([event("old", "a")], T0)
        [stale], _ = await store.claim("a", 1, T0, T0 + 30)
        await store.delete_api_webhook("a", T0)
        assert await store.prune(T0 + 1) == 1
        await store.ingest([event("new", "a")], T0 + 2)
        await store.claim("a", 1, T0 + 2, T0 + 30)  # the same lease end as the stale one
        await store.release([stale], T0 + 3)  # shutdown gives back the stale one
        assert await status_of(store, "new") == {"a": S.DELIVERING}

    # -- the group ---------------------------------------------------------------------------------------

    async def test_a_job_is_due_first_and_again_after_its_interval(self, store: Store) -> None:
        assert await store.claim_job("prune", T0, 60.0)
        assert await store.claim_job("prune", T0 + 60, 60.0)
        assert await store.claim_job("other", T0 + 60, 60.0)

    async def test_signals_can_be_registered_and_a_rescan_interval_is_none_or_positive(self, store: Store) -> None:
        store.on_signals(lambda ids: None, lambda: None, lambda: None)
        interval = store.rescan_interval
        assert interval is None or interval > 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def test_writes_count_commits_and_a_writable_store_says_so(self, store: Store) -> None:
        before = store.commits
        await store.ingest([event("e1", "a")], T0)
        await store.check_writable()
        assert store.commits > before

    async def test_a_closed_store_refuses_work_and_stopped_returns(self, store: Store) -> None:
        stopped = asyncio.ensure_future(store.stopped())
        await asyncio.sleep(0)
        assert not stopped.done()  # its background work, if any, runs until close
        await store.close()
        await asyncio.wait_for(stopped, 5)
        with pytest.raises(StoreUnavailable):
            await store.ingest([event("e1", "a")], T0)
        with pytest.raises(StoreUnavailable):
            await store.get_event("e1", scope=EVERYTHING)
