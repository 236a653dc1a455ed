"""relay's signatures against a published vector and against verifiers nobody in this project wrote:
the ``standardwebhooks`` and ``svix`` libraries, and ConsentProof's Node.js ``verifyWebhookSignature``."""

from __future__ import annotations

import base64
import time

import pytest
import standardwebhooks.webhooks
import svix.webhooks

from relay.models import SignatureScheme
from relay.signing import new_secret, sign_hmac_sha256, sign_standard, signature_headers
from tests.support.node_verify import node_verify, node_verify_raw

# The example in the Standard Webhooks spec and every SDK's tests:
# https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

BODIES = [
    b'{"id": "evt_1", "type": "consent.created", "data": {"granted": true}}',
    '{"data": {"name": "Zoë Ñúñez", "note": "同意しました ✓", "emoji": "🍪"}}'.encode(),
    b'[{"k": "v"}]',
]

Verifier = type[standardwebhooks.webhooks.Webhook] | type[svix.webhooks.Webhook]
VERIFIERS: list[Verifier] = [standardwebhooks.webhooks.Webhook, svix.webhooks.Webhook]


def standard_headers(secrets: list[str], body: bytes, event_id: str = "evt_01hx") -> dict[str, str]:
    return signature_headers(
        SignatureScheme.STANDARD,
        secrets,
        event_id=event_id,
        webhook_id="whk_test",
        timestamp=int(time.time()),  # the libraries refuse timestamps more than 5 minutes off
        body=body,
    )


def test_standard_webhooks_published_vector() -> None:
    assert sign_standard(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = signature_headers(
        SignatureScheme.STANDARD,
        [VECTOR_SECRET],
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


@pytest.mark.parametrize("verifier", VERIFIERS, ids=["standardwebhooks", "svix"])
@pytest.mark.parametrize("body", BODIES, ids=["ascii", "unicode", "array"])
def test_library_verifiers_accept_standard_signature(verifier: Verifier, body: bytes) -> None:
    secret = new_secret()
    verifier(secret).verify(body, standard_headers([secret], body))


@pytest.mark.parametrize("verifier", VERIFIERS, ids=["standardwebhooks", "svix"])
def test_library_verifiers_accept_published_vector_secret(verifier: Verifier) -> None:
    verifier(VECTOR_SECRET).verify(VECTOR_BODY, standard_headers([VECTOR_SECRET], VECTOR_BODY, VECTOR_ID))


@pytest.mark.parametrize("verifier", VERIFIERS, ids=["standardwebhooks", "svix"])
def test_rotation_signs_with_both_secrets_and_each_alone_verifies(verifier: Verifier) -> None:
    new, old = new_secret(), new_secret()
    body = BODIES[1]
    headers = standard_headers([new, old], body)

    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    verifier(new).verify(body, headers)
    verifier(old).verify(body, headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        verifier(new_secret()).verify(body, headers)


@pytest.mark.parametrize("verifier", VERIFIERS, ids=["standardwebhooks", "svix"])
def test_library_verifiers_reject_tampering(verifier: Verifier) -> None:
    secret = new_secret()
    body = BODIES[0]
    headers = standard_headers([secret], body)

    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        verifier(secret).verify(body.replace(b"true", b"false"), headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        verifier(secret).verify(body, {**headers, "webhook-id": "evt_other"})
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        verifier(secret).verify(body, {**headers, "webhook-timestamp": str(int(time.time()) - 1)})


def test_new_secret_is_whsec_and_base64_of_32_bytes() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


# ConsentProof's scheme, checked by the guide's own Node.js code


def hmac_headers(secret: str, body: bytes) -> dict[str, str]:
    return signature_headers(
        SignatureScheme.HMAC_SHA256,
        [secret],
        event_id="evt_01hx",
        webhook_id="whk_crm",
        timestamp=1700000000,
        body=body,
    )


def test_hmac_headers_shape() -> None:
    headers = hmac_headers("s3cret-s3cret-0123", b"{}")
    assert headers == {
        "X-Signature": sign_hmac_sha256("s3cret-s3cret-0123", b"{}"),
        "X-Timestamp": "1700000000",
        "X-Webhook-ID": "whk_crm",
    }
    assert headers["X-Signature"] == headers["X-Signature"].lower()
    assert len(headers["X-Signature"]) == 64


def test_consentproof_node_verifier_accepts_relay_signatures() -> None:
    secrets = [
        "whsec_a1b2c3d4e5f6",
        new_secret(),  # contains "+" or "/" more often than not; used as its UTF-8 bytes, not decoded
        "p+ss%20w%ord/=-0123",
        "clé-secrète-✓-0123",
    ]  # every one at least 16 characters, as an hmac-sha256 secret must be
    cases = [(body, hmac_headers(secret, body)["X-Signature"], secret) for secret in secrets for body in [*BODIES, b""]]
    assert node_verify(cases) == [True] * len(cases)


def test_consentproof_node_verifier_rejects_tampering() -> None:
    secret = "p+ss%20w%ord/=-0123"
    body = BODIES[1]
    signature = hmac_headers(secret, body)["X-Signature"]
    tampered_body = body.replace("Zoë".encode(), b"Zoe")
    verdicts = node_verify_raw(
        [
            (tampered_body, signature, secret),
            (body, signature, "p ss%20w%ord/=-0123"),  # "+" decoded as a space somewhere: must not pass
            (body, signature.upper(), secret),
            (body, signature[:-2], secret),  # timingSafeEqual throws on a length mismatch
        ]
    )
    assert verdicts[:3] == ["false", "false", "false"]
    assert verdicts[3].startswith("error:")
