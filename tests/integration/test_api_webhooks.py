"""Webhooks through the management API (CONTRACT §5), end to end against a running relay and real receivers:
create / list / show / patch / delete, the secret shown once, 409 for config-declared webhooks, rotation checked
with the ``standardwebhooks`` library, the test send, and 400s that name the field."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson
import pytest
from standardwebhooks.webhooks import Webhook as StandardVerifier
from standardwebhooks.webhooks import WebhookVerificationError
from structlog.testing import capture_logs

from relay.clock import FakeClock
from relay.models import Secret, SignatureScheme
from relay.signing import sign_hmac_sha256
from relay.store.sqlite import SqliteStore
from relay.webhook_specs import SECRET_MESSAGE
from tests.support.management import call, create_webhook, error_of
from tests.support.receiver import Receiver, Reply
from tests.support.relay_harness import RunningRelay, running_relay, webhook

CONFIG_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_create_shows_the_secret_once(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, answer = await call(
            relay, "POST", "/v1/webhooks", {"url": receiver.url(), "events": ["consent.created", "consent.withdrawn"]}
        )
        assert status == 201 and answer["success"] is True
        assert answer["meta"] == {"message": SECRET_MESSAGE}
        created = answer["data"]
        assert created["id"].startswith("whk_") and len(created["id"]) == 30
        assert created["secret"].startswith("whsec_")
        assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
        assert created["is_active"] is True and created["source"] == "api"
        assert created["created_at"].endswith("Z")
        assert created["events"] == ["consent.created", "consent.withdrawn"]
        assert created["signature"] == "standard" and created["format"] == "envelope"

        status, shown = await call(relay, "GET", f"/v1/webhooks/{created['id']}")
        assert status == 200 and "secret" not in shown["data"]
        assert {k: v for k, v in created.items() if k != "secret"} == shown["data"]
        status, listed = await call(relay, "GET", "/v1/webhooks")
        assert status == 200 and [w["id"] for w in listed["data"]] == [created["id"]]
        assert "secret" not in listed["data"][0] and listed["meta"] == {"next_cursor": None}
        assert created["secret"] not in str(listed) + str(shown)


async def test_an_api_webhook_receives_events_signed_with_its_secret(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        created = await create_webhook(relay, url=receiver.url(), events=["consent.*"])
        _, answer = await relay.post({"type": "consent.created", "data": {"n": 1}})
        assert answer["data"]["deliveries"] == 1
        [request] = await receiver.wait_for(1)
        assert StandardVerifier(created["secret"]).verify(request.body, dict(request.headers))["data"] == {"n": 1}
        _, answer = await relay.post({"type": "policy.created", "data": {}})
        assert answer["data"]["deliveries"] == 0


async def test_a_chosen_secret_and_the_consentproof_scheme(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        secret = "my-hand-chosen-secret"
        created = await create_webhook(relay, url=receiver.url(), secret=secret, signature="hmac-sha256")
        assert created["secret"] == secret
        await relay.post({"type": "t", "data": {}})
        [request] = await receiver.wait_for(1)
        assert request.headers["x-signature"] == sign_hmac_sha256(secret, request.body)
        assert request.headers["x-webhook-id"] == created["id"]


async def test_views_never_show_credentials(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        created = await create_webhook(
            relay,
            url=receiver.url(),
            auth={"type": "basic", "username": "relay", "password": "hunter2-password"},
            headers={"X-Tenant": "acme", "X-Api-Key": "static-key-value"},
            description="CRM",
            retry_schedule=["0s", "1m", 300],
            timeout="5s",
            rate_limit="600/m",
        )
        _, shown = await call(relay, "GET", f"/v1/webhooks/{created['id']}")
        view = shown["data"]
        assert view["auth"] == {"type": "basic", "username": "relay"}
        assert view["headers"] == {"X-Tenant": "acme", "X-Api-Key": "***"}
        assert view["retry_schedule"] == ["0s", "1m", "5m"] and view["timeout"] == "5s"
        assert view["rate_limit"] == "10/s" and view["description"] == "CRM"
        assert "hunter2" not in str(view) and "static-key-value" not in str(view)


async def test_config_declared_webhooks_are_shown_but_not_changed(tmp_path: Path, receiver: Receiver) -> None:
    hook = webhook(receiver.url(), id="crm", secret=Secret(CONFIG_SECRET), signature=SignatureScheme.STANDARD)
    async with running_relay(tmp_path, [hook]) as relay:
        status, shown = await call(relay, "GET", "/v1/webhooks/crm")
        assert status == 200 and shown["data"]["source"] == "config" and "secret" not in shown["data"]
        for method, path, body in [
            ("PATCH", "/v1/webhooks/crm", {"is_active": False}),
            ("DELETE", "/v1/webhooks/crm", None),
            ("POST", "/v1/webhooks/crm/rotate-secret", {"overlap": "1h"}),
        ]:
            status, answer = await call(relay, method, path, body) if body else await call(relay, method, path)
            assert status == 409, (method, path)
            assert error_of(answer)[0] == "conflict" and "configuration file" in answer["error"]["message"]
        unchanged = relay.daemon.registry.get("crm")
        assert unchanged is not None and unchanged.is_active and unchanged.secret == Secret(CONFIG_SECRET)
        status, answer = await call(relay, "POST", "/v1/webhooks/crm/test")
        assert status == 200 and answer["data"]["status_code"] == 200


async def test_patch_merges_changes_and_takes_effect_at_once(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        created = await create_webhook(
            relay, url=receiver.url(), events=["a"], headers={"X-One": "1"}, description="first"
        )
        path = f"/v1/webhooks/{created['id']}"
        status, answer = await call(
            relay, "PATCH", path, {"events": ["b"], "headers": {"X-One": None, "X-Two": "2"}, "description": None}
        )
        assert status == 200, answer
        changed = answer["data"]
        assert changed["events"] == ["b"] and changed["headers"] == {"X-Two": "2"} and changed["description"] is None
        assert changed["created_at"] == created["created_at"] and "secret" not in changed
        _, posted = await relay.post([{"type": "a", "data": {}}, {"type": "b", "data": {}}])
        assert [e["deliveries"] for e in posted["data"]] == [0, 1]
        [request] = await receiver.wait_for(1)
        assert request.headers["x-two"] == "2" and "x-one" not in request.headers
        # The signing secret did not change.
        StandardVerifier(created["secret"]).verify(request.body, dict(request.headers))


async def test_inactive_webhooks_hold_their_deliveries_and_resume(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/hook", [500, 200])
    clock = FakeClock()
    async with running_relay(tmp_path, [], clock=clock) as relay:
        created = await create_webhook(relay, url=receiver.url(), retry_schedule=["0s", "10s"])
        path = f"/v1/webhooks/{created['id']}"
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await receiver.wait_for(1)
        await relay.wait_until(lambda: _attempts(relay, event_id, 1))
        status, answer = await call(relay, "PATCH", path, {"is_active": False})
        assert status == 200 and answer["data"]["is_active"] is False
        _, posted = await relay.post({"type": "t", "data": {}})
        assert posted["data"]["deliveries"] == 0  # an inactive webhook takes no new events
        relay.advance(60)
        await relay.wait_until(lambda: _attempts(relay, event_id, 1))
        assert len(receiver.requests) == 1 and await relay.statuses(event_id) == ["pending"]  # held, not cancelled
        status, _ = await call(relay, "PATCH", path, {"is_active": True})
        assert status == 200
        await receiver.wait_for(2)
        await relay.wait_until(lambda: _has_status(relay, event_id, "succeeded"))


async def test_delete_cancels_pending_deliveries(tmp_path: Path, receiver: Receiver) -> None:
    receiver.default_status = 500
    async with running_relay(tmp_path, []) as relay:
        created = await create_webhook(relay, url=receiver.url(), retry_schedule=["0s", "1h"])
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await relay.wait_until(lambda: _attempts(relay, event_id, 1))
        status, body = await call(relay, "DELETE", f"/v1/webhooks/{created['id']}")
        assert status == 204 and body is None
        assert await relay.statuses(event_id) == ["cancelled"]  # kept, as cancelled
        status, answer = await call(relay, "GET", f"/v1/webhooks/{created['id']}")
        assert status == 404 and error_of(answer)[0] == "not_found"
        status, answer = await call(relay, "DELETE", f"/v1/webhooks/{created['id']}")
        assert status == 404
        _, posted = await relay.post({"type": "t", "data": {}})
        assert posted["data"]["deliveries"] == 0
        assert relay.sql("SELECT COUNT(*) FROM webhooks WHERE source = 'api'") == [(0,)]


async def test_rotation_signs_with_both_secrets_during_the_overlap_then_only_the_new(
    tmp_path: Path, receiver: Receiver
) -> None:
    # The fake clock starts two minutes in the past, so that both deliveries carry timestamps the
    # standardwebhooks verifier accepts (it allows five minutes either way of the real time).
    clock = FakeClock(start=float(int(time.time()) - 120))
    async with running_relay(tmp_path, [], clock=clock) as relay:
        created = await create_webhook(relay, url=receiver.url())
        old = created["secret"]
        status, answer = await call(relay, "POST", f"/v1/webhooks/{created['id']}/rotate-secret", {"overlap": "4m"})
        assert status == 200, answer
        new = answer["data"]["secret"]
        assert new != old and new.startswith("whsec_") and answer["meta"] == {"message": SECRET_MESSAGE}
        assert answer["data"]["previous_secret_until"] is not None
        _, shown = await call(relay, "GET", f"/v1/webhooks/{created['id']}")
        assert "secret" not in shown["data"] and new not in str(shown) and old not in str(shown)

        await relay.post({"type": "t", "data": {"n": 1}})
        [during] = await receiver.wait_for(1)
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        for secret in (old, new):
            assert StandardVerifier(secret).verify(during.body, dict(during.headers))["data"] == {"n": 1}

        relay.advance(4 * 60 + 1)
        await relay.post({"type": "t", "data": {"n": 2}})
        [_, after] = await receiver.wait_for(2)
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        assert StandardVerifier(new).verify(after.body, dict(after.headers))["data"] == {"n": 2}
        with pytest.raises(WebhookVerificationError):
            StandardVerifier(old).verify(after.body, dict(after.headers))


async def test_rotation_of_an_hmac_webhook_signs_with_the_new_secret(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        created = await create_webhook(
            relay, url=receiver.url(), secret="old-hmac-secret-0123", signature="hmac-sha256"
        )
        new = "new-hmac-secret-0123"
        status, answer = await call(relay, "POST", f"/v1/webhooks/{created['id']}/rotate-secret", {"secret": new})
        assert status == 200 and answer["data"]["secret"] == new
        await relay.post({"type": "t", "data": {}})
        [request] = await receiver.wait_for(1)
        assert request.headers["x-signature"] == sign_hmac_sha256(new, request.body)


async def test_secrets_that_sign_nothing_are_refused_naming_secret(tmp_path: Path, receiver: Receiver) -> None:
    hand_chosen = "my-hand-chosen-webhook-secret"  # fine for hmac-sha256; not base64, so not for standard
    async with running_relay(tmp_path, []) as relay:
        for body in [
            {"url": receiver.url(), "secret": "whsec_AA=="},  # one zero byte: anyone could sign
            {"url": receiver.url(), "secret": "#"},
            {"url": receiver.url(), "secret": hand_chosen},  # standard by default
            {"url": receiver.url(), "secret": "short-secret", "signature": "hmac-sha256"},
        ]:
            status, answer = await call(relay, "POST", "/v1/webhooks", body)
            assert status == 400 and error_of(answer) == ("validation_error", ["secret"]), (body, answer)
            assert body["secret"] not in str(answer)
        assert relay.sql("SELECT COUNT(*) FROM webhooks WHERE source = 'api'") == [(0,)]

        created = await create_webhook(relay, url=receiver.url(), secret=hand_chosen, signature="hmac-sha256")
        path = f"/v1/webhooks/{created['id']}"
        status, answer = await call(relay, "PATCH", path, {"signature": "standard"})
        assert status == 400 and error_of(answer) == ("validation_error", ["secret"]), answer
        _, shown = await call(relay, "GET", path)
        assert shown["data"]["signature"] == "hmac-sha256"
        status, answer = await call(relay, "POST", f"{path}/rotate-secret", {"secret": "short-secret"})
        assert status == 400 and error_of(answer) == ("validation_error", ["secret"]), answer
        status, answer = await call(relay, "POST", f"{path}/rotate-secret", {"secret": "a-longer-hmac-secret"})
        assert status == 200 and answer["data"]["secret"] == "a-longer-hmac-secret"


async def test_a_weak_secret_stored_before_the_rules_still_signs_and_is_reported_at_startup(
    tmp_path: Path, receiver: Receiver
) -> None:
    weak, weak_hmac, strong = "whsec_AA==", "tiny-hmac", CONFIG_SECRET
    store = SqliteStore(tmp_path / "relay.db")  # where running_relay keeps it; written as an older relay would have
    await store.open()
    for webhook_id, spec in [
        ("whk_weak", {"url": receiver.url("/weak"), "secret": weak}),
        ("whk_weak_hmac", {"url": receiver.url("/hmac"), "secret": weak_hmac, "signature": "hmac-sha256"}),
        ("whk_strong", {"url": receiver.url("/strong"), "secret": strong}),
    ]:
        assert await store.insert_api_webhook(webhook_id, orjson.dumps(spec), time.time())
    await store.close()

    with capture_logs() as logs:
        async with running_relay(tmp_path, []) as relay:
            _, answer = await relay.post({"type": "t", "data": {}})
            assert answer["data"]["deliveries"] == 3  # all three still loaded and subscribed
            by_path = {r.path: r for r in await receiver.wait_for(3)}
    assert StandardVerifier(weak).verify(by_path["/weak"].body, dict(by_path["/weak"].headers))  # signed as before
    assert by_path["/hmac"].headers["x-signature"] == sign_hmac_sha256(weak_hmac, by_path["/hmac"].body)
    warned = [e for e in logs if e["event"] == "weak_secret"]
    assert [(e["webhook_id"], e["field"], e["log_level"]) for e in warned] == [
        ("whk_weak", "secret", "warning"),
        ("whk_weak_hmac", "secret", "warning"),
    ]
    assert all("rotate-secret" in e["hint"] for e in warned)
    for secret in (weak, weak.removeprefix("whsec_"), weak_hmac, strong):
        assert not any(secret in str(entry) for entry in logs)


async def test_the_test_send_goes_to_that_webhook_alone_and_answers_the_attempt(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script("/failing", [Reply(500, body=b"not today")])
    other = webhook(receiver.url("/other"), id="other")
    async with running_relay(tmp_path, [other]) as relay:
        created = await create_webhook(relay, url=receiver.url("/hook"))
        status, answer = await call(relay, "POST", f"/v1/webhooks/{created['id']}/test")
        assert status == 200, answer
        result = answer["data"]
        assert result["status_code"] == 200 and result["error"] is None and result["succeeded"] is True
        assert result["number"] == 1 and result["duration_ms"] >= 0 and result["next_attempt_at"] is None
        [request] = receiver.requests
        assert request.path == "/hook" and request.headers["x-event-type"] == "webhook.test"
        assert request.json["type"] == "webhook.test" and request.json["data"]["webhook_id"] == created["id"]
        assert request.headers["x-event-id"] == result["event_id"]
        StandardVerifier(created["secret"]).verify(request.body, dict(request.headers))
        # Not stored: no event, no delivery, nothing in the stats.
        status, _ = await call(relay, "GET", f"/v1/events/{result['event_id']}")
        assert status == 404
        assert relay.sql("SELECT COUNT(*) FROM deliveries") == [(0,)]

        failing = await create_webhook(relay, url=receiver.url("/failing"))
        _, answer = await call(relay, "POST", f"/v1/webhooks/{failing['id']}/test")
        assert answer["data"]["status_code"] == 500 and answer["data"]["error"] == "http_error"
        assert answer["data"]["response_body"] == "not today" and answer["data"]["succeeded"] is False

        nowhere = await create_webhook(relay, url="http://127.0.0.1:9/nowhere")
        _, answer = await call(relay, "POST", f"/v1/webhooks/{nowhere['id']}/test")
        assert answer["data"]["status_code"] is None and answer["data"]["error"] == "connect_error"
        assert not receiver.requests_to("/other")
        status, _ = await call(relay, "POST", "/v1/webhooks/whk_missing/test")
        assert status == 404


async def test_webhook_lists_page_newest_first(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    async with running_relay(tmp_path, [webhook(receiver.url(), id="cfg")], clock=clock) as relay:
        ids = []
        for _ in range(4):
            relay.advance(1)
            ids.append((await create_webhook(relay, url=receiver.url()))["id"])
        seen: list[str] = []
        cursor = None
        while True:
            query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
            status, answer = await call(relay, "GET", f"/v1/webhooks{query}")
            assert status == 200 and len(answer["data"]) <= 2
            seen.extend(w["id"] for w in answer["data"])
            cursor = answer["meta"]["next_cursor"]
            if cursor is None:
                break
        assert seen == [*reversed(ids), "cfg"]


async def test_bad_requests_name_the_field(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, [webhook(receiver.url(), id="cfg")]) as relay:
        cases: list[tuple[str, str, object, list[str]]] = [
            ("POST", "/v1/webhooks", {}, ["url"]),
            ("POST", "/v1/webhooks", [], [""]),
            (
                "POST",
                "/v1/webhooks",
                {"url": "ftp://x", "events": ["ok", 1], "signature": "rot13", "timeout": "forever", "id": "mine"},
                ["id", "url", "events[1]", "signature", "timeout"],
            ),
            ("POST", "/v1/webhooks", {"url": receiver.url(), "colour": "red"}, ["colour"]),
            (
                "POST",
                "/v1/webhooks",
                {"url": receiver.url(), "auth": {"type": "oauth2", "client_id": "r", "client_secret": "s"}},
                ["auth.token_url"],
            ),
            ("POST", "/v1/webhooks", {"url": receiver.url(), "retry_schedule": ["0s", "400d"]}, ["retry_schedule[1]"]),
            ("POST", "/v1/webhooks/cfg/rotate-secret", {"overlap": "31d"}, ["overlap"]),
            ("POST", "/v1/failures/redrive", {"include_dead": "yes", "webhook": "x"}, ["webhook", "include_dead"]),
            ("POST", "/v1/events/e/replay", {"webhook_id": 5}, ["webhook_id"]),
        ]
        for method, path, body, paths in cases:
            status, answer = await call(relay, method, path, body)
            assert status == 400, (path, body, answer)
            code, named = error_of(answer)
            assert code == "validation_error" and sorted(named) == sorted(paths), (body, answer)

        created = await create_webhook(relay, url=receiver.url())
        path = f"/v1/webhooks/{created['id']}"
        status, answer = await call(relay, "PATCH", path, {"secret": "x", "timeout": -1})
        assert status == 400 and sorted(error_of(answer)[1]) == ["secret", "timeout"]
        for query, field in [
            ("?limit=0", "limit"),
            ("?limit=501", "limit"),
            ("?limit=ten", "limit"),
            ("?status=lost", "status"),
            ("?cursor=not-a-cursor", "cursor"),
        ]:
            status, answer = await call(relay, "GET", f"{path}/deliveries{query}")
            assert status == 400 and error_of(answer) == ("validation_error", [field]), query
        status, answer = await call(relay, "GET", "/v1/webhooks?limit=1000")
        assert status == 400 and error_of(answer) == ("validation_error", ["limit"])
        status, answer = await call(relay, "GET", f"{path}/deliveries?limit=500")
        assert status == 200

        status, answer = await call(
            relay, "POST", "/v1/webhooks", raw=b"{", headers={"Content-Type": "application/json"}
        )
        assert status == 400 and error_of(answer)[0] == "invalid_json"
        status, answer = await call(relay, "POST", "/v1/webhooks", raw=b"url=x", headers={"Content-Type": "text/plain"})
        assert status == 415 and error_of(answer)[0] == "unsupported_media_type"


async def test_every_management_route_needs_a_key_except_the_openapi_document(tmp_path: Path) -> None:
    async with running_relay(tmp_path, []) as relay:
        for method, path in [
            ("GET", "/v1/webhooks"),
            ("POST", "/v1/webhooks"),
            ("GET", "/v1/webhooks/x"),
            ("PATCH", "/v1/webhooks/x"),
            ("DELETE", "/v1/webhooks/x"),
            ("POST", "/v1/webhooks/x/rotate-secret"),
            ("POST", "/v1/webhooks/x/test"),
            ("GET", "/v1/webhooks/x/deliveries"),
            ("POST", "/v1/events/x/replay"),
            ("POST", "/v1/failures/redrive"),
            ("GET", "/v1/stats"),
        ]:
            for key in (None, "wrong"):
                status, answer = await call(relay, method, path, key=key)
                assert status == 401 and error_of(answer)[0] == "unauthorized", (method, path)
        status, document = await call(relay, "GET", "/v1/openapi.json", key=None)
        assert status == 200 and document["openapi"].startswith("3.1")
        status, answer = await call(relay, "GET", "/v1/webhooks/whk_nope")
        assert status == 404 and error_of(answer)[0] == "not_found"


async def _attempts(relay: RunningRelay, event_id: str, count: int) -> bool:
    [delivery] = (await relay.event(event_id))["deliveries"]
    return len(delivery["attempts"]) == count


async def _has_status(relay: RunningRelay, event_id: str, status: str) -> bool:
    return await relay.statuses(event_id) == [status]
