"""The platform profiles pasted into a relay.toml and served by the ``relay`` command, each driven with its guide's
own example payload to a receiver written from that guide. Retry schedules are scaled down through the config
(the timings themselves are proven on the fake clock in tests/integration/test_profiles.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

from relay.render import flatten
from tests.support.guide_receivers import ConsentProofEndpoint, NodeVerifier, expressconsent_signature_ok
from tests.support.oauth_server import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OAuthServer
from tests.support.process import RelayProcess, run_relay, write_config
from tests.support.profiles import (
    API_KEY,
    LOCAL,
    PLATFORMS,
    PROFILE_ENV,
    config_text,
    read_profile,
    set_keys,
    uncomment,
)
from tests.support.receiver import Receiver
from tests.support.relay_harness import poll_until
from tests.support.seed_payloads import (
    DATAGUARD_MESSAGE,
    DIDOMI_EVENT_CREATED,
    DIDOMI_EVENT_CREATED_DATA_FLAT,
    DIDOMI_USER_UPDATED,
    EXPRESSCONSENT_SNAPSHOT,
    consentproof_events,
)


def relay_toml(tmp_path: Path, *profiles: str, **delivery: Any) -> Path:
    text = config_text(
        *profiles, listen="127.0.0.1:0", storage_path=tmp_path / "relay.db", delivery={**LOCAL, **delivery}
    )
    return write_config(tmp_path / "relay.toml", text)


async def api(relay: RelayProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"{relay.url}{path}",
            data=None if body is None else orjson.dumps(body),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def delivery_of(relay: RelayProcess, event_id: str) -> dict[str, Any]:
    status, answer = await api(relay, "GET", f"/v1/events/{event_id}")
    assert status == 200, answer
    [delivery] = answer["data"]["deliveries"]
    result: dict[str, Any] = delivery
    return result


async def settled(relay: RelayProcess, event_id: str, status: str) -> dict[str, Any]:
    async def check() -> bool:
        return bool((await delivery_of(relay, event_id))["status"] == status)

    await poll_until(check, timeout=10.0)
    return await delivery_of(relay, event_id)


async def test_the_four_profiles_pasted_into_one_file_pass_check_config(tmp_path: Path) -> None:
    path = write_config(tmp_path / "relay.toml", config_text(*(read_profile(p) for p in PLATFORMS)))
    code, out, err = await run_relay("check-config", "--config", str(path), env=PROFILE_ENV)
    assert code == 0, err
    for platform in PLATFORMS:
        assert f"  {platform}: https://" in out
    code, _, err = await run_relay("check-config", "--config", str(path), env={})
    assert code == 2
    assert "webhooks[0].secret: environment variable EXPRESSCONSENT_WEBHOOK_SECRET is not set" in err


async def test_expressconsent_through_the_relay_command(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/expressconsent", [500, 200])
    profile = set_keys(read_profile("expressconsent"), url=receiver.url("/expressconsent"))
    relay = await RelayProcess(relay_toml(tmp_path, profile, retry_schedule=["0s", "200ms"]), env=PROFILE_ENV).start()
    try:
        status, answer = await api(
            relay, "POST", "/v1/events", {"type": "snapshot.created", "data": EXPRESSCONSENT_SNAPSHOT}
        )
        assert status == 202
        delivery = await settled(relay, answer["data"]["id"], "succeeded")
    finally:
        assert await relay.stop() == 0
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    secret = PROFILE_ENV["EXPRESSCONSENT_WEBHOOK_SECRET"]
    for request in receiver.requests:
        assert request.json == EXPRESSCONSENT_SNAPSHOT
        assert expressconsent_signature_ok(request.body, request.headers["x-signature"], secret)


async def test_consentproof_through_the_relay_command(tmp_path: Path) -> None:
    events = consentproof_events()
    secret = PROFILE_ENV["CONSENTPROOF_WEBHOOK_SECRET"]
    async with (
        NodeVerifier() as verify,
        ConsentProofEndpoint(verify, secret, lose_answer_for=["evt_xyz789"]) as endpoint,
    ):
        profile = set_keys(
            read_profile("consentproof"), url=endpoint.url, retry_schedule=["0s", "200ms", "1s", "1s", "1s"]
        )
        relay = await RelayProcess(relay_toml(tmp_path, profile), env=PROFILE_ENV).start()
        try:
            status, _ = await api(relay, "POST", "/v1/events", events)
            assert status == 202
            for event in events:
                await settled(relay, event["id"], "succeeded")
            history = await delivery_of(relay, "evt_xyz789")
        finally:
            assert await relay.stop() == 0
    assert len(endpoint.seen) == 8 and all(seen.verified for seen in endpoint.seen)
    assert endpoint.handled == {event["id"]: event for event in events}
    assert endpoint.duplicates == ["evt_xyz789"]
    assert [(a["number"], a["status_code"]) for a in history["attempts"]] == [(1, 500), (2, 200)]


async def test_didomi_through_the_relay_command(tmp_path: Path, receiver: Receiver, oauth_server: OAuthServer) -> None:
    profile = set_keys(
        read_profile("didomi"),
        url=receiver.url("/didomi"),
        token_url=oauth_server.token_url,
        client_id=BASIC_CLIENT_ID,
    )
    profile = uncomment(profile, "format")  # "Flatten request body"
    env = {**PROFILE_ENV, "DIDOMI_OAUTH_CLIENT_SECRET": BASIC_CLIENT_SECRET}
    relay = await RelayProcess(relay_toml(tmp_path, profile), env=env).start()
    try:
        posted = [{"type": p["type"], "data": p} for p in (DIDOMI_EVENT_CREATED, DIDOMI_USER_UPDATED)]
        status, _ = await api(
            relay, "POST", "/v1/events", [*posted, {"type": "anything.else", "data": {"a": {"b": 1}}}]
        )
        assert status == 202
        await receiver.wait_for(3, timeout=10)
    finally:
        assert await relay.stop() == 0
    by_type = {request.headers["x-event-type"]: request for request in receiver.requests}
    assert by_type["event.created"].json == DIDOMI_EVENT_CREATED_DATA_FLAT
    assert by_type["user.updated"].json == flatten(DIDOMI_USER_UPDATED)
    assert by_type["anything.else"].json == {"a__b": 1}
    for request in receiver.requests:
        assert oauth_server.access_token_active(request.headers["authorization"].removeprefix("Bearer "))
    assert oauth_server.token_requests["client_credentials"] == 1


async def test_dataguard_through_the_relay_command(
    tmp_path: Path, receiver: Receiver, oauth_server: OAuthServer
) -> None:
    receiver.script("/dataguard", [500, 500, 200])
    seeded = oauth_server.seed_refresh_token(BASIC_CLIENT_ID)
    profile = set_keys(
        read_profile("dataguard"),
        url=receiver.url("/dataguard"),
        token_url=oauth_server.token_url,
        client_id=BASIC_CLIENT_ID,
        retry_schedule=["0s", "150ms", "150ms"],
    )
    env = {**PROFILE_ENV, "DATAGUARD_CLIENT_SECRET": BASIC_CLIENT_SECRET, "DATAGUARD_REFRESH_TOKEN": seeded}
    relay = await RelayProcess(relay_toml(tmp_path, profile), env=env).start()
    try:
        status, answer = await api(relay, "POST", "/v1/events", {"type": "citizen.updated", "data": DATAGUARD_MESSAGE})
        assert status == 202
        delivery = await settled(relay, answer["data"]["id"], "succeeded")
    finally:
        assert await relay.stop() == 0
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    sent_at = [request.json["sentAt"] for request in receiver.requests]
    assert sent_at == [a["started_at"] for a in delivery["attempts"]] and len(set(sent_at)) == 3
    for request in receiver.requests:
        assert {k: v for k, v in request.json.items() if k != "sentAt"} == {
            k: v for k, v in DATAGUARD_MESSAGE.items() if k != "sentAt"
        }
        assert oauth_server.access_token_active(request.headers["authorization"].removeprefix("Bearer "))
    assert not oauth_server.refresh_token_active(seeded)
