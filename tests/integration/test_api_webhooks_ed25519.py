"""Standard Webhooks v1a (``signature = "standard-ed25519"``) end to end: a webhook created through the API with a
generated or given ``whsk_`` key, its ``whpk_`` public key in every view (never the signing key after creation),
deliveries verified with ``cryptography`` alone, a config-declared ed25519 webhook, 400s naming ``secret`` and
``signature``, and a rotation from a ``whsec_`` secret to a ``whsk_`` key whose overlap sends both a ``v1,`` and a
``v1a,`` entry, each verified, across a restart."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook as StandardVerifier
from standardwebhooks.webhooks import WebhookVerificationError

from relay.clock import FakeClock
from relay.models import Secret, SignatureScheme
from relay.webhook_specs import SECRET_MESSAGE
from tests.support.management import call, create_webhook, error_of
from tests.support.receiver import Receiver
from tests.support.relay_harness import running_relay, webhook

ED25519 = "standard-ed25519"
# The Standard Webhooks spec's v1a example key pair (Svix's tests).
SPEC_KEY = "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
SPEC_PUBLIC_KEY = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="


def v1a_entries(headers: Any) -> list[bytes]:
    return [base64.b64decode(e[4:], validate=True) for e in headers["webhook-signature"].split(" ") if e[:4] == "v1a,"]


def verify_v1a(public_key: str, headers: Any, body: bytes) -> None:
    """A receiver's check with ``cryptography`` alone: one ``v1a,`` entry must verify with the ``whpk_`` key over
    ``{webhook-id}.{webhook-timestamp}.{body}``, else ``InvalidSignature``."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_"), validate=True))
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for signature in v1a_entries(headers):
        try:
            key.verify(signature, message)
            return
        except InvalidSignature:
            continue
    raise InvalidSignature("no v1a entry verifies")


