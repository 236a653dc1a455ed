"""Standard Webhooks v1a (``standard-ed25519``): relay's ed25519 signatures checked with ``cryptography``'s own
``Ed25519PublicKey.verify`` against the spec's message format (the reference verifier libraries do not verify v1a),
the spec's published v1a example, the ``whsk_``/``whpk_`` key rules, and a rotation between the two Standard Webhooks
schemes, whose overlap sends a ``v1,`` and a ``v1a,`` entry that each verify."""

from __future__ import annotations

import base64
import os
import time

import pytest
import standardwebhooks.webhooks
import svix.webhooks
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.models import SignatureScheme
from relay.signing import (
    ed25519_verifying_key,
    new_secret,
    previous_scheme,
    public_key,
    secret_problem,
    sign_ed25519,
    signature_headers,
)

ED25519 = SignatureScheme.STANDARD_ED25519
STANDARD = SignatureScheme.STANDARD

# The v1a example of the Standard Webhooks spec ("Example headers"), made by Svix's server from this key pair in its
# own tests (server/svix-server/src/worker.rs, test_asymmetric_key_signing; the key as src/core/types/mod.rs writes
# it: base64 of the 32-byte seed and then the 32-byte public key).
VECTOR_KEY = "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
VECTOR_PUBLIC_KEY = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=="
HMAC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

BODIES = [
    b'{"id": "evt_1", "type": "consent.created", "data": {"granted": true}}',
    '{"data": {"name": "Zoë Ñúñez", "note": "同意しました ✓", "emoji": "🍪"}}'.encode(),
    b"",
]


def whpk_public(key: str) -> Ed25519PublicKey:
    """A receiver's reading of a ``whpk_`` key, with nothing of relay's: base64 of the raw 32-byte public key."""
    assert key.startswith("whpk_")
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(key.removeprefix("whpk_"), validate=True))


def verify_v1a(key: str, headers: dict[str, str], body: bytes) -> int:
    """How many ``v1a,`` entries of ``headers`` verify with the ``whpk_`` key, each checked by ``cryptography`` over
    the spec's ``{webhook-id}.{webhook-timestamp}.{body}``; raises ``InvalidSignature`` for one that does not."""
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    entries = [entry.removeprefix("v1a,") for entry in headers["webhook-signature"].split(" ") if entry[:4] == "v1a,"]
    for entry in entries:
        whpk_public(key).verify(base64.b64decode(entry, validate=True), message)
    return len(entries)


def headers_for(scheme: SignatureScheme, secrets: list[str], body: bytes, event_id: str = "evt_01hx") -> dict[str, str]:
    return signature_headers(
        scheme, secrets, event_id=event_id, webhook_id="whk_test", timestamp=int(time.time()), body=body
    )


def seed_key(seed: bytes) -> str:
    """``whsk_`` + base64 of a seed and its public key, made with ``cryptography`` alone."""
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whsk_" + base64.b64encode(seed + public).decode()


