"""Delivery history, replay, re-drive and stats through the management API, and API-created webhooks surviving
a restart and a config reload, against a running relay with real receivers (time moved by a FakeClock)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from standardwebhooks.webhooks import Webhook as StandardVerifier
from structlog.testing import capture_logs

from relay.clock import FakeClock
from tests.support.management import call, create_webhook, error_of
from tests.support.receiver import Receiver
from tests.support.relay_harness import RunningRelay, make_config, running_relay, webhook

HOUR = 3600.0


async def test_history_newest_first_with_attempts_and_pages(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        created = await create_webhook(relay, url=receiver.url())
        event_ids = []
        for n in range(5):
            _, answer = await relay.post({"type": "t", "data": {"n": n}})
            event_ids.append(answer["data"]["id"])
        await receiver.wait_for(5)
        for event_id in event_ids:
            await relay.wait_until(lambda e=event_id: _is(relay, e, "succeeded"))

        path = f"/v1/webhooks/{created['id']}/deliveries"
        pages = []
        cursor = None
        while True:
            status, answer = await call(relay, "GET", path + "?limit=2" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200, answer
            pages.append(answer["data"])
            cursor = answer["meta"]["next_cursor"]
            if cursor is None:
                break
        assert [len(page) for page in pages] == [2, 2, 1]
        shown = [d for page in pages for d in page]
        assert [d["event_id"] for d in shown] == list(reversed(event_ids))
        for delivery in shown:
            assert delivery["id"].startswith("dlv_") and delivery["webhook_id"] == created["id"]
            assert delivery["status"] == "succeeded" and delivery["attempt_count"] == 1
            [attempt] = delivery["attempts"]
            assert attempt["number"] == 1 and attempt["status_code"] == 200 and attempt["error"] is None
        status, answer = await call(relay, "GET", f"{path}?status=failed")
        assert status == 200 and answer["data"] == [] and answer["meta"] == {"next_cursor": None}
        status, answer = await call(relay, "GET", f"{path}?status=succeeded&limit=500")
        assert len(answer["data"]) == 5


async def test_replay_creates_new_deliveries(tmp_path: Path, receiver: Receiver) -> None:
    hooks = [webhook(receiver.url("/all"), id="all"), webhook(receiver.url("/other"), id="other", events=("x.*",))]
    async with running_relay(tmp_path, hooks) as relay:
        _, answer = await relay.post({"type": "t", "data": {"n": 1}})
        event_id = answer["data"]["id"]
        await receiver.wait_for(1)
        await relay.wait_until(lambda: _is(relay, event_id, "succeeded"))

        status, answer = await call(relay, "POST", f"/v1/events/{event_id}/replay")
        assert status == 202, answer
        [replayed] = answer["data"]["deliveries"]
        assert replayed["event_id"] == event_id and replayed["webhook_id"] == "all"
        assert replayed["status"] in ("pending", "delivering", "succeeded") and replayed["attempts"] == []
        [first, again] = await receiver.wait_for(2)
        assert again.headers["x-event-id"] == first.headers["x-event-id"] == event_id
        assert again.headers["x-delivery-attempt"] == "1"

        # To one webhook, even one the event's type does not match.
        status, answer = await call(relay, "POST", f"/v1/events/{event_id}/replay", {"webhook_id": "other"})
        assert status == 202 and [d["webhook_id"] for d in answer["data"]["deliveries"]] == ["other"]
        await receiver.wait_for(3)
        deliveries = (await relay.event(event_id))["deliveries"]
        assert len(deliveries) == 3 and len({d["id"] for d in deliveries}) == 3

        status, answer = await call(relay, "POST", "/v1/events/evt_missing/replay")
        assert status == 404 and error_of(answer)[0] == "not_found"
        status, answer = await call(relay, "POST", f"/v1/events/{event_id}/replay", {"webhook_id": "gone"})
        assert status == 404 and "gone" in answer["error"]["message"]


async def test_redrive_sends_parked_deliveries_again_now(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/hook", [500, 200])
    receiver.script("/other", [500])
    clock = FakeClock()
    async with running_relay(
        tmp_path, [webhook(receiver.url("/other"), id="other", retry_schedule=(0.0,))], clock=clock
    ) as relay:
        created = await create_webhook(relay, url=receiver.url("/hook"), retry_schedule=["0s"])
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await relay.wait_until(lambda: _statuses_are(relay, event_id, ["failed", "failed"]))
        assert len(receiver.requests) == 2  # parked: the next re-drive is an hour away on the fake clock

        status, answer = await call(relay, "POST", "/v1/failures/redrive", {"webhook_id": created["id"]})
        assert status == 200 and answer["data"] == {"redriven": 1}
        await relay.wait_until(lambda: _statuses_are(relay, event_id, ["failed", "succeeded"], by="webhook_id"))
        assert len(receiver.requests_to("/hook")) == 2 and len(receiver.requests_to("/other")) == 1

        status, answer = await call(relay, "POST", "/v1/failures/redrive")
        assert status == 200 and answer["data"] == {"redriven": 1}  # the config webhook's, still failing
        await receiver.wait_for(4)
        status, answer = await call(relay, "POST", "/v1/failures/redrive", {"webhook_id": "nope"})
        assert status == 404


async def test_dead_deliveries_are_redriven_only_when_asked(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/hook", [500, 200])
    clock = FakeClock()
    async with running_relay(tmp_path, [], clock=clock, redrive_max_age=1.0) as relay:
        await create_webhook(relay, url=receiver.url(), retry_schedule=["0s"])
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await relay.wait_until(lambda: _is(relay, event_id, "dead"))
        status, answer = await call(relay, "POST", "/v1/failures/redrive", {})
        assert status == 200 and answer["data"] == {"redriven": 0}
        status, answer = await call(relay, "POST", "/v1/failures/redrive", {"include_dead": True})
        assert status == 200 and answer["data"] == {"redriven": 1}
        await receiver.wait_for(2)
        await relay.wait_until(lambda: _is(relay, event_id, "succeeded"))


async def test_stats_count_by_status_and_webhook(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/bad", [500])
    hooks = [webhook(receiver.url("/good"), id="good"), webhook(receiver.url("/bad"), id="bad", retry_schedule=(0.0,))]
    async with running_relay(tmp_path, hooks) as relay:
        for _ in range(2):
            _, answer = await relay.post({"type": "t", "data": {}})
            event_id = answer["data"]["id"]
            await relay.wait_until(lambda e=event_id: _statuses_are(relay, e, ["failed", "succeeded"], by="status"))
        status, answer = await call(relay, "GET", "/v1/stats")
        assert status == 200
        stats = answer["data"]
        assert stats["deliveries"] == {
            "pending": 0,
            "delivering": 0,
            "succeeded": 2,
            "failed": 2,
            "dead": 0,
            "cancelled": 0,
            "superseded": 0,
        }
        assert stats["webhooks"]["good"]["succeeded"] == 2 and stats["webhooks"]["good"]["failed"] == 0
        assert stats["webhooks"]["bad"]["failed"] == 2


async def test_api_webhooks_survive_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    config_hook = webhook(receiver.url("/cfg"), id="cfg")
    async with running_relay(tmp_path, [config_hook]) as relay:
        created = await create_webhook(relay, url=receiver.url("/api"), events=["consent.*"], description="kept")
        status, rotated = await call(relay, "POST", f"/v1/webhooks/{created['id']}/rotate-secret", {"overlap": "1h"})
        assert status == 200
        paused = await create_webhook(relay, url=receiver.url("/paused"), is_active=False)
        _, before = await call(relay, "GET", f"/v1/webhooks/{created['id']}")

    async with running_relay(tmp_path, [config_hook]) as relay:
        _, after = await call(relay, "GET", f"/v1/webhooks/{created['id']}")
        assert after == before
        _, listed = await call(relay, "GET", "/v1/webhooks")
        assert {w["id"]: w["source"] for w in listed["data"]} == {
            "cfg": "config",
            created["id"]: "api",
            paused["id"]: "api",
        }
        _, answer = await relay.post({"type": "consent.created", "data": {"n": 1}})
        assert answer["data"]["deliveries"] == 2  # cfg and the API one; the paused one takes nothing
        await receiver.wait_for(2)
        [request] = receiver.requests_to("/api")
        headers = dict(request.headers)
        for secret in (created["secret"], rotated["data"]["secret"]):  # the overlap survived the restart too
            StandardVerifier(secret).verify(request.body, headers)


async def test_a_reload_keeps_api_webhooks_and_refuses_a_clashing_id(tmp_path: Path, receiver: Receiver) -> None:
    config = make_config(tmp_path, [webhook(receiver.url("/cfg"), id="cfg")])
    async with running_relay(tmp_path, [], config=config) as relay:
        created = await create_webhook(relay, url=receiver.url("/api"))
        relay.daemon.reload_config = lambda: replace(config, webhooks=(webhook(receiver.url("/new"), id="new"),))
        await relay.daemon.reload()
        _, listed = await call(relay, "GET", "/v1/webhooks")
        assert sorted(w["id"] for w in listed["data"]) == sorted([created["id"], "new"])
        assert relay.sql("SELECT id, source FROM webhooks ORDER BY source, id") == [
            (created["id"], "api"),
            ("new", "config"),
        ]

        clash = webhook(receiver.url("/clash"), id=created["id"])
        relay.daemon.reload_config = lambda: replace(config, webhooks=(clash,))
        with capture_logs() as logs:
            await relay.daemon.reload()
        [failed] = [line for line in logs if line["event"] == "reload_failed"]
        assert "webhooks[0].id" in failed["problems"][0] and "API" in failed["problems"][0]
        registered = relay.daemon.registry.get(created["id"])
        assert registered is not None and registered.source == "api" and registered.url == receiver.url("/api")
        assert relay.daemon.registry.get("new") is not None  # the running configuration is kept
        _, answer = await relay.post({"type": "t", "data": {}})
        assert answer["data"]["deliveries"] == 2


async def _is(relay: RunningRelay, event_id: str, status: str) -> bool:
    return await relay.statuses(event_id) == [status]


async def _statuses_are(relay: RunningRelay, event_id: str, expected: list[str], *, by: str = "status") -> bool:
    deliveries = (await relay.event(event_id))["deliveries"]
    if by == "webhook_id":  # statuses ordered by webhook id, so the expectation does not depend on timing
        deliveries = sorted(deliveries, key=lambda d: d["webhook_id"])
        return [d["status"] for d in deliveries] == expected
    return sorted(d["status"] for d in deliveries) == sorted(expected)
