"""``relay.verify``: a Python receiver's check of both schemes, held to relay's own signing and to the reference
``standardwebhooks`` library."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from multidict import CIMultiDict
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug.datastructures import EnvironHeaders

from relay.models import SignatureScheme
from relay.signing import new_secret, public_key, sign_hmac_sha256, signature_headers
from relay.verify import VerificationError, verify_hmac_sha256, verify_standard, verify_standard_ed25519

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_SECRET = "p+ss%20w%ord/=-0123"
BODY = '{"id":"evt_01hx","type":"consent.created","data":{"subject_email":"zoë@example.com"}}'.encode()
NOW = 1_700_000_000


def signed(scheme: SignatureScheme, secrets: list[str], *, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    """The headers relay's delivery code signs an attempt with."""
    return signature_headers(scheme, secrets, event_id="evt_01hx", webhook_id="whk_crm", timestamp=timestamp, body=body)


def reason_of(check: Callable[[], None]) -> str:
    with pytest.raises(VerificationError) as caught:
        check()
    return caught.value.reason


# -- standard ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_headers",
    [
        dict,
        lambda h: {k.upper(): v for k, v in h.items()},
        lambda h: {k.title(): v for k, v in h.items()},
        CIMultiDict,
        lambda h: EnvironHeaders({"HTTP_" + k.upper().replace("-", "_"): v for k, v in h.items()}),
    ],
    ids=["lowercase", "uppercase", "title-case", "multidict", "werkzeug"],
)
def test_standard_accepts_what_relay_signs_whatever_the_header_case(
    make_headers: Callable[[Mapping[str, str]], Any],
) -> None:
    headers = make_headers(signed(SignatureScheme.STANDARD, [SECRET]))
    assert verify_standard(SECRET, headers, BODY, now=NOW) is None
    assert verify_standard(SECRET, headers, BODY.decode(), now=NOW) is None  # the body as text works too


def test_standard_during_a_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = signed(SignatureScheme.STANDARD, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify_standard(new, headers, BODY, now=NOW)
    verify_standard(old, headers, BODY, now=NOW)
    assert reason_of(lambda: verify_standard(SECRET, headers, BODY, now=NOW)) == "no v1 signature matches"


def test_standard_skips_other_versions_and_malformed_entries() -> None:
    headers = signed(SignatureScheme.STANDARD, [SECRET])
    good = headers["webhook-signature"]
    for noise in ("v2,AAAA", "v1", "v1,@@@", "v1a,xyz", "v1,AAA"):
        verify_standard(SECRET, {**headers, "webhook-signature": f"{noise} {good}"}, BODY, now=NOW)
        verify_standard(SECRET, {**headers, "webhook-signature": f"{good}  {noise}"}, BODY, now=NOW)
        refused = {**headers, "webhook-signature": noise}
        assert reason_of(lambda h=refused: verify_standard(SECRET, h, BODY, now=NOW)) == "no v1 signature matches"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h, b: (h, b + b" "), "no v1 signature matches"),
        (lambda h, b: ({**h, "webhook-id": "evt_other"}, b), "no v1 signature matches"),
        (lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b), "no v1 signature matches"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b), "missing webhook-id"),
        (lambda h, b: ({**h, "webhook-signature": ""}, b), "missing webhook-id"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "webhook-timestamp is not unix seconds"),
        (lambda h, b: ({**h, "webhook-timestamp": "nan"}, b), "webhook-timestamp is not unix seconds"),
    ],
    ids=["tampered-body", "other-id", "other-timestamp", "no-id", "empty-signature", "not-a-number", "nan"],
)
def test_standard_refuses_a_changed_or_incomplete_request(
    change: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]], reason: str
) -> None:
    headers, body = change(signed(SignatureScheme.STANDARD, [SECRET]), BODY)
    assert reason_of(lambda: verify_standard(SECRET, headers, body, now=NOW)).startswith(reason)


