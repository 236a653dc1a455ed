"""A full run's logs hold no secret, token, key or signature, and every line is one JSON object."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson

from tests.support.process import RelayProcess, post_events, write_config
from tests.support.raw_http import exchange, unparsable_requests
from tests.support.receiver import Receiver, Reply

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_SECRET = "hmac-secret-do-not-log"
KEY = "api-key-do-not-log"
TOKEN = "bearer-token-do-not-log"
BODY_MARKER = "event-body-do-not-log"


async def test_no_credential_or_signature_reaches_the_logs(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/std", [500, 200])
    receiver.script("/hmac", [Reply(401), 200])
    config = write_config(
        tmp_path / "relay.toml",
        f"""
[server]
listen = "127.0.0.1:0"
api_keys = ["{KEY}"]

[storage]
path = "{tmp_path / "relay.db"}"

[delivery]
allow_http = true
allow_private_networks = true
retry_schedule = ["0s", "100ms"]

[[webhooks]]
id = "std"
url = "{receiver.url("/std")}"
secret = "{SECRET}"

[[webhooks]]
id = "hmac"
url = "{receiver.url("/hmac")}"
secret = "env:TEST_HMAC_SECRET"
signature = "hmac-sha256"

[webhooks.auth]
type = "bearer"
token = "env:TEST_BEARER_TOKEN"
""",
    )
    relay = await RelayProcess(config, env={"TEST_HMAC_SECRET": HMAC_SECRET, "TEST_BEARER_TOKEN": TOKEN}).start()
    try:
        status, _ = await post_events(relay.url, KEY, {"type": "consent.created", "data": {"n": 1}})
        assert status == 202
        await receiver.wait_for(4)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{relay.url}/v1/events", data=b"{}", headers={"Authorization": "Bearer wrong-key-attempt"}
            ) as response,
        ):
            assert response.status in (401, 415)
        for raw in unparsable_requests(KEY.encode(), BODY_MARKER.encode()).values():
            assert b" 400 " in (await exchange(relay.url, raw)).split(b"\r\n")[0]
    finally:
        assert await relay.stop() == 0
    assert len(relay.events("bad_request")) >= 6, "each unparsable request is logged, without its bytes"
    text = relay.log_path.read_text()
    signatures = [r.headers.get("webhook-signature") or r.headers.get("x-signature") for r in receiver.requests]
    for secret in [SECRET, SECRET.removeprefix("whsec_"), HMAC_SECRET, KEY, TOKEN, "wrong-key-attempt", BODY_MARKER]:
        assert secret not in text, f"{secret[:12]}… leaked into the logs"
    for signature in signatures:
        assert signature and signature not in text, f"{signature[:12]}… leaked into the logs"
    for line in text.splitlines():
        entry = orjson.loads(line)
        assert isinstance(entry, dict) and "event" in entry and "timestamp" in entry
    retried = [e for e in relay.lines if e.get("event") == "delivery_retry_scheduled"]
    assert {e["webhook_id"] for e in retried} == {"std", "hmac"}
    assert all(e["event_id"] and e["delivery_id"] for e in retried)
