"""``relay receive --secret whpk_…`` as a subprocess: it verifies a Standard Webhooks v1a request (200) and refuses
a tampered one (401); a ``whpk_`` key of the wrong length stops it at start (exit 2)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time

import aiohttp

from relay.models import SignatureScheme
from relay.signing import new_secret, public_key, signature_headers
from tests.support.process import RELAY, run_relay

BODY = b'{"id":"evt_01hx","type":"consent.created","created_at":"2024-01-15T10:35:00Z","data":{"granted":true}}'


async def test_relay_receive_accepts_a_v1a_request_and_refuses_a_tampered_one() -> None:
    key = new_secret(SignatureScheme.STANDARD_ED25519)
    proc = await asyncio.create_subprocess_exec(
        *RELAY,
        "receive",
        "--port",
        "0",
        "--secret",
        public_key(key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 15)
        match = re.search(rb"listening on (http://127\.0\.0\.1:\d+), verifying signatures", first)
        assert match, first
        url = match.group(1).decode() + "/hooks/consent"
        headers = signature_headers(
            SignatureScheme.STANDARD_ED25519,
            [key],
            event_id="evt_01hx",
            webhook_id="whk_crm",
            timestamp=int(time.time()),
            body=BODY,
        )
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=BODY, headers=headers) as response:
                assert response.status == 200 and await response.json() == {"received": True}
            tampered = BODY.replace(b"true", b"false")
            async with session.post(url, data=tampered, headers=headers) as response:
                assert response.status == 401 and await response.json() == {"error": "invalid signature"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    printed = first + out
    assert b"valid (standard-ed25519): signature matches" in printed
    assert b"INVALID (standard-ed25519): no v1a signature matches" in printed
    assert key.removeprefix("whsk_").encode()[:43] not in printed


async def test_relay_receive_refuses_a_public_key_of_the_wrong_length() -> None:
    code, out, err = await run_relay("receive", "--port", "0", "--secret", "whpk_AAAA", timeout=10)
    assert code == 2 and out == ""
    assert err.startswith('relay receive: --secret must be "whpk_"') and "decodes to 3 bytes" in err
