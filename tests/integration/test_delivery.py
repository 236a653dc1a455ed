"""Ingest to receiver through a real relay: signatures, headers, formats, fan-out, durability."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, cast

import orjson
from standardwebhooks.webhooks import Webhook as StandardVerifier
from svix.webhooks import Webhook as SvixVerifier

from relay import __version__
from relay.models import BodyFormat, Secret, SignatureScheme
from relay.signing import sign_hmac_sha256
from tests.support.receiver import Receiver
from tests.support.relay_harness import RunningRelay, running_relay, webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONSENT = {
    "id": "con_abc123",
    "subject_id": "user_123",
    "granted": True,
    "metadata": {"source": "signup_form"},
}


async def test_an_event_arrives_signed_with_standard_webhooks(tmp_path: Path, receiver: Receiver) -> None:
    hook = webhook(receiver.url(), secret=Secret(SECRET), signature=SignatureScheme.STANDARD)
    async with running_relay(tmp_path, [hook]) as relay:
        status, answer = await relay.post({"type": "consent.created", "data": CONSENT})
        assert status == 202
        assert answer["success"] is True and answer["data"]["deliveries"] == 1
        event_id = answer["data"]["id"]
        [request] = await receiver.wait_for(1)
        headers = dict(request.headers)
        assert StandardVerifier(SECRET).verify(request.body, headers) == {
            "id": event_id,
            "type": "consent.created",
            "created_at": headers["webhook-id"] and orjson.loads(request.body)["created_at"],
            "data": CONSENT,
        }
        SvixVerifier(SECRET).verify(request.body, headers)
        assert headers["webhook-id"] == event_id
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == f"relay/{__version__}"
        assert request.headers["x-event-id"] == event_id
        assert request.headers["x-event-type"] == "consent.created"
        assert request.headers["x-delivery-attempt"] == "1"
        await relay.wait_until(lambda: _delivered(relay, event_id))
        [delivery] = (await relay.event(event_id))["deliveries"]
        assert delivery["status"] == "succeeded"
        assert delivery["id"].startswith("dlv_")
        [attempt] = delivery["attempts"]
        assert attempt["number"] == 1 and attempt["status_code"] == 200 and attempt["error"] is None
        assert attempt["next_attempt_at"] is None


async def _delivered(relay: object, event_id: str) -> bool:
    from tests.support.relay_harness import RunningRelay

    assert isinstance(relay, RunningRelay)
    return await relay.statuses(event_id) == ["succeeded"]


async def test_hmac_sha256_scheme_signs_the_raw_body(tmp_path: Path, receiver: Receiver) -> None:
    hook = webhook(receiver.url(), id="cp", secret=Secret("my-hmac-secret-0123"), signature=SignatureScheme.HMAC_SHA256)
    async with running_relay(tmp_path, [hook]) as relay:
        await relay.post({"type": "consent.created", "data": CONSENT})
        [request] = await receiver.wait_for(1)
        assert request.headers["x-signature"] == sign_hmac_sha256("my-hmac-secret-0123", request.body)
        assert request.headers["x-webhook-id"] == "cp"
        assert abs(int(request.headers["x-timestamp"]) - time.time()) < 5
        assert "webhook-signature" not in request.headers


async def test_unsigned_webhooks_send_no_signature(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, [webhook(receiver.url())]) as relay:
        await relay.post({"type": "t", "data": {}})
        [request] = await receiver.wait_for(1)
        assert not {"webhook-signature", "x-signature"} & set(request.headers)


async def test_formats_and_custom_headers(tmp_path: Path, receiver: Receiver) -> None:
    hooks = [
        webhook(receiver.url("/data"), id="data", format=BodyFormat.DATA, headers={"X-Tenant": "acme"}),
        webhook(receiver.url("/flat"), id="flat", format=BodyFormat.FLAT),
        webhook(receiver.url("/sent"), id="sent", format=BodyFormat.DATA, sent_at_field="sentAt"),
    ]
    async with running_relay(tmp_path, hooks) as relay:
        status, answer = await relay.post({"type": "consent.created", "data": CONSENT, "id": "evt_fixed"})
        assert status == 202 and answer["data"] == {"id": "evt_fixed", "deliveries": 3}
        await receiver.wait_for(3)
        [data] = receiver.requests_to("/data")
        assert data.body == orjson.dumps(CONSENT)
        assert data.headers["x-tenant"] == "acme"
        [flat] = receiver.requests_to("/flat")
        assert flat.json["data__metadata__source"] == "signup_form"
        assert flat.json["id"] == "evt_fixed"
        [sent] = receiver.requests_to("/sent")
        assert sent.json["sentAt"].endswith("Z") and sent.json["subject_id"] == "user_123"


async def test_fan_out_follows_filters(tmp_path: Path, receiver: Receiver) -> None:
    hooks = [
        webhook(receiver.url("/all"), id="all"),
        webhook(receiver.url("/consent"), id="consent", events=("consent.*",)),
        webhook(receiver.url("/policy"), id="policy", events=("policy.updated",)),
    ]
    async with running_relay(tmp_path, hooks) as relay:
        _, answer = await relay.post(
            [{"type": "consent.withdrawn", "data": {}}, {"type": "policy.updated", "data": {}}]
        )
        assert [d["deliveries"] for d in answer["data"]] == [2, 2]
        await receiver.wait_for(4)
        assert {r.headers["x-event-type"] for r in receiver.requests_to("/all")} == {
            "consent.withdrawn",
            "policy.updated",
        }
        assert [r.headers["x-event-type"] for r in receiver.requests_to("/consent")] == ["consent.withdrawn"]
        assert [r.headers["x-event-type"] for r in receiver.requests_to("/policy")] == ["policy.updated"]


async def test_the_202_comes_after_the_commit(tmp_path: Path) -> None:
    # No receiver at all: the event and its delivery rows are in the file when the 202 arrives.
    hook = webhook("http://127.0.0.1:9/never", retry_schedule=(0.0, 3600.0))
    async with running_relay(tmp_path, [hook]) as relay:
        _, answer = await relay.post({"type": "t", "data": {"n": 1}, "id": "durable-1"})
        assert answer["data"] == {"id": "durable-1", "deliveries": 1}
        assert relay.sql("SELECT id, delivery_count FROM events") == [("durable-1", 1)]
        assert relay.sql("SELECT webhook_id FROM deliveries") == [("hook",)]
        assert relay.sql("PRAGMA journal_mode") == [("wal",)]


async def _first_attempt(relay: RunningRelay, event_id: str) -> dict[str, Any]:
    async def attempted() -> bool:
        return bool((await relay.event(event_id))["deliveries"][0]["attempts"])

    await relay.wait_until(attempted)
    [attempt] = (await relay.event(event_id))["deliveries"][0]["attempts"]
    return cast(dict[str, Any], attempt)


async def test_a_refused_connection_says_so_without_aiohttps_connection_key(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hooks = [webhook(f"http://127.0.0.1:{port}/hook")]
    async with running_relay(tmp_path, hooks, retry_schedule=(0.0,)) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        attempt = await _first_attempt(relay, answer["data"]["id"])
    assert attempt["error"] == "connect_error"
    assert attempt["error_detail"] == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert "ssl" not in attempt["error_detail"].lower()


async def test_https_to_a_plain_http_server_is_a_tls_error_in_words(tmp_path: Path, receiver: Receiver) -> None:
    url = receiver.url("/hook").replace("http://", "https://")
    async with running_relay(tmp_path, [webhook(url)], retry_schedule=(0.0,)) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        attempt = await _first_attempt(relay, answer["data"]["id"])
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert attempt["error"] == "tls_error"
    assert attempt["error_detail"] == f"TLS handshake with 127.0.0.1:{port} failed: wrong version number"
