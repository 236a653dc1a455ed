"""``relay receive`` and Standard Webhooks v1a: given the ``whpk_`` public key (or the ``whsk_`` key) it accepts what
relay signs with ed25519 and refuses what was tampered with, signed with another key, or carries only a ``v1,``
entry; during a migration each receiver finds its own entry; a key that is not one is refused at start."""

from __future__ import annotations

import base64
import io
import os

import pytest

from relay.models import SignatureScheme
from relay.receiver import build_receiver_app
from relay.signing import new_secret, public_key
from tests.integration.test_dev_receiver import BODY, delivery_headers, dev_receiver, post

ED25519 = SignatureScheme.STANDARD_ED25519
KEY = new_secret(ED25519)
PUBLIC = public_key(KEY)
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OK = (200, {"received": True})
REFUSED = (401, {"error": "invalid signature"})


@pytest.mark.parametrize("secret", [PUBLIC, KEY], ids=["whpk", "whsk"])
@pytest.mark.parametrize("scheme", [None, "standard-ed25519"], ids=["detected", "explicit"])
async def test_a_v1a_signed_request_is_accepted_with_the_public_key(secret: str, scheme: str | None) -> None:
    async with dev_receiver(secret, scheme) as (client, out):
        assert await post(client, delivery_headers(ED25519, [KEY])) == OK
    printed = out.getvalue()
    assert "valid (standard-ed25519): signature matches" in printed
    assert secret.split("_", 1)[1] not in printed and KEY.split("_", 1)[1][:43] not in printed


async def test_a_tampered_or_foreign_v1a_request_is_refused() -> None:
    async with dev_receiver(PUBLIC) as (client, out):
        headers = delivery_headers(ED25519, [KEY])
        assert await post(client, headers, BODY.replace(b"true", b"false")) == REFUSED
        assert await post(client, {**headers, "webhook-id": "evt_other"}) == REFUSED
        assert await post(client, delivery_headers(ED25519, [new_secret(ED25519)])) == REFUSED  # another key
        signature = base64.b64decode(headers["webhook-signature"].removeprefix("v1a,"))
        flipped = "v1a," + base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode()
        assert await post(client, {**headers, "webhook-signature": flipped}) == REFUSED
        assert await post(client, {**headers, "webhook-signature": "v1a,not-base64!"}) == REFUSED
        assert await post(client, delivery_headers(SignatureScheme.STANDARD, [WHSEC])) == REFUSED  # v1 alone
    assert out.getvalue().count("INVALID (standard-ed25519): no v1a signature matches") == 6


async def test_during_a_migration_the_whpk_and_the_whsec_receivers_each_accept() -> None:
    migrating = delivery_headers(ED25519, [KEY, WHSEC])  # rotated from the whsec_ secret to the whsk_ key
    assert [entry.split(",")[0] for entry in migrating["webhook-signature"].split(" ")] == ["v1a", "v1"]
    for secret in (PUBLIC, WHSEC):
        async with dev_receiver(secret) as (client, _):
            assert await post(client, migrating) == OK
    async with dev_receiver(public_key(new_secret(ED25519))) as (client, _):
        assert await post(client, migrating) == REFUSED


def test_what_is_no_ed25519_key_is_refused_at_start() -> None:
    seed = os.urandom(32)
    for secret, scheme, reason in [
        ("whpk_" + base64.b64encode(bytes(31)).decode(), None, "decodes to 31 bytes"),
        ("whpk_AAAA", "standard-ed25519", "decodes to 3 bytes"),
        ("whsk_" + base64.b64encode(seed + bytes(32)).decode(), None, "not the public key of its seed"),
        (WHSEC, "standard-ed25519", 'does not start with "whpk_"'),
    ]:
        with pytest.raises(ValueError, match=r"^--secret must be") as caught:
            build_receiver_app(secret, scheme, None, io.StringIO())
        assert reason in str(caught.value) and secret.split("_", 1)[1] not in str(caught.value)
