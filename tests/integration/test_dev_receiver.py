"""``relay receive``: the development receiver verifies both schemes, prints each request and answers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from relay.clock import FakeClock
from relay.models import SignatureScheme
from relay.receiver import build_receiver_app, run_receiver
from relay.signing import new_secret, signature_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_SECRET = "p+ss%20w%ord/=-0123"  # an hmac-sha256 secret is any string of 16 characters or more
EVENT = {
    "id": "evt_01hx",
    "type": "consent.created",
    "created_at": "2024-01-15T10:35:00Z",
    "data": {"subject_email": "zoë@example.com", "granted": True},
}
BODY = json.dumps(EVENT).encode()

Client = TestClient[web.Request, web.Application]


def delivery_headers(
    scheme: SignatureScheme, secrets: list[str], body: bytes = BODY, timestamp: int | None = None
) -> dict[str, str]:
    """What relay sends (CONTRACT §6): the event headers plus the scheme's signature headers."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "relay/0.1.0",
        "X-Event-ID": "evt_01hx",
        "X-Event-Type": "consent.created",
        "X-Delivery-Attempt": "2",
        **signature_headers(
            scheme,
            secrets,
            event_id="evt_01hx",
            webhook_id="whk_crm",
            timestamp=int(time.time()) if timestamp is None else timestamp,
            body=body,
        ),
    }


@contextlib.asynccontextmanager
async def dev_receiver(
    secret: str | None,
    scheme: str | None = None,
    fail_with: int | None = None,
    clock: FakeClock | None = None,
) -> AsyncIterator[tuple[Client, io.StringIO]]:
    out = io.StringIO()
    app = build_receiver_app(secret, scheme, fail_with, out, clock=clock)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, out


