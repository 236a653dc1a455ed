"""The secret rules (``relay.signing.secret_problem``): which secrets may sign, shared by the config file, the
API and ``relay receive``; and ``standard_key`` decoding every secret it accepts exactly as the reference
``standardwebhooks`` library (and ``svix``, built on it) does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

import pytest
import standardwebhooks.webhooks
import svix.webhooks

from relay.models import SignatureScheme
from relay.signing import new_secret, secret_problem, sign_standard, signature_headers, standard_key

STANDARD = SignatureScheme.STANDARD
HMAC = SignatureScheme.HMAC_SHA256


def whsec(size: int) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("whsec_AA==", "decodes to 1 byte"),  # one zero byte: HMAC pads it like an empty key, anyone can sign
        ("s", "not base64"),
        ("whsec_", "decodes to 0 bytes"),
        ("", "decodes to 0 bytes"),
        ("whsec_" + base64.b64encode(bytes(23)).decode(), "decodes to 23 bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "decodes to 65 bytes"),
        ("my-hand-chosen-webhook-secret", "not base64"),  # the reference verifiers would read other bytes
        ("whsec_" + "A" * 31 + "-", "not base64"),  # url-safe alphabet
        ("whsec_" + "A" * 32 + "\n", "not base64"),  # whitespace the lenient decoders would skip
        ("whsec_" + "A" * 16 + " " + "A" * 16, "not base64"),
        ("whsec_" + "A" * 32 + "=", "padding"),  # padding where none belongs
        ("whsec_" + "A" * 34 + "=", "padding"),  # one "=" short
        ("whsec_" + "A" * 35 + "==", "padding"),  # one "=" too many
        ("whsec_" + "A" * 33, "not base64"),  # a length no base64 has
    ],
)
def test_standard_secrets_that_sign_nothing_or_sign_differently_are_refused(secret: str, reason: str) -> None:
    problem = secret_problem(secret, STANDARD)
    assert problem is not None and reason in problem and '"whsec_" + base64 of 24-64 bytes' in problem
    with pytest.raises(ValueError, match=reason):
        standard_key(secret)


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(bytes(24)).decode(),
        "whsec_" + base64.b64encode(bytes(64)).decode(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # the Standard Webhooks spec's example
        base64.b64encode(bytes(range(32))).decode(),  # base64 alone
        base64.b64encode(bytes(range(32))).decode().rstrip("="),  # unpadded, as the libraries accept
        "whsec_" + base64.b64encode(bytes(range(25))).decode().rstrip("="),
    ],
    ids=["24-bytes", "64-bytes", "spec-example", "base64-alone", "unpadded", "whsec-unpadded"],
)
def test_standard_secrets_of_24_to_64_bytes_are_accepted(secret: str) -> None:
    assert secret_problem(secret, STANDARD) is None


def test_generated_secrets_fit_both_schemes() -> None:
    for _ in range(50):
        secret = new_secret()
        assert secret_problem(secret, STANDARD) is None and secret_problem(secret, HMAC) is None


def test_hmac_sha256_secrets_are_at_least_16_characters() -> None:
    problem = secret_problem("x" * 15, HMAC)
    assert problem is not None and "at least 16 characters" in problem and "it has 15" in problem
    assert secret_problem("x" * 16, HMAC) is None
    assert secret_problem("clé-secrète-✓-123", HMAC) is None  # characters, not bytes
    assert secret_problem("whsec_AA==", HMAC) is not None
    assert secret_problem("my-hand-chosen-webhook-secret", HMAC) is None  # any string: the key is its UTF-8 bytes


def test_unsigned_webhooks_have_no_secret_rule() -> None:
    assert secret_problem("s", SignatureScheme.NONE) is None


def test_problems_never_quote_the_secret() -> None:
    for secret, scheme in [("whsec_Zm9vYmFyYmF6", STANDARD), ("not-base64-secret!", STANDARD), ("tiny-secret", HMAC)]:
        problem = secret_problem(secret, scheme)
        assert problem is not None and secret not in problem and secret.removeprefix("whsec_") not in problem


@pytest.mark.parametrize("size", range(24, 65))
def test_standard_key_is_the_reference_librarys_key(size: int) -> None:
    raw = os.urandom(size)
    encoded = base64.b64encode(raw).decode()
    for secret in (encoded, encoded.rstrip("="), "whsec_" + encoded, "whsec_" + encoded.rstrip("=")):
        assert standard_key(secret) == raw
        assert standard_key(secret) == standardwebhooks.webhooks.Webhook(secret)._whsecret


@pytest.mark.parametrize("secret", [whsec(24), whsec(64), base64.b64encode(os.urandom(32)).decode()])
def test_what_relay_signs_with_an_accepted_secret_the_libraries_verify(secret: str) -> None:
    body = b'{"id": "evt_1", "type": "consent.created", "data": {}}'
    headers = signature_headers(
        STANDARD, [secret], event_id="evt_1", webhook_id="whk_1", timestamp=int(time.time()), body=body
    )
    standardwebhooks.webhooks.Webhook(secret).verify(body, headers)
    svix.webhooks.Webhook(secret).verify(body, headers)


def test_a_secret_stored_before_the_rules_still_signs_as_it_did() -> None:
    """Signing never refuses: an API webhook stored with a weak secret keeps its deliveries verifiable by whoever
    already checks them (a non-base64 secret keyed with its UTF-8 bytes, as before the rules)."""
    message = b"evt_1.1700000000.{}"
    legacy = "my hand-chosen secret"
    expected = "v1," + base64.b64encode(hmac.new(legacy.encode(), message, hashlib.sha256).digest()).decode()
    assert sign_standard(legacy, "evt_1", 1_700_000_000, b"{}") == expected
    one_zero_byte = "v1," + base64.b64encode(hmac.new(b"\0", message, hashlib.sha256).digest()).decode()
    assert sign_standard("whsec_AA==", "evt_1", 1_700_000_000, b"{}") == one_zero_byte