def test_standard_timestamp_tolerance_is_inclusive_either_way_and_settable() -> None:
    for skew in (-300, 300):
        verify_standard(SECRET, signed(SignatureScheme.STANDARD, [SECRET], timestamp=NOW + skew), BODY, now=NOW)
    old = signed(SignatureScheme.STANDARD, [SECRET], timestamp=NOW - 301)
    assert reason_of(lambda: verify_standard(SECRET, old, BODY, now=NOW)) == (
        "webhook-timestamp is 301s old (tolerance 300s)"
    )
    new = signed(SignatureScheme.STANDARD, [SECRET], timestamp=NOW + 301)
    assert "in the future (tolerance 300s)" in reason_of(lambda: verify_standard(SECRET, new, BODY, now=NOW))
    verify_standard(SECRET, old, BODY, tolerance=600, now=NOW)
    assert "tolerance 10s" in reason_of(lambda: verify_standard(SECRET, old, BODY, 10, now=NOW))


@pytest.mark.parametrize("secret", ["whsec_AA==", "whsec_not base64!", "", "short"])
def test_standard_refuses_a_secret_relay_would_not_sign_with(secret: str) -> None:
    headers = signed(SignatureScheme.STANDARD, [SECRET])
    reason = reason_of(lambda: verify_standard(secret, headers, BODY, now=NOW))
    assert reason.startswith('the secret must be "whsec_" + base64 of 24-64 bytes')
    assert not secret or secret not in reason


def test_standard_accepts_the_secret_without_its_prefix() -> None:
    headers = signed(SignatureScheme.STANDARD, [SECRET])
    verify_standard(SECRET.removeprefix("whsec_"), headers, BODY, now=NOW)


def _reference_accepts(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    try:
        StandardWebhook(secret).verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def _ours_accepts(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    try:
        verify_standard(secret, headers, body)
    except VerificationError:
        return False
    return True


def test_standard_agrees_with_the_reference_library() -> None:
    """The same verdict as ``standardwebhooks`` on real time, for what relay sends and for what it must refuse."""
    now = int(time.time())
    other = new_secret()

    def sign(secrets: list[str], *, timestamp: int = now, body: bytes = BODY) -> dict[str, str]:
        return signed(SignatureScheme.STANDARD, secrets, body=body, timestamp=timestamp)

    fractional = {**sign([SECRET]), "webhook-timestamp": f"{now}.75"}  # the reference signs the whole seconds
    cases = [
        ("relay's signature", sign([SECRET]), BODY, True),
        ("a rotation, new first", sign([other, SECRET]), BODY, True),
        ("a rotation, old first", sign([SECRET, other]), BODY, True),
        ("another secret", sign([other]), BODY, False),
        ("a tampered body", sign([SECRET]), BODY + b"x", False),
        ("4 minutes old", sign([SECRET], timestamp=now - 240), BODY, True),
        ("6 minutes old", sign([SECRET], timestamp=now - 360), BODY, False),
        ("6 minutes ahead", sign([SECRET], timestamp=now + 360), BODY, False),
        ("a fractional timestamp", fractional, BODY, True),
        (
            "another version first",
            {**sign([SECRET]), "webhook-signature": "v2,AAAA " + sign([SECRET])["webhook-signature"]},
            BODY,
            True,
        ),
        ("no id", {k: v for k, v in sign([SECRET]).items() if k != "webhook-id"}, BODY, False),
        ("an empty body", sign([SECRET], body=b""), b"", True),
    ]
    for name, headers, body, expected in cases:
        assert _reference_accepts(SECRET, headers, body) is expected, name
        assert _ours_accepts(SECRET, headers, body) is expected, name


# -- hmac-sha256 -----------------------------------------------------------------------------------------------


def test_hmac_accepts_what_relay_signs_whatever_the_header_case() -> None:
    headers = signed(SignatureScheme.HMAC_SHA256, [HMAC_SECRET])
    assert headers["X-Signature"] == sign_hmac_sha256(HMAC_SECRET, BODY)
    verify_hmac_sha256(HMAC_SECRET, headers, BODY, now=NOW)
    verify_hmac_sha256(HMAC_SECRET, {k.lower(): v for k, v in headers.items()}, BODY, now=NOW)
    verify_hmac_sha256(HMAC_SECRET, CIMultiDict(headers), BODY.decode(), now=NOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h, b: (h, b.replace(b"consent", b"Consent")), "X-Signature does not match"),
        (lambda h, b: ({**h, "X-Signature": h["X-Signature"].upper()}, b), "X-Signature does not match"),
        (lambda h, b: ({**h, "X-Signature": "zoë"}, b), "X-Signature does not match"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-Timestamp"}, b), "missing X-Signature or X-Timestamp"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-Signature"}, b), "missing X-Signature or X-Timestamp"),
        (lambda h, b: ({**h, "X-Timestamp": str(NOW - 301)}, b), "X-Timestamp is 301s old (tolerance 300s)"),
        (lambda h, b: ({**h, "X-Timestamp": str(NOW + 400)}, b), "X-Timestamp is 400s in the future"),
        (lambda h, b: ({**h, "X-Timestamp": "inf"}, b), "X-Timestamp is not unix seconds"),
    ],
    ids=["tampered", "uppercase-hex", "not-ascii", "no-timestamp", "no-signature", "stale", "future", "inf"],
)
def test_hmac_refuses_a_changed_stale_or_incomplete_request(
    change: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]], reason: str
) -> None:
    headers, body = change(signed(SignatureScheme.HMAC_SHA256, [HMAC_SECRET]), BODY)
    assert reason_of(lambda: verify_hmac_sha256(HMAC_SECRET, headers, body, now=NOW)).startswith(reason)


