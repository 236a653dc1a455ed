"""Ordering keys (CONTRACT §11) end to end: a real relay on a SQLite file, real receivers on 127.0.0.1 that keep a
ledger per key (``tests.support.keyed_receiver``), and a FakeClock moved where retries or promotions need time.

fifo: one request of a key in flight at a time, first successes in ingest order, through 503s and timeouts; a
parked head holds its key until it is cancelled (``POST /v1/deliveries/{id}/cancel``, scoped to tenants); a replay
goes to the end of its key's queue. latest: older unfinished deliveries end ``superseded`` (counted in /v1/stats and
/metrics), and an older event never follows a newer success. Bad keys and bad ``ordering`` values name their path.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.clock import FakeClock
from relay.config import load_config
from relay.errors import ConfigError
from relay.models import Ordering, Webhook
from tests.support.keyed_receiver import Decide, KeyedReceiver
from tests.support.management import call, error_of
from tests.support.receiver import Reply
from tests.support.relay_harness import RunningRelay, running_relay, webhook

T0 = 1_750_000_000.0
TENANT_A, TENANT_B = "tenant-alpha", "tenant-bravo"


@contextlib.asynccontextmanager
async def keyed(receiver: KeyedReceiver) -> AsyncIterator[KeyedReceiver]:
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@contextlib.asynccontextmanager
async def receiving(
    tmp_path: Path,
    decide: Decide,
    ordering: Ordering | None,
    *,
    strict: bool = False,
    delivery: dict[str, Any] | None = None,
    **fields: Any,
) -> AsyncIterator[tuple[KeyedReceiver, RunningRelay]]:
    """A keyed receiver and a relay whose one webhook ``hook`` (with ``ordering``, or none: no webhook) sends to it;
    ``delivery``: ``[delivery]`` settings."""
    async with keyed(KeyedReceiver(decide, strict=strict)) as receiver:
        hooks = [] if ordering is None else [ordered(receiver.url(), ordering, **fields)]
        async with relay_for(tmp_path, hooks, **(delivery or {})) as relay:
            yield receiver, relay


@contextlib.asynccontextmanager
async def relay_for(tmp_path: Path, hooks: list[Webhook], **delivery: Any) -> AsyncIterator[RunningRelay]:
    async with running_relay(tmp_path, hooks, clock=FakeClock(T0), **delivery) as relay:
        yield relay


def ordered(url: str, ordering: Ordering, **fields: Any) -> Webhook:
    return webhook(url, ordering=ordering, **fields)


def event(key: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"{key}.{n}", "type": "t", "data": {"key": key, "n": n}, "ordering_key": key, **fields}


async def post(relay: RunningRelay, body: Any, key: str | None = None) -> Any:
    status, answer = await call(relay, "POST", "/v1/events", body, **({"key": key} if key else {}))
    assert status == 202, answer
    return answer["data"]


async def deliveries(relay: RunningRelay, event_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await relay.event(event_id))["deliveries"]
    return found


async def statuses(relay: RunningRelay, *event_ids: str) -> list[str]:
    return [d["status"] for e in event_ids for d in await deliveries(relay, e)]


async def settled(relay: RunningRelay, expected: dict[str, str], tick: float = 0.0) -> None:
    """Until each event's one delivery has the expected status (the clock moved by ``tick`` meanwhile)."""

    async def check() -> bool:
        if tick:
            relay.advance(tick)
        return await statuses(relay, *expected) == list(expected.values())

    await relay.wait_until(check)


# -- fifo ---------------------------------------------------------------------------------------------------