async def test_an_ed25519_webhook_gets_a_whsk_key_once_and_shows_its_whpk_key_always(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with running_relay(tmp_path, []) as relay:
        status, answer = await call(relay, "POST", "/v1/webhooks", {"url": receiver.url(), "signature": ED25519})
        assert status == 201 and answer["meta"] == {"message": SECRET_MESSAGE}
        created = answer["data"]
        key, public = created["secret"], created["public_key"]
        assert created["signature"] == ED25519 and key.startswith("whsk_") and public.startswith("whpk_")
        assert len(base64.b64decode(key.removeprefix("whsk_"), validate=True)) == 64

        _, shown = await call(relay, "GET", f"/v1/webhooks/{created['id']}")
        _, listed = await call(relay, "GET", "/v1/webhooks")
        assert shown["data"]["public_key"] == listed["data"][0]["public_key"] == public
        assert "secret" not in shown["data"] and "secret" not in listed["data"][0]
        assert key.removeprefix("whsk_")[:43] not in str(shown) + str(listed)  # nor the seed, the key's first half

        await relay.post({"type": "consent.created", "data": {"n": 1}})
        [request] = await receiver.wait_for(1)
        assert request.headers["webhook-id"].startswith("evt_")
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
        assert request.headers["webhook-signature"].startswith("v1a,") and len(v1a_entries(request.headers)) == 1
        verify_v1a(public, request.headers, request.body)
        with pytest.raises(InvalidSignature):
            verify_v1a(public, request.headers, request.body.replace(b'"n":1', b'"n":2'))


async def test_a_given_whsk_key_and_a_config_declared_ed25519_webhook(tmp_path: Path, receiver: Receiver) -> None:
    declared = webhook(receiver.url("/cfg"), id="cfg", secret=Secret(SPEC_KEY), signature=SignatureScheme(ED25519))
    async with running_relay(tmp_path, [declared]) as relay:
        created = await create_webhook(relay, url=receiver.url("/api"), signature=ED25519, secret=SPEC_KEY)
        assert created["secret"] == SPEC_KEY and created["public_key"] == SPEC_PUBLIC_KEY
        _, shown = await call(relay, "GET", "/v1/webhooks/cfg")
        assert shown["data"]["public_key"] == SPEC_PUBLIC_KEY and "secret" not in shown["data"]

        await relay.post({"type": "t", "data": {}})
        for request in await receiver.wait_for(2):
            verify_v1a(SPEC_PUBLIC_KEY, request.headers, request.body)


async def test_what_is_no_whsk_key_is_refused_naming_secret_and_rotations_name_signature(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with running_relay(tmp_path, []) as relay:
        for secret in ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SPEC_PUBLIC_KEY, "whsk_" + "A" * 40, "whsk_#"]:
            status, answer = await call(
                relay, "POST", "/v1/webhooks", {"url": receiver.url(), "signature": ED25519, "secret": secret}
            )
            assert status == 400 and error_of(answer) == ("validation_error", ["secret"]), (secret, answer)
            assert secret.split("_", 1)[1] not in str(answer)
        assert relay.sql("SELECT COUNT(*) FROM webhooks WHERE source = 'api'") == [(0,)]

        created = await create_webhook(relay, url=receiver.url(), signature=ED25519)
        path = f"/v1/webhooks/{created['id']}"
        status, answer = await call(relay, "POST", f"{path}/rotate-secret", {"secret": "whsec_" + "A" * 32})
        assert status == 400 and error_of(answer) == ("validation_error", ["secret"]), answer
        status, answer = await call(relay, "POST", f"{path}/rotate-secret", {"signature": "hmac-sha256"})
        assert status == 400 and error_of(answer) == ("validation_error", ["signature"]), answer
        status, answer = await call(relay, "PATCH", path, {"signature": "standard"})  # a whsk_ key signs no HMAC
        assert status == 400 and error_of(answer) == ("validation_error", ["secret"]), answer
        _, shown = await call(relay, "GET", path)
        assert shown["data"]["signature"] == ED25519 and shown["data"]["public_key"] == created["public_key"]


async def test_a_migration_from_whsec_to_whsk_signs_v1_and_v1a_during_the_overlap(
    tmp_path: Path, receiver: Receiver
) -> None:
    """``rotate-secret`` with ``"signature": "standard-ed25519"``: during the overlap a receiver still on the
    ``whsec_`` secret and one already on the ``whpk_`` key both verify (the rotation outlives a restart); after it,
    only ``v1a`` is sent."""
    # Two minutes in the past, so that the standardwebhooks verifier (five minutes either way) accepts the
    # timestamps of deliveries made after the clock moves.
    clock = FakeClock(start=float(int(time.time()) - 120))
    async with running_relay(tmp_path, [], clock=clock) as relay:
        created = await create_webhook(relay, url=receiver.url())
        old, path = created["secret"], f"/v1/webhooks/{created['id']}"
        assert created["signature"] == "standard" and "public_key" not in created
        status, answer = await call(relay, "POST", f"{path}/rotate-secret", {"signature": ED25519, "overlap": "4m"})
        assert status == 200, answer
        rotated = answer["data"]
        new, public = rotated["secret"], rotated["public_key"]
        assert rotated["signature"] == ED25519 and new.startswith("whsk_") and public.startswith("whpk_")
        assert rotated["previous_secret_until"] is not None and answer["meta"] == {"message": SECRET_MESSAGE}
        _, shown = await call(relay, "GET", path)
        assert shown["data"]["signature"] == ED25519 and shown["data"]["public_key"] == public
        assert new not in str(shown) and old not in str(shown)

        await relay.post({"type": "t", "data": {"n": 1}})
        [during] = await receiver.wait_for(1)
        entries = during.headers["webhook-signature"].split(" ")
        assert [entry.split(",")[0] for entry in entries] == ["v1a", "v1"]
        assert StandardVerifier(old).verify(during.body, dict(during.headers))["data"] == {"n": 1}
        verify_v1a(public, during.headers, during.body)

    async with running_relay(tmp_path, [], clock=clock) as relay:  # the store keeps the rotation
        _, shown = await call(relay, "GET", path)
        assert shown["data"]["signature"] == ED25519 and shown["data"]["public_key"] == public
        await relay.post({"type": "t", "data": {"n": 2}})
        [_, restarted] = await receiver.wait_for(2)
        assert [e.split(",")[0] for e in restarted.headers["webhook-signature"].split(" ")] == ["v1a", "v1"]
        StandardVerifier(old).verify(restarted.body, dict(restarted.headers))
        verify_v1a(public, restarted.headers, restarted.body)

        relay.advance(4 * 60 + 1)
        await relay.post({"type": "t", "data": {"n": 3}})
        [_, _, after] = await receiver.wait_for(3)
        assert after.headers["webhook-signature"].startswith("v1a,") and " " not in after.headers["webhook-signature"]
        verify_v1a(public, after.headers, after.body)
        with pytest.raises(WebhookVerificationError):
            StandardVerifier(old).verify(after.body, dict(after.headers))


async def test_a_migration_back_from_whsk_to_whsec(tmp_path: Path, receiver: Receiver) -> None:
    async with running_relay(tmp_path, []) as relay:
        created = await create_webhook(relay, url=receiver.url(), signature=ED25519)
        status, answer = await call(
            relay, "POST", f"/v1/webhooks/{created['id']}/rotate-secret", {"signature": "standard"}
        )
        assert status == 200, answer
        new = answer["data"]["secret"]
        assert new.startswith("whsec_") and answer["data"]["signature"] == "standard"
        assert "public_key" not in answer["data"]
        await relay.post({"type": "t", "data": {}})
        [request] = await receiver.wait_for(1)
        assert [e.split(",")[0] for e in request.headers["webhook-signature"].split(" ")] == ["v1", "v1a"]
        StandardVerifier(new).verify(request.body, dict(request.headers))
        verify_v1a(created["public_key"], request.headers, request.body)