def test_hmac_with_another_secret_or_a_short_one_is_refused() -> None:
    headers = signed(SignatureScheme.HMAC_SHA256, [HMAC_SECRET])
    other = "another secret, long enough"
    assert reason_of(lambda: verify_hmac_sha256(other, headers, BODY, now=NOW)) == "X-Signature does not match"
    reason = reason_of(lambda: verify_hmac_sha256("short", headers, BODY, now=NOW))
    assert reason == 'the secret must be at least 16 characters for signature "hmac-sha256" (it has 5)'


def test_hmac_timestamp_tolerance_is_settable() -> None:
    headers = {**signed(SignatureScheme.HMAC_SHA256, [HMAC_SECRET]), "X-Timestamp": str(NOW - 1000)}
    verify_hmac_sha256(HMAC_SECRET, headers, BODY, tolerance=1000, now=NOW)
    verify_hmac_sha256(HMAC_SECRET, {**headers, "X-Timestamp": str(int(time.time()))}, BODY)  # the real clock


def test_a_v1a_signature_verifies_with_the_public_key_or_the_signing_key() -> None:
    key = new_secret(SignatureScheme.STANDARD_ED25519)
    headers = signed(SignatureScheme.STANDARD_ED25519, [key])
    assert headers["webhook-signature"].startswith("v1a,")
    verify_standard_ed25519(public_key(key), headers, BODY, now=NOW)
    verify_standard_ed25519(key, headers, BODY, now=NOW)
    assert reason_of(lambda: verify_standard_ed25519(public_key(key), headers, BODY + b" ", now=NOW)) == (
        "no v1a signature matches"
    )
    other = public_key(new_secret(SignatureScheme.STANDARD_ED25519))
    assert reason_of(lambda: verify_standard_ed25519(other, headers, BODY, now=NOW)) == "no v1a signature matches"
    assert "old" in reason_of(lambda: verify_standard_ed25519(key, headers, BODY, now=NOW + 301))
    assert reason_of(lambda: verify_standard_ed25519("whsec_nope", headers, BODY, now=NOW)).startswith("the key ")