async def test_fifo_keeps_each_keys_order_through_503s_and_timeouts(tmp_path: Path) -> None:
    keys, per_key = [f"k{i}" for i in range(10)], 8

    def decide(key: str, n: int, seen: int) -> Reply:
        salt = int(key[1:]) * 7 + n
        if seen == 1 and salt % 4 == 0:
            return Reply(503)
        if seen <= 2 and salt % 5 == 1:
            return Reply(200, delay=0.5)  # past the webhook's timeout: the relay gives up
        return Reply(200, delay=0.01)  # long enough for a second request of the key to overlap, if one came

    schedule = (0.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    async with receiving(tmp_path, decide, Ordering.FIFO, strict=True, timeout=0.2, retry_schedule=schedule) as (
        receiver,
        relay,
    ):
        for n in range(per_key):  # interleaved: a batch of one event per key, or each key's event alone
            if n % 2 == 0:
                await post(relay, [event(k, n) for k in keys])
            else:
                for k in reversed(keys):
                    await post(relay, event(k, n))
        await receiver.wait_until(
            lambda: all(len(receiver.delivered(k)) == per_key for k in keys), tick=lambda: relay.advance(1)
        )
        assert receiver.violations == []
        assert {k: receiver.delivered(k) for k in keys} == {k: list(range(per_key)) for k in keys}
        await relay.wait_until(lambda: _succeeded_count(relay, len(keys) * per_key))
        assert len(receiver.arrivals) > len(keys) * per_key  # the 503s and timeouts were retried


async def _succeeded_count(relay: RunningRelay, count: int) -> bool:
    _, answer = await call(relay, "GET", "/v1/stats")
    return bool(answer["data"]["deliveries"]["succeeded"] == count)


async def test_a_parked_head_blocks_its_key_until_cancelled_while_other_keys_flow(tmp_path: Path) -> None:
    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(503) if (key, n) == ("stuck", 0) else Reply(200)

    async with receiving(tmp_path, decide, Ordering.FIFO, retry_schedule=(0.0,)) as (receiver, relay):
        await post(relay, [event("stuck", 0), event("stuck", 1), event("free", 0)])
        await post(relay, event("free", 1))
        await settled(relay, {"stuck.0": "failed", "free.0": "succeeded", "free.1": "succeeded"}, tick=0.5)
        relay.advance(60)
        await settled(relay, {"stuck.1": "pending"})  # parked behind its key's head
        assert receiver.arrivals.count(("stuck", 1)) == 0 and receiver.delivered("free") == [0, 1]
        [head] = await deliveries(relay, "stuck.0")
        assert head["next_attempt_at"] is not None  # parked: re-driven on the interval

        status, answer = await call(relay, "POST", f"/v1/deliveries/{head['id']}/cancel")
        assert status == 200, answer
        assert answer["data"]["id"] == head["id"] and answer["data"]["status"] == "cancelled"
        assert answer["data"]["next_attempt_at"] is None
        await settled(relay, {"stuck.0": "cancelled", "stuck.1": "succeeded"}, tick=0.5)
        assert [a for a in receiver.arrivals if a[0] == "stuck"] == [("stuck", 0), ("stuck", 1)]

        status, answer = await call(relay, "POST", f"/v1/deliveries/{head['id']}/cancel")
        assert status == 409 and answer["error"]["code"] == "conflict"
        [done] = await deliveries(relay, "stuck.1")
        status, answer = await call(relay, "POST", f"/v1/deliveries/{done['id']}/cancel")
        assert status == 409 and answer["error"]["code"] == "conflict"
        status, answer = await call(relay, "POST", "/v1/deliveries/dlv_nothing/cancel")
        assert status == 404 and answer["error"]["code"] == "not_found"
        assert receiver.violations == []


async def _tenant_key(relay: RunningRelay, tenant: str) -> str:
    status, answer = await call(relay, "POST", f"/v1/tenants/{tenant}/keys", {})
    assert status == 201, answer
    key: str = answer["data"]["key"]
    return key


async def test_only_the_admin_or_its_tenant_can_cancel_a_delivery(tmp_path: Path) -> None:
    async with receiving(tmp_path, lambda key, n, seen: Reply(503), None) as (receiver, relay):
        key_a, key_b = await _tenant_key(relay, TENANT_A), await _tenant_key(relay, TENANT_B)
        hook = {"url": receiver.url(), "ordering": "fifo", "retry_schedule": ["0s"]}
        status, created = await call(relay, "POST", "/v1/webhooks", hook, key=key_a)
        assert status == 201 and created["data"]["ordering"] == "fifo", created
        await post(relay, [event("k", 0), event("k", 1)], key=key_a)
        await settled(relay, {"k.0": "failed", "k.1": "pending"}, tick=0.5)
        head, waiting = [d["id"] for e in ("k.0", "k.1") for d in await deliveries(relay, e)]

        for delivery_id in (head, waiting):
            status, answer = await call(relay, "POST", f"/v1/deliveries/{delivery_id}/cancel", key=key_b)
            assert status == 404 and answer["error"]["code"] == "not_found", answer
        assert await statuses(relay, "k.0", "k.1") == ["failed", "pending"]

        status, answer = await call(relay, "POST", f"/v1/deliveries/{waiting}/cancel", key=key_a)
        assert status == 200 and answer["data"]["status"] == "cancelled"  # a waiting one, not the head
        status, answer = await call(relay, "POST", f"/v1/deliveries/{head}/cancel")  # the admin
        assert status == 200 and answer["data"]["status"] == "cancelled"
        assert await statuses(relay, "k.0", "k.1") == ["cancelled", "cancelled"]
        assert receiver.arrivals == [("k", 0)]


async def test_a_replay_goes_to_the_end_of_its_keys_queue(tmp_path: Path) -> None:
    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(503) if n == 2 else Reply(200)

    async with receiving(tmp_path, decide, Ordering.FIFO, retry_schedule=(0.0,)) as (receiver, relay):
        await post(relay, [event("k", 0), event("k", 1), event("k", 2)])
        await settled(relay, {"k.0": "succeeded", "k.1": "succeeded", "k.2": "failed"}, tick=0.5)
        status, answer = await call(relay, "POST", "/v1/events/k.0/replay", {})
        assert status == 202, answer
        [again] = answer["data"]["deliveries"]
        assert again["status"] == "pending" and again["next_attempt_at"] is None  # behind the parked head
        relay.advance(60)
        await settled(relay, {"k.1": "succeeded"})  # nothing moved meanwhile
        assert await statuses(relay, "k.0") == ["succeeded", "pending"]
        assert len(receiver.arrivals) == 3
        [head] = await deliveries(relay, "k.2")
        status, _ = await call(relay, "POST", f"/v1/deliveries/{head['id']}/cancel")
        assert status == 200
        await relay.wait_until(lambda: len(receiver.arrivals) == 4)
        assert receiver.arrivals == [("k", 0), ("k", 1), ("k", 2), ("k", 0)]
        await relay.wait_until(lambda: _statuses_are(relay, "k.0", ["succeeded", "succeeded"]))


async def _statuses_are(relay: RunningRelay, event_id: str, expected: list[str]) -> bool:
    return await statuses(relay, event_id) == expected


# -- latest -------------------------------------------------------------------------------------------------


async def test_latest_supersedes_what_waits_behind_a_slow_attempt(tmp_path: Path) -> None:
    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(200, delay=0.3) if n == 0 else Reply(200)

    async with receiving(tmp_path, decide, Ordering.LATEST) as (receiver, relay):
        await post(relay, event("k", 0))
        await receiver.wait_until(lambda: receiver.arrivals == [("k", 0)])
        for n in (1, 2, 3):  # while the first is in flight
            await post(relay, event("k", n))
        assert await statuses(relay, "k.0", "k.1", "k.2", "k.3") == [
            "delivering",
            "superseded",
            "superseded",
            "pending",
        ]
        await receiver.wait_until(lambda: receiver.delivered("k") == [0, 3], tick=lambda: relay.advance(0.5))
        await settled(relay, {"k.0": "succeeded", "k.1": "superseded", "k.2": "superseded", "k.3": "succeeded"})
        assert receiver.arrivals == [("k", 0), ("k", 3)] and receiver.violations == []

        _, answer = await call(relay, "GET", "/v1/stats")
        assert answer["data"]["deliveries"]["superseded"] == 2
        assert answer["data"]["webhooks"]["hook"]["superseded"] == 2
        relay.advance(60)  # past the metrics' cached count
        async with relay.http.get(f"{relay.url}/metrics") as response:
            text = await response.text()
        assert re.search(r'^relay_deliveries\{status="superseded"\} 2\.0$', text, re.M), text


async def test_latest_a_failed_attempt_is_superseded_by_the_newer_event_waiting(tmp_path: Path) -> None:
    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(503, delay=0.3) if n == 0 else Reply(200)

    async with receiving(tmp_path, decide, Ordering.LATEST, retry_schedule=(0.0, 1.0, 1.0)) as (receiver, relay):
        await post(relay, event("k", 0))
        await receiver.wait_until(lambda: receiver.arrivals == [("k", 0)])
        await post(relay, event("k", 1))
        await settled(relay, {"k.0": "superseded", "k.1": "succeeded"}, tick=0.5)
        relay.advance(3600)
        await settled(relay, {"k.0": "superseded"})
        assert receiver.arrivals == [("k", 0), ("k", 1)] and receiver.delivered("k") == [1]


# -- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["x" * 257, 12, "a\x01b", "tab\there", "", "del\x7f", "c1\x85", "csi\x9b"])
async def test_a_bad_ordering_key_is_a_validation_error_naming_it(tmp_path: Path, bad: Any) -> None:
    async with relay_for(tmp_path, [webhook("http://127.0.0.1:9/none")]) as relay:
        status, answer = await call(relay, "POST", "/v1/events", {"type": "t", "data": {}, "ordering_key": bad})
        assert status == 400 and error_of(answer) == ("validation_error", ["ordering_key"]), answer
        batch = [{"type": "t", "data": {}, "ordering_key": "fine"}, {"type": "t", "data": {}, "ordering_key": bad}]
        status, answer = await call(relay, "POST", "/v1/events", batch)
        assert status == 400 and error_of(answer) == ("validation_error", ["[1].ordering_key"]), answer
        _, listed = await call(relay, "GET", "/v1/events")
        assert listed["data"] == []  # all or nothing


async def test_the_longest_ordering_key_and_any_printable_text_are_taken(tmp_path: Path) -> None:
    async with relay_for(tmp_path, []) as relay:
        for key in ("x" * 256, "kunde/42 · Ünïcödé ✓", " spaced "):
            data = await post(relay, {"type": "t", "data": {}, "ordering_key": key})
            assert (await relay.event(data["id"]))["ordering_key"] == key


def test_a_bad_ordering_in_the_config_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        f"""
[server]
api_keys = ["k" ]
[storage]
path = "{tmp_path / "relay.db"}"
[[webhooks]]
id = "crm"
url = "https://crm.example.com/hook"
ordering = "sometimes"
"""
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert [p.path for p in raised.value.problems] == ["webhooks[0].ordering"]


async def test_a_bad_ordering_in_the_api_is_a_validation_error_naming_it(tmp_path: Path) -> None:
    async with relay_for(tmp_path, []) as relay:
        status, answer = await call(
            relay, "POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/", "ordering": "sometimes"}
        )
        assert status == 400 and error_of(answer) == ("validation_error", ["ordering"]), answer
        status, created = await call(
            relay, "POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/", "ordering": "latest"}
        )
        assert status == 201 and created["data"]["ordering"] == "latest"
        path = f"/v1/webhooks/{created['data']['id']}"
        status, answer = await call(relay, "PATCH", path, {"ordering": 3})
        assert status == 400 and error_of(answer) == ("validation_error", ["ordering"]), answer
        status, answer = await call(relay, "PATCH", path, {"ordering": None})
        assert status == 200 and answer["data"]["ordering"] == "none", answer


