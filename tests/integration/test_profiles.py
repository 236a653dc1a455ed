"""Each platform profile (config/profiles/) end to end, in-process: the guide's own example payload, posted as its
producer would, through a relay running the profile's webhook, to a receiver written from the same guide.

Retry timings run on the injected clock (the profile's real schedule, no waiting).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.clock import FakeClock
from relay.config import DeliveryConfig
from relay.models import Webhook, format_time
from relay.render import flatten
from tests.support.guide_receivers import ConsentProofEndpoint, NodeVerifier, expressconsent_signature_ok
from tests.support.node_verify import node_verify
from tests.support.oauth_server import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OAuthServer
from tests.support.profiles import (
    LOCAL,
    PROFILE_ENV,
    commented_tables,
    delivery_hints,
    load_profile_config,
    read_profile,
    replace_auth,
    set_keys,
    uncomment,
)
from tests.support.receiver import Receiver, Reply
from tests.support.relay_harness import API_KEY, RunningRelay, running_relay
from tests.support.seed_payloads import (
    CONSENTPROOF_CONSENT_CREATED,
    CONSENTPROOF_TYPES,
    DATAGUARD_MESSAGE,
    DIDOMI_EVENT_CREATED,
    DIDOMI_EVENT_CREATED_DATA_FLAT,
    DIDOMI_EVENT_CREATED_FLATTENED_BY_DIDOMI,
    DIDOMI_EVENT_DELETED,
    DIDOMI_USER_UPDATED,
    EXPRESSCONSENT_SNAPSHOT,
    consentproof_events,
)

MIN, HOUR = 60.0, 3600.0
CONSENTPROOF_SECRET = PROFILE_ENV["CONSENTPROOF_WEBHOOK_SECRET"]


def declared(
    tmp_path: Path, text: str, *, hints: bool = False, environ: dict[str, str] = PROFILE_ENV
) -> tuple[Webhook, dict[str, Any]]:
    """The webhook a profile's text declares, loaded by ``load_config``, and the ``[delivery]`` settings to run
    it with: the defaults (plus the profile's commented hints when ``hints``), local destinations allowed, and
    no jitter, so that the fake clock lands exactly on each step."""
    config = load_profile_config(tmp_path, text, environ=environ, **LOCAL, **(delivery_hints(text) if hints else {}))
    [hook] = config.webhooks
    settings = {f.name: getattr(config.delivery, f.name) for f in dataclasses.fields(DeliveryConfig)}
    return hook, {**settings, "jitter": 0.0}


async def settle(relay: RunningRelay, event_id: str, attempts: int, status: str) -> list[dict[str, Any]]:
    """Wait until the event's one delivery has ``attempts`` attempts and ``status``; answer its attempts."""
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        [delivery] = (await relay.event(event_id))["deliveries"]
        found[:] = delivery["attempts"]
        return bool(len(delivery["attempts"]) == attempts and delivery["status"] == status)

    await relay.wait_until(check)
    return found


def seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def gaps(attempts: list[dict[str, Any]]) -> list[float]:
    starts = [seconds(a["started_at"]) for a in attempts]
    return [round(later - earlier, 3) for earlier, later in itertools.pairwise(starts)]


# -- ExpressConsent --------------------------------------------------------------------------------------------


async def test_expressconsent_snapshot_as_is_hmac_signed_and_resent_until_a_2xx(
    tmp_path: Path, receiver: Receiver
) -> None:
    # "send a 200 response back ... it should not be resent": anything but a 2xx is resent; a 204 is receipt too.
    receiver.script("/expressconsent", [500, 404, Reply(302, headers={"Location": "/elsewhere"}), 204])
    text = set_keys(read_profile("expressconsent"), url=receiver.url("/expressconsent"))
    hook, settings = declared(tmp_path, text)
    async with running_relay(tmp_path, [hook], clock=FakeClock(), **settings) as relay:
        status, answer = await relay.post({"type": "snapshot.created", "data": EXPRESSCONSENT_SNAPSHOT})
        assert status == 202 and answer["data"]["deliveries"] == 1
        event_id = answer["data"]["id"]
        await settle(relay, event_id, 1, "pending")
        for number, step in enumerate(settings["retry_schedule"][1:4], start=2):  # the default 1m, 5m, 30m
            relay.advance(step)
            await settle(relay, event_id, number, "pending" if number < 4 else "succeeded")
        attempts = (await relay.event(event_id))["deliveries"][0]["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 404, 302, 204]
    assert gaps(attempts) == [1 * MIN, 5 * MIN, 30 * MIN]
    assert receiver.requests_to("/elsewhere") == []
    secret = PROFILE_ENV["EXPRESSCONSENT_WEBHOOK_SECRET"]
    for request in receiver.requests:
        assert request.body == orjson.dumps(EXPRESSCONSENT_SNAPSHOT)  # the snapshot itself, no envelope
        assert request.json == EXPRESSCONSENT_SNAPSHOT
        assert expressconsent_signature_ok(request.body, request.headers["x-signature"], secret)
        assert request.headers["x-event-type"] == "snapshot.created"
    assert not expressconsent_signature_ok(receiver.requests[0].body, receiver.requests[0].headers["x-signature"], "x")


async def test_expressconsent_without_a_secret_is_unsigned(tmp_path: Path, receiver: Receiver) -> None:
    text = set_keys(read_profile("expressconsent"), url=receiver.url("/expressconsent"), secret=None, signature=None)
    hook, settings = declared(tmp_path, text)
    async with running_relay(tmp_path, [hook], **settings) as relay:
        await relay.post({"type": "snapshot.created", "data": EXPRESSCONSENT_SNAPSHOT})
        [request] = await receiver.wait_for(1)
    assert request.json == EXPRESSCONSENT_SNAPSHOT
    assert not {"x-signature", "webhook-signature", "authorization"} & set(request.headers)


# -- ConsentProof ----------------------------------------------------------------------------------------------


async def test_consentproof_seven_types_verified_by_the_guides_node_code_and_deduplicated(tmp_path: Path) -> None:
    events = consentproof_events()
    assert [event["type"] for event in events] == list(CONSENTPROOF_TYPES)
    lost = "evt_xyz791"  # consent.withdrawn: handled, but the answer is lost, so relay resends it
    async with (
        NodeVerifier() as verify,
        ConsentProofEndpoint(verify, CONSENTPROOF_SECRET, lose_answer_for=[lost]) as endpoint,
    ):
        hook, settings = declared(tmp_path, set_keys(read_profile("consentproof"), url=endpoint.url))
        async with running_relay(tmp_path, [hook], clock=FakeClock(), **settings) as relay:
            status, answer = await relay.post(events)  # one batch, each object as ConsentProof shows it
            assert status == 202 and [item["deliveries"] for item in answer["data"]] == [1] * 7
            await endpoint.wait_for(7)
            relay.advance(1 * MIN)
            await endpoint.wait_for(8)
            await settle(relay, lost, 2, "succeeded")
            history = await relay.event(lost)
            for event in events:
                assert await relay.statuses(event["id"]) == ["succeeded"]

    assert all(seen.verified and seen.status in (200, 500) for seen in endpoint.seen)
    assert endpoint.handled == {event["id"]: event for event in events}  # each once, exactly as posted
    assert endpoint.duplicates == [lost]
    assert endpoint.handled["evt_xyz789"] == CONSENTPROOF_CONSENT_CREATED  # the guide's own payload, unchanged
    for seen in endpoint.seen:
        assert seen.headers["x-webhook-id"] == "consentproof"
        assert seen.headers["x-event-id"] == seen.json["id"]
        assert seen.headers["x-timestamp"].isdigit()
    # The delivery history ("You can view delivery history in your dashboard"): GET /v1/events/{id}.
    [delivery] = history["deliveries"]
    assert delivery["webhook_id"] == "consentproof" and delivery["status"] == "succeeded"
    assert [(a["number"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [
        (1, 500, "http_error"),
        (2, 200, None),
    ]
    assert delivery["attempts"][1]["response_body"] == '{"received": true}'


async def test_consentproof_guide_code_refuses_a_wrong_secret(tmp_path: Path) -> None:
    async with NodeVerifier() as verify, ConsentProofEndpoint(verify, "not-the-webhook-secret") as endpoint:
        hook, settings = declared(tmp_path, set_keys(read_profile("consentproof"), url=endpoint.url))
        async with running_relay(tmp_path, [hook], **{**settings, "retry_schedule": (0.0, HOUR)}) as relay:
            _, answer = await relay.post(CONSENTPROOF_CONSENT_CREATED)
            await endpoint.wait_for(1)
            [attempt] = await settle(relay, answer["data"]["id"], 1, "pending")
    assert attempt["status_code"] == 401 and attempt["response_body"] == '{"error": "Invalid signature"}'
    assert endpoint.handled == {}


@pytest.mark.parametrize(("hints", "final"), [(False, "failed"), (True, "dead")], ids=["default", "hint"])
async def test_consentproof_retries_at_0s_1m_5m_30m_2h_then_failed(
    tmp_path: Path, receiver: Receiver, hints: bool, final: str
) -> None:
    """Without the profile's [delivery] hint the fifth failure parks the delivery ("failed", re-driven hourly);
    with it (redrive_max_age = "3h") the fifth failure is final, as ConsentProof's is."""
    receiver.default_status = 500
    text = set_keys(read_profile("consentproof"), url=receiver.url("/consentproof"))
    hook, settings = declared(tmp_path, text, hints=hints)
    assert hook.retry_schedule == (0.0, 1 * MIN, 5 * MIN, 30 * MIN, 2 * HOUR)
    async with running_relay(tmp_path, [hook], clock=FakeClock(), **settings) as relay:
        _, answer = await relay.post(CONSENTPROOF_CONSENT_CREATED)
        event_id = answer["data"]["id"]
        await settle(relay, event_id, 1, "pending")
        for number, step in enumerate(hook.retry_schedule[1:], start=2):
            relay.advance(step - 1)  # one second early: nothing
            await settle(relay, event_id, number - 1, "pending")
            relay.advance(1)
            attempts = await settle(relay, event_id, number, "pending" if number < 5 else final)
        relay.advance(HOUR)
        await settle(relay, event_id, 6 if final == "failed" else 5, final)
    assert gaps(attempts) == [1 * MIN, 5 * MIN, 30 * MIN, 2 * HOUR]
    assert [(a["number"], a["status_code"], a["error"]) for a in attempts] == [
        (n, 500, "http_error") for n in range(1, 6)
    ]
    if final == "failed":
        assert seconds(attempts[-1]["next_attempt_at"]) == seconds(attempts[-1]["started_at"]) + HOUR
    else:
        assert attempts[-1]["next_attempt_at"] is None
    five = receiver.requests[:5]
    assert [r.headers["x-delivery-attempt"] for r in five] == ["1", "2", "3", "4", "5"]
    assert [int(r.headers["x-timestamp"]) for r in five] == [int(seconds(a["started_at"])) for a in attempts]
    assert {r.body for r in five} == {orjson.dumps(CONSENTPROOF_CONSENT_CREATED)}
    assert node_verify([(r.body, r.headers["x-signature"], CONSENTPROOF_SECRET) for r in five]) == [True] * 5


# -- Didomi ----------------------------------------------------------------------------------------------------

DIDOMI_ENV = {**PROFILE_ENV, "DIDOMI_OAUTH_CLIENT_SECRET": BASIC_CLIENT_SECRET}


def didomi_text(oauth_server: OAuthServer, url: str, *, flat: bool = False) -> str:
    text = set_keys(read_profile("didomi"), url=url, token_url=oauth_server.token_url, client_id=BASIC_CLIENT_ID)
    return uncomment(text, "format") if flat else text


def as_didomi_event(payload: dict[str, Any]) -> dict[str, Any]:
    """How the producer posts a Didomi payload to relay: the payload is the event's data."""
    return {"type": payload["type"], "data": payload}


async def test_didomi_every_event_when_no_type_is_selected_with_a_client_credentials_token(
    tmp_path: Path, receiver: Receiver, oauth_server: OAuthServer
) -> None:
    hook, settings = declared(tmp_path, didomi_text(oauth_server, receiver.url("/didomi")), environ=DIDOMI_ENV)
    assert hook.events == ()
    payloads = [DIDOMI_EVENT_CREATED, DIDOMI_USER_UPDATED, DIDOMI_EVENT_DELETED]
    unlisted = {"type": "consent.created", "data": {"subject_id": "user_123"}}  # a type no guide of Didomi's lists
    async with running_relay(tmp_path, [hook], **settings) as relay:
        status, answer = await relay.post([*map(as_didomi_event, payloads), unlisted])
        assert status == 202 and [item["deliveries"] for item in answer["data"]] == [1] * 4
        await receiver.wait_for(4)
    by_type = {request.headers["x-event-type"]: request for request in receiver.requests}
    for payload in payloads:
        assert by_type[payload["type"]].json == payload  # {type, parameters: {entity | old_entity, new_entity}}
    assert by_type["consent.created"].json == unlisted["data"]
    [authorization] = {request.headers["authorization"] for request in receiver.requests}
    assert authorization.startswith("Bearer ") and oauth_server.access_token_active(authorization.split(" ")[1])
    assert oauth_server.token_requests["client_credentials"] == 1
    assert not {"x-signature", "webhook-signature"} & set(receiver.requests[0].headers)  # Didomi does not sign


async def test_didomi_flatten_request_body(tmp_path: Path, receiver: Receiver, oauth_server: OAuthServer) -> None:
    text = didomi_text(oauth_server, receiver.url("/didomi"), flat=True)
    hook, settings = declared(tmp_path, text, environ=DIDOMI_ENV)
    async with running_relay(tmp_path, [hook], **settings) as relay:
        await relay.post([as_didomi_event(DIDOMI_EVENT_CREATED), as_didomi_event(DIDOMI_USER_UPDATED)])
        await receiver.wait_for(2)
    by_type = {request.headers["x-event-type"]: request.json for request in receiver.requests}
    assert by_type["event.created"] == DIDOMI_EVENT_CREATED_DATA_FLAT
    # Every key of Didomi's own flattened example that does not come from an array is there, with its value.
    scalar_keys = {k: v for k, v in DIDOMI_EVENT_CREATED_FLATTENED_BY_DIDOMI.items() if "__purposes__" not in k}
    assert scalar_keys.items() <= by_type["event.created"].items()
    assert by_type["user.updated"] == {
        "type": "user.updated",
        "parameters__source__id": "unique_event_id",
        "parameters__source__created_at": "2019-08-07T10:45:11Z",
        "parameters__old_entity__id": "didomi_user_id",
        "parameters__old_entity__organization_user_id": "organization_user_id",
        "parameters__new_entity__id": "didomi_user_id",
        "parameters__new_entity__organization_user_id": "organization_user_id",
    }
    assert by_type["user.updated"] == flatten(DIDOMI_USER_UPDATED)


async def test_didomi_tokens_are_accepted_by_the_real_resource_server(
    tmp_path: Path, oauth_server: OAuthServer
) -> None:
    hook, settings = declared(tmp_path, didomi_text(oauth_server, oauth_server.resource_url), environ=DIDOMI_ENV)
    async with running_relay(tmp_path, [hook], **settings) as relay:
        payloads = [DIDOMI_EVENT_CREATED, DIDOMI_USER_UPDATED, DIDOMI_EVENT_DELETED]
        await relay.post([as_didomi_event(payload) for payload in payloads])
        await relay.wait_until(
            lambda: relay.sql("SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded'") == [(3,)], timeout=10
        )
    assert oauth_server.resource_answers[200] == 3 and oauth_server.resource_answers[401] == 0
    assert oauth_server.token_requests["client_credentials"] == 1


async def test_didomi_at_least_five_retries_within_five_minutes_then_parked(
    tmp_path: Path, receiver: Receiver, oauth_server: OAuthServer
) -> None:
    receiver.default_status = 503  # "when your endpoint is down"
    hook, settings = declared(tmp_path, didomi_text(oauth_server, receiver.url("/didomi")), environ=DIDOMI_ENV)
    assert hook.retry_schedule is not None
    async with running_relay(tmp_path, [hook], clock=FakeClock(), **settings) as relay:
        _, answer = await relay.post(as_didomi_event(DIDOMI_USER_UPDATED))
        event_id = answer["data"]["id"]
        await settle(relay, event_id, 1, "pending")
        last = len(hook.retry_schedule)
        for number, step in enumerate(hook.retry_schedule[1:], start=2):
            relay.advance(step)
            attempts = await settle(relay, event_id, number, "pending" if number < last else "failed")
        # Parked: "placed in a permanent storage for later processing", re-driven every hour.
        relay.advance(HOUR)
        await settle(relay, event_id, last + 1, "failed")
        receiver.default_status = 200
        relay.advance(HOUR)
        await settle(relay, event_id, last + 2, "succeeded")
    assert len(attempts) >= 6  # the first attempt and at least five retries
    assert seconds(attempts[-1]["started_at"]) - seconds(attempts[0]["started_at"]) <= 5 * MIN
    assert all(a["status_code"] == 503 for a in attempts)
    assert {request.body for request in receiver.requests} == {orjson.dumps(DIDOMI_USER_UPDATED)}
    assert all(request.headers["authorization"].startswith("Bearer ") for request in receiver.requests)


# -- DataGuard -------------------------------------------------------------------------------------------------


async def test_dataguard_full_state_with_sent_at_per_attempt_then_the_failures_store_hourly(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.script("/dataguard", [500, 500, 500, 500, 200])
    text = replace_auth(set_keys(read_profile("dataguard"), url=receiver.url("/dataguard")), None)
    hook, settings = declared(tmp_path, text)
    assert hook.retry_schedule is not None and len(hook.retry_schedule) == 3
    async with running_relay(tmp_path, [hook], clock=FakeClock(), **settings) as relay:
        _, answer = await relay.post({"type": "citizen.updated", "data": DATAGUARD_MESSAGE})
        event_id = answer["data"]["id"]
        await settle(relay, event_id, 1, "pending")
        relay.advance(hook.retry_schedule[1])
        await settle(relay, event_id, 2, "pending")
        relay.advance(hook.retry_schedule[2])
        await settle(relay, event_id, 3, "failed")  # 3 attempts, then the failures store
        relay.advance(HOUR)
        await settle(relay, event_id, 4, "failed")
        relay.advance(HOUR)
        attempts = await settle(relay, event_id, 5, "succeeded")
    assert gaps(attempts) == [hook.retry_schedule[1], hook.retry_schedule[2], HOUR, HOUR]
    sent_at = [request.json["sentAt"] for request in receiver.requests]
    assert sent_at == [format_time(seconds(a["started_at"])) for a in attempts]  # each attempt's own send time
    assert len(set(sent_at)) == 5 and "iso-timestamp" not in sent_at
    for request in receiver.requests:
        state = {key: value for key, value in request.json.items() if key != "sentAt"}
        assert state == {key: value for key, value in DATAGUARD_MESSAGE.items() if key != "sentAt"}
        assert "authorization" not in request.headers


@pytest.mark.parametrize("variant", ["refresh_token", "bearer", "header", "none"])
async def test_dataguard_refresh_token_or_static_token_or_nothing(
    tmp_path: Path, receiver: Receiver, oauth_server: OAuthServer, variant: str
) -> None:
    text = set_keys(read_profile("dataguard"), url=receiver.url("/dataguard"))
    environ = dict(PROFILE_ENV)
    seeded = oauth_server.seed_refresh_token(BASIC_CLIENT_ID)
    if variant == "refresh_token":
        text = set_keys(text, token_url=oauth_server.token_url, client_id=BASIC_CLIENT_ID)
        environ |= {"DATAGUARD_CLIENT_SECRET": BASIC_CLIENT_SECRET, "DATAGUARD_REFRESH_TOKEN": seeded}
    else:
        alternatives = {
            _auth_type(table): table for header, table in commented_tables(text) if header == "[webhooks.auth]"
        }
        text = replace_auth(text, alternatives.get(variant))
    hook, settings = declared(tmp_path, text, environ=environ)
    async with running_relay(tmp_path, [hook], **settings) as relay:
        await relay.post({"type": "citizen.updated", "data": DATAGUARD_MESSAGE})
        [request] = await receiver.wait_for(1)
    static = PROFILE_ENV["DATAGUARD_STATIC_TOKEN"]
    if variant == "refresh_token":
        token = request.headers["authorization"].removeprefix("Bearer ")
        assert oauth_server.access_token_active(token)
        assert oauth_server.token_requests["refresh_token"] == 1
        assert not oauth_server.refresh_token_active(seeded)  # rotated, and the new one kept by relay
    elif variant == "bearer":
        assert request.headers["authorization"] == f"Bearer {static}"
    elif variant == "header":
        assert request.headers["x-api-key"] == static and "authorization" not in request.headers
    else:
        assert "authorization" not in request.headers and "x-api-key" not in request.headers
    assert request.json["permissions"] == DATAGUARD_MESSAGE["permissions"]


def _auth_type(table: str) -> str:
    return next(line.split('"')[1] for line in table.splitlines() if line.startswith("type = "))


# -- ConsentProof through the management API ----------------------------------------------------------------


async def _api(relay: RunningRelay, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    data = None if body is None else orjson.dumps(body)
    async with relay.http.request(method, f"{relay.url}{path}", data=data, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def _create_consentproof_webhook(relay: RunningRelay, url: str) -> dict[str, Any]:
    """The guide's "Create webhook" request, with ``*`` and ConsentProof's signature scheme."""
    status, created = await _api(
        relay, "POST", "/v1/webhooks", {"url": url, "events": ["*"], "signature": "hmac-sha256"}
    )
    assert status == 201, created
    assert created["meta"]["message"] == "Save the webhook secret now - it will not be shown again."
    data: dict[str, Any] = created["data"]
    assert data["id"].startswith("whk_") and data["secret"].startswith("whsec_") and data["is_active"] is True
    assert data["events"] == ["*"]
    return data


@contextlib.asynccontextmanager
async def _consentproof_api_webhook(
    tmp_path: Path,
) -> AsyncIterator[tuple[RunningRelay, ConsentProofEndpoint, dict[str, Any]]]:
    """A relay started with no webhooks and a ConsentProof endpoint, joined the guide's way: the webhook is created
    through the API and the endpoint takes the secret relay generated."""
    async with (
        NodeVerifier() as verify,
        ConsentProofEndpoint(verify, "") as endpoint,
        running_relay(tmp_path, []) as relay,
    ):
        created = await _create_consentproof_webhook(relay, endpoint.url)
        endpoint.secret = created["secret"]
        yield relay, endpoint, created


async def test_consentproof_webhook_created_through_the_api_gets_all_seven_types(tmp_path: Path) -> None:
    events = consentproof_events()
    async with _consentproof_api_webhook(tmp_path) as (relay, endpoint, created):
        status, answer = await relay.post(events)
        assert status == 202 and [item["deliveries"] for item in answer["data"]] == [1] * 7
        await endpoint.wait_for(7)
        _, listed = await _api(relay, "GET", f"/v1/webhooks/{created['id']}")
        assert "secret" not in listed["data"]  # shown once
        for event in events:
            await relay.wait_until(functools.partial(_succeeded, relay, event["id"]))
        status, deliveries = await _api(relay, "GET", f"/v1/webhooks/{created['id']}/deliveries")
        assert status == 200 and len(deliveries["data"]) == 7
        assert {d["status"] for d in deliveries["data"]} == {"succeeded"}
    assert all(seen.verified for seen in endpoint.seen)
    assert endpoint.handled == {event["id"]: event for event in events}
    assert {seen.headers["x-webhook-id"] for seen in endpoint.seen} == {created["id"]}


async def _succeeded(relay: RunningRelay, event_id: str) -> bool:
    return await relay.statuses(event_id) == ["succeeded"]


async def test_consentproof_send_test_through_the_api(tmp_path: Path) -> None:
    async with _consentproof_api_webhook(tmp_path) as (relay, endpoint, created):
        status, tested = await _api(relay, "POST", f"/v1/webhooks/{created['id']}/test")
    assert status == 200, tested
    assert tested["data"]["status_code"] == 200 and tested["data"]["error"] is None
    [seen] = endpoint.seen
    assert seen.verified and seen.json["type"] == "webhook.test"
    assert set(seen.json) == {"id", "type", "created_at", "data"}  # the envelope, as for every other event


async def test_didomi_flattening_is_available_through_the_api_too(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, created = await _api(
            relay, "POST", "/v1/webhooks", {"url": receiver.url("/didomi"), "format": "data-flat"}
        )
        assert status == 201 and created["data"]["format"] == "data-flat"
        await relay.post(as_didomi_event(DIDOMI_EVENT_CREATED))
        [request] = await receiver.wait_for(1)
    assert request.json == DIDOMI_EVENT_CREATED_DATA_FLAT