async def post(client: Client, headers: dict[str, str], body: bytes = BODY) -> tuple[int, object]:
    async with client.post("/hooks/consent", data=body, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("scheme", [None, "standard"], ids=["detected", "explicit"])
async def test_valid_standard_signature_is_accepted_and_printed(scheme: str | None) -> None:
    async with dev_receiver(SECRET, scheme) as (client, out):
        assert await post(client, delivery_headers(SignatureScheme.STANDARD, [SECRET])) == (
            200,
            {"received": True},
        )
    printed = out.getvalue()
    assert "POST /hooks/consent" in printed
    assert re.search(r"X-Event-ID:\s+evt_01hx", printed)
    assert re.search(r"X-Event-Type:\s+consent.created", printed)
    assert re.search(r"X-Delivery-Attempt:\s+2", printed)
    assert "valid (standard)" in printed
    assert json.dumps(EVENT, indent=2, ensure_ascii=False) in printed  # pretty-printed, unicode kept
    assert SECRET not in printed
    assert SECRET.removeprefix("whsec_") not in printed


async def test_standard_rotation_accepts_the_old_secret() -> None:
    old = new_secret()
    async with dev_receiver(old) as (client, _):
        headers = delivery_headers(SignatureScheme.STANDARD, [new_secret(), old])
        assert await post(client, headers) == (200, {"received": True})


@pytest.mark.parametrize("scheme", [None, "hmac-sha256"], ids=["detected", "explicit"])
async def test_valid_hmac_signature_is_accepted(scheme: str | None) -> None:
    async with dev_receiver(HMAC_SECRET, scheme) as (client, out):
        headers = delivery_headers(SignatureScheme.HMAC_SHA256, [HMAC_SECRET])
        assert await post(client, headers) == (200, {"received": True})
    assert "valid (hmac-sha256)" in out.getvalue()
    assert HMAC_SECRET not in out.getvalue()


@pytest.mark.parametrize(
    ("scheme", "signed_with", "sent_body"),
    [
        (SignatureScheme.STANDARD, "whsec_" + "A" * 43 + "=", BODY),
        (SignatureScheme.STANDARD, SECRET, BODY.replace(b"true", b"false")),
        (SignatureScheme.HMAC_SHA256, "wrong", BODY),
        (SignatureScheme.HMAC_SHA256, SECRET, BODY.replace(b"true", b"false")),
    ],
    ids=["standard-wrong-secret", "standard-tampered", "hmac-wrong-secret", "hmac-tampered"],
)
async def test_bad_signature_is_401(scheme: SignatureScheme, signed_with: str, sent_body: bytes) -> None:
    async with dev_receiver(SECRET) as (client, out):
        headers = delivery_headers(scheme, [signed_with])
        assert await post(client, headers, sent_body) == (401, {"error": "invalid signature"})
    assert f"INVALID ({scheme})" in out.getvalue()


async def test_unsigned_request_is_401_when_a_secret_is_set() -> None:
    async with dev_receiver(SECRET) as (client, out):
        assert await post(client, delivery_headers(SignatureScheme.NONE, [])) == (
            401,
            {"error": "invalid signature"},
        )
    assert "no webhook-signature or X-Signature header" in out.getvalue()


async def test_scheme_given_but_other_scheme_sent_is_401() -> None:
    async with dev_receiver(SECRET, "hmac-sha256") as (client, _):
        headers = delivery_headers(SignatureScheme.STANDARD, [SECRET])
        assert await post(client, headers) == (401, {"error": "invalid signature"})


@pytest.mark.parametrize("skew", [-301, 301], ids=["too-old", "too-new"])
async def test_standard_timestamp_more_than_five_minutes_off_is_401(skew: int) -> None:
    clock = FakeClock(start=1_700_000_000)
    async with dev_receiver(SECRET, clock=clock) as (client, out):
        headers = delivery_headers(SignatureScheme.STANDARD, [SECRET], timestamp=1_700_000_000 + skew)
        assert await post(client, headers) == (401, {"error": "invalid signature"})
        headers = delivery_headers(SignatureScheme.STANDARD, [SECRET], timestamp=1_700_000_000 + skew // 2)
        assert await post(client, headers) == (200, {"received": True})
    assert "tolerance 300s" in out.getvalue()


async def test_hmac_timestamp_more_than_five_minutes_off_is_401() -> None:
    clock = FakeClock(start=1_700_000_000)
    async with dev_receiver(HMAC_SECRET, clock=clock) as (client, out):
        headers = delivery_headers(SignatureScheme.HMAC_SHA256, [HMAC_SECRET], timestamp=1_700_000_000 - 301)
        assert await post(client, headers) == (401, {"error": "invalid signature"})
        headers = delivery_headers(SignatureScheme.HMAC_SHA256, [HMAC_SECRET], timestamp=1_700_000_000 - 299)
        assert await post(client, headers) == (200, {"received": True})
    assert "X-Timestamp is 301s old (tolerance 300s)" in out.getvalue()


async def test_fail_with_answers_that_status_after_verifying() -> None:
    async with dev_receiver(SECRET, fail_with=503) as (client, out):
        status, body = await post(client, delivery_headers(SignatureScheme.STANDARD, [SECRET]))
        assert status == 503
        assert isinstance(body, dict)
        assert "503" in body["error"]
        bad = delivery_headers(SignatureScheme.STANDARD, ["whsec_" + "A" * 43 + "="])
        assert await post(client, bad) == (401, {"error": "invalid signature"})
    assert re.search(r"Answer:\s+503", out.getvalue())


async def test_fail_with_204_has_no_body() -> None:
    async with dev_receiver(None, fail_with=204) as (client, _), client.post("/", data=b"{}") as response:
        assert response.status == 204
        assert await response.read() == b""


async def test_without_secret_everything_is_accepted_and_printed() -> None:
    async with dev_receiver(None) as (client, out):
        assert await post(client, {"Content-Type": "application/json"}) == (200, {"received": True})
        async with client.post("/other/path?x=1", data="plain text ✓".encode()) as response:
            assert response.status == 200
        async with client.get("/hooks/consent") as response:
            assert response.status == 405
    printed = out.getvalue()
    assert "not checked (no --secret)" in printed
    assert json.dumps(EVENT, indent=2, ensure_ascii=False) in printed
    assert "POST /other/path?x=1" in printed
    assert "plain text ✓" in printed
    assert re.search(r"X-Event-ID:\s+-", printed)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="fail_with"):
        build_receiver_app(None, None, 99, io.StringIO())
    with pytest.raises(ValueError, match="scheme"):
        build_receiver_app(SECRET, "none", None, io.StringIO())
    with pytest.raises(ValueError):
        build_receiver_app(SECRET, "sha1", None, io.StringIO())


@pytest.mark.parametrize(
    ("secret", "scheme"),
    [
        ("whsec_AA==", None),  # one zero byte: anyone can make a signature it accepts
        ("whsec_AA==", "standard"),
        ("#", None),
        ("short-secret", "hmac-sha256"),
        (HMAC_SECRET, "standard"),  # not base64: the Standard Webhooks libraries would read other bytes
    ],
)
def test_a_secret_that_signs_nothing_is_refused_naming_the_option(secret: str, scheme: str | None) -> None:
    with pytest.raises(ValueError, match=r"^--secret must be") as caught:
        build_receiver_app(secret, scheme, None, io.StringIO())
    assert secret not in str(caught.value)


def reference_headers(secret: str, body: bytes = BODY) -> dict[str, str]:
    """Headers signed by the reference ``standardwebhooks`` library itself, not by relay."""
    now = datetime.now(UTC)
    signature = StandardWebhook(secret).sign("evt_01hx", now, body.decode())
    return {"webhook-id": "evt_01hx", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}


@pytest.mark.parametrize(
    "secret",
    [
        base64.b64encode(bytes(range(32))).decode(),  # base64 alone, no whsec_
        base64.b64encode(bytes(range(32))).decode().rstrip("="),  # unpadded too
        "whsec_" + base64.b64encode(bytes(range(64))).decode(),
    ],
    ids=["base64-alone", "unpadded", "whsec-64-bytes"],
)
async def test_standard_verification_is_the_reference_librarys(secret: str) -> None:
    relay_signed = delivery_headers(SignatureScheme.STANDARD, [secret])
    StandardWebhook(secret).verify(BODY, relay_signed)  # what relay signs, the library accepts ...
    async with dev_receiver(secret) as (client, out):
        assert await post(client, reference_headers(secret)) == (200, {"received": True})  # ... and the reverse
        assert await post(client, relay_signed) == (200, {"received": True})
        other = reference_headers("whsec_" + base64.b64encode(bytes(32)).decode())
        assert await post(client, other) == (401, {"error": "invalid signature"})
    assert out.getvalue().count("valid (standard): signature matches") == 2


async def test_a_standard_request_checked_with_an_hmac_only_secret_says_why_it_fails() -> None:
    """The secret fits hmac-sha256 only: a standard delivery signed with it is one the reference libraries reject,
    so the receiver must not call it valid (it did, keying with the secret's UTF-8 bytes)."""
    async with dev_receiver(HMAC_SECRET) as (client, out):
        headers = delivery_headers(SignatureScheme.STANDARD, [HMAC_SECRET])
        assert await post(client, headers) == (401, {"error": "invalid signature"})
    assert 'INVALID (standard): --secret must be "whsec_" + base64 of 24-64 bytes' in out.getvalue()
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(HMAC_SECRET).verify(BODY, headers)


class _Announcing(io.StringIO):
    """An output that tells when something was written: run_receiver's "listening on" line."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


async def test_run_receiver_serves_on_a_real_port_until_cancelled() -> None:
    out = _Announcing()
    task = asyncio.create_task(run_receiver("127.0.0.1", 0, HMAC_SECRET, None, None, out))
    try:
        async with asyncio.timeout(5):
            await out.written.wait()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", out.getvalue())
        assert match, out.getvalue()
        headers = delivery_headers(SignatureScheme.HMAC_SHA256, [HMAC_SECRET])
        async with (
            aiohttp.ClientSession() as session,
            session.post(match.group(1) + "/hook", data=BODY, headers=headers) as response,
        ):
            assert response.status == 200
            assert await response.json() == {"received": True}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert "valid (hmac-sha256)" in out.getvalue()