async def test_latest_a_batch_of_one_key_delivers_its_newest_last(tmp_path: Path) -> None:
    async with receiving(tmp_path, lambda key, n, seen: Reply(200, delay=0.05), Ordering.LATEST) as (receiver, relay):
        await post(relay, [event("k", n) for n in range(5)])
        await receiver.wait_until(lambda: 4 in receiver.delivered("k"), tick=lambda: relay.advance(0.5))
        await settled(relay, {"k.4": "succeeded"})
        ended = await statuses(relay, *(f"k.{n}" for n in range(5)))
        # The first may have been leased at ingest (then it is delivered first) or superseded with the others.
        assert ended[0] in ("succeeded", "superseded") and ended[1:4] == ["superseded"] * 3, ended
        assert receiver.delivered("k")[-1] == 4 and receiver.violations == []


async def test_latest_a_dead_delivery_redriven_after_a_newer_success_is_not_delivered(tmp_path: Path) -> None:
    """CONTRACT §11: an older event is never delivered after a newer one of its key succeeded, re-drives included."""

    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(503) if n == 0 and seen <= 3 else Reply(200)

    hour = 3600.0
    dies = {"redrive_interval": hour, "redrive_max_age": 2 * hour + 1}  # the re-drive at 3 h finds it dead
    async with receiving(tmp_path, decide, Ordering.LATEST, delivery=dies, retry_schedule=(0.0,)) as (receiver, relay):
        await post(relay, event("k", 0))
        await settled(relay, {"k.0": "failed"})
        await settled(relay, {"k.0": "dead"}, tick=hour)
        await post(relay, event("k", 1))
        await settled(relay, {"k.1": "succeeded"}, tick=0.5)
        status, answer = await call(relay, "POST", "/v1/failures/redrive", {"include_dead": True})
        assert status == 200, answer
        relay.advance(60)
        await settled(relay, {"k.0": "superseded"}, tick=0.5)
        assert receiver.delivered("k") == [1], receiver.arrivals