def test_the_specs_published_v1a_example() -> None:
    assert sign_ed25519(VECTOR_KEY, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    assert public_key(VECTOR_KEY) == VECTOR_PUBLIC_KEY
    headers = signature_headers(
        ED25519,
        [VECTOR_KEY],
        event_id=VECTOR_ID,
        webhook_id="whk_ignored",
        timestamp=VECTOR_TIMESTAMP,
        body=VECTOR_BODY,
    )
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert verify_v1a(VECTOR_PUBLIC_KEY, headers, VECTOR_BODY) == 1


@pytest.mark.parametrize("body", BODIES, ids=["ascii", "unicode", "empty"])
def test_cryptography_verifies_what_relay_signs_with_the_whpk_key(body: bytes) -> None:
    key = new_secret(ED25519)
    headers = headers_for(ED25519, [key], body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1a,") and " " not in headers["webhook-signature"]
    assert verify_v1a(public_key(key), headers, body) == 1


def test_tampering_fails_verification() -> None:
    key = new_secret(ED25519)
    body = BODIES[0]
    headers = headers_for(ED25519, [key], body)
    with pytest.raises(InvalidSignature):
        verify_v1a(public_key(key), headers, body.replace(b"true", b"false"))
    with pytest.raises(InvalidSignature):
        verify_v1a(public_key(key), {**headers, "webhook-id": "evt_other"}, body)
    with pytest.raises(InvalidSignature):
        verify_v1a(public_key(key), {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}, body)
    with pytest.raises(InvalidSignature):
        verify_v1a(public_key(new_secret(ED25519)), headers, body)  # another webhook's key


def test_generated_keys_are_whsk_seed_and_public_key_as_svix_writes_them() -> None:
    keys = {new_secret(ED25519) for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        raw = base64.b64decode(key.removeprefix("whsk_"), validate=True)
        assert key.startswith("whsk_") and len(raw) == 64
        assert seed_key(raw[:32]) == key  # the second half is the first half's public key
        assert secret_problem(key, ED25519) is None
        assert public_key(key) == "whpk_" + base64.b64encode(raw[32:]).decode()


def test_a_key_given_as_its_32_byte_seed_signs_as_the_whole_pair_does() -> None:
    seed = os.urandom(32)
    pair, alone = seed_key(seed), "whsk_" + base64.b64encode(seed).decode()
    assert secret_problem(alone, ED25519) is None and public_key(alone) == public_key(pair)
    assert sign_ed25519(alone, "evt_1", 1, b"{}") == sign_ed25519(pair, "evt_1", 1, b"{}")  # ed25519 is deterministic


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        (HMAC_SECRET, 'does not start with "whsk_"'),
        (base64.b64encode(os.urandom(64)).decode(), 'does not start with "whsk_"'),  # the prefix tells the scheme
        (VECTOR_PUBLIC_KEY, '"whpk_" public key'),  # the receivers' half: it cannot sign
        ("whsk_" + base64.b64encode(os.urandom(31)).decode(), "decodes to 31 bytes"),
        ("whsk_" + base64.b64encode(os.urandom(48)).decode(), "decodes to 48 bytes"),
        ("whsk_" + base64.b64encode(os.urandom(65)).decode(), "decodes to 65 bytes"),
        ("whsk_", "decodes to 0 bytes"),
        ("whsk_" + base64.urlsafe_b64encode(b"\xfb" * 64).decode(), "not base64"),
        (VECTOR_KEY[:-2] + "=", "padding"),
        (VECTOR_KEY[:-3] + "A==", "not the public key of its seed"),  # the pair's halves do not match
    ],
)
def test_ed25519_secrets_must_be_whsk_keys_of_the_right_length(secret: str, reason: str) -> None:
    problem = secret_problem(secret, ED25519)
    assert problem is not None and reason in problem and '"whsk_" + base64 of an ed25519 key' in problem
    assert secret.removeprefix("whsk_") not in problem or secret == "whsk_"


def test_a_whsk_key_is_no_secret_for_the_hmac_scheme_and_says_which_scheme_it_is() -> None:
    problem = secret_problem(VECTOR_KEY, STANDARD)
    assert problem is not None and 'signature "standard-ed25519"' in problem and VECTOR_KEY[5:] not in problem


def test_receivers_verify_with_the_whpk_key_or_the_whsk_key() -> None:
    raw = ed25519_verifying_key(VECTOR_PUBLIC_KEY).public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert raw == ed25519_verifying_key(VECTOR_KEY).public_bytes(Encoding.Raw, PublicFormat.Raw)
    for bad, reason in [
        ("whpk_" + base64.b64encode(bytes(31)).decode(), "decodes to 31 bytes"),
        (HMAC_SECRET, 'does not start with "whpk_"'),
        ("whpk_not base64!", "not base64"),
    ]:
        with pytest.raises(ValueError, match=reason):
            ed25519_verifying_key(bad)


def test_previous_secrets_sign_with_the_scheme_their_prefix_names() -> None:
    key = new_secret(ED25519)
    for scheme in (STANDARD, ED25519):
        assert previous_scheme(key, scheme) is ED25519
        assert previous_scheme(HMAC_SECRET, scheme) is STANDARD
        assert previous_scheme("whsk_stored-before-the-rules", scheme) is STANDARD  # not a key: the HMAC it was
    assert previous_scheme(key, SignatureScheme.HMAC_SHA256) is SignatureScheme.HMAC_SHA256


@pytest.mark.parametrize("verifier", [standardwebhooks.webhooks.Webhook, svix.webhooks.Webhook], ids=["sw", "svix"])
def test_a_migration_from_whsec_to_whsk_sends_both_entries_and_each_verifies(
    verifier: type[standardwebhooks.webhooks.Webhook] | type[svix.webhooks.Webhook],
) -> None:
    """A rotation from ``standard`` to ``standard-ed25519`` during its overlap: the new key first, then the old
    secret; a receiver still on the ``whsec_`` secret and one already on the ``whpk_`` key both accept it."""
    key, body = new_secret(ED25519), BODIES[1]
    headers = headers_for(ED25519, [key, HMAC_SECRET], body)
    entries = headers["webhook-signature"].split(" ")
    assert [entry.split(",")[0] for entry in entries] == ["v1a", "v1"]
    verifier(HMAC_SECRET).verify(body, headers)  # the reference libraries check the v1 entry and skip v1a
    assert verify_v1a(public_key(key), headers, body) == 1
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        verifier(new_secret()).verify(body, headers)


def test_a_migration_back_from_whsk_to_whsec_sends_both_entries_too() -> None:
    key, body = new_secret(ED25519), BODIES[0]
    headers = headers_for(STANDARD, [HMAC_SECRET, key], body)
    assert [entry.split(",")[0] for entry in headers["webhook-signature"].split(" ")] == ["v1", "v1a"]
    standardwebhooks.webhooks.Webhook(HMAC_SECRET).verify(body, headers)
    assert verify_v1a(public_key(key), headers, body) == 1


def test_rotating_one_ed25519_key_to_another_sends_two_v1a_entries() -> None:
    new, old, body = new_secret(ED25519), new_secret(ED25519), BODIES[0]
    headers = headers_for(ED25519, [new, old], body)
    assert [entry.split(",")[0] for entry in headers["webhook-signature"].split(" ")] == ["v1a", "v1a"]
    for key in (new, old):
        message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        verified = 0
        for entry in headers["webhook-signature"].split(" "):
            try:
                whpk_public(public_key(key)).verify(base64.b64decode(entry.removeprefix("v1a,")), message)
                verified += 1
            except InvalidSignature:
                pass
        assert verified == 1