async def test_latest_a_replay_of_an_older_event_does_not_replace_the_newest(tmp_path: Path) -> None:
    """CONTRACT §11: an older event is never delivered after a newer one of its key succeeded, replays included;
    and a replayed older event must not supersede the newest one waiting."""

    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(200, delay=0.3) if n == 1 and seen == 1 else Reply(200)

    async with receiving(tmp_path, decide, Ordering.LATEST) as (receiver, relay):
        await post(relay, event("k", 0))
        await settled(relay, {"k.0": "succeeded"}, tick=0.5)
        await post(relay, event("k", 1))
        await receiver.wait_until(lambda: ("k", 1) in receiver.arrivals)
        await post(relay, event("k", 2))  # waits behind k.1 in flight
        status, answer = await call(relay, "POST", "/v1/events/k.0/replay", {})
        assert status == 202 and [d["status"] for d in answer["data"]["deliveries"]] == ["superseded"]
        await settled(relay, {"k.1": "succeeded", "k.2": "succeeded"}, tick=0.5)
        assert await statuses(relay, "k.0") == ["succeeded", "superseded"]
        assert receiver.arrivals == [("k", 0), ("k", 1), ("k", 2)]


async def test_fifo_a_head_that_dies_lets_its_key_move_on_and_a_redrive_puts_it_back_in_the_queue(
    tmp_path: Path,
) -> None:
    hour = 3600.0

    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(503) if n == 0 and seen <= 3 else Reply(200, delay=0.3 if n == 2 else 0.0)

    dies = {"redrive_interval": hour, "redrive_max_age": 2 * hour + 1}  # the re-drive at 3 h finds it dead
    async with receiving(tmp_path, decide, Ordering.FIFO, delivery=dies, retry_schedule=(0.0,)) as (receiver, relay):
        await post(relay, [event("k", 0), event("k", 1)])
        await settled(relay, {"k.0": "failed", "k.1": "pending"})
        await settled(relay, {"k.0": "dead", "k.1": "succeeded"}, tick=hour)
        await post(relay, event("k", 2))
        await receiver.wait_until(lambda: ("k", 2) in receiver.arrivals)
        status, answer = await call(relay, "POST", "/v1/failures/redrive", {"include_dead": True})
        assert status == 200 and answer["data"] == {"redriven": 1}
        [dead] = await deliveries(relay, "k.0")
        assert dead["status"] == "pending" and dead["next_attempt_at"] is None  # behind k.2 in flight
        await settled(relay, {"k.0": "succeeded", "k.2": "succeeded"}, tick=0.5)
        assert receiver.arrivals == [("k", 0)] * 3 + [("k", 1), ("k", 2), ("k", 0)]
        assert receiver.violations == []


async def test_a_delivery_being_attempted_cannot_be_cancelled(tmp_path: Path) -> None:
    async with receiving(tmp_path, lambda key, n, seen: Reply(200, delay=0.3), Ordering.FIFO) as (receiver, relay):
        await post(relay, event("k", 0))
        await receiver.wait_until(lambda: receiver.arrivals == [("k", 0)])
        [delivery] = await deliveries(relay, "k.0")
        status, answer = await call(relay, "POST", f"/v1/deliveries/{delivery['id']}/cancel")
        assert status == 409 and answer["error"]["code"] == "conflict", answer
        await settled(relay, {"k.0": "succeeded"}, tick=0.5)


async def test_latest_a_parked_head_is_superseded_by_a_newer_event(tmp_path: Path) -> None:
    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(503) if n == 0 else Reply(200)

    async with receiving(tmp_path, decide, Ordering.LATEST, retry_schedule=(0.0,)) as (receiver, relay):
        await post(relay, event("k", 0))
        await settled(relay, {"k.0": "failed"})
        await post(relay, event("k", 1))
        await settled(relay, {"k.0": "superseded", "k.1": "succeeded"}, tick=0.5)
        relay.advance(3 * 3600)  # the re-drive interval passes: nothing of k.0 again
        await settled(relay, {"k.0": "superseded"})
        assert receiver.arrivals == [("k", 0), ("k", 1)]


async def test_keys_are_per_webhook_and_events_without_a_key_are_not_held(tmp_path: Path) -> None:
    def decide(key: str, n: int, seen: int) -> Reply:
        return Reply(503) if (key, n) == ("k", 0) else Reply(200)

    async with keyed(KeyedReceiver(decide, strict=False)) as receiver:
        hooks = [
            ordered(receiver.url("/fifo"), Ordering.FIFO, id="fifo", retry_schedule=(0.0,)),
            ordered(receiver.url("/plain"), Ordering.NONE, id="plain", retry_schedule=(0.0,)),
        ]
        async with relay_for(tmp_path, hooks) as relay:
            unkeyed = {"id": "free.0", "type": "t", "data": {"key": "free", "n": 0}}
            await post(relay, [event("k", 0), event("k", 1), unkeyed])
            await relay.wait_until(
                lambda: _statuses_are(relay, "k.1", ["pending", "succeeded"]), timeout=5
            )  # held behind k.0 for "fifo", not for "plain"
            await relay.wait_until(lambda: _statuses_are(relay, "free.0", ["succeeded", "succeeded"]))
            assert await statuses(relay, "k.0") == ["failed", "failed"]
