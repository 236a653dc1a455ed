"""Authentication to endpoints through the running relay, against a real Authlib authorization server.

The webhook's endpoint is the server's ``/resource``, which accepts only a valid, unexpired, unrevoked token.
"""

from __future__ import annotations

import base64
from pathlib import Path

from relay.clock import FakeClock
from relay.models import BasicAuth, BearerAuth, HeaderAuth, OAuth2Auth, Secret
from tests.support.oauth_server import (
    BASIC_CLIENT_ID,
    BASIC_CLIENT_SECRET,
    ODD_CLIENT_ID,
    ODD_CLIENT_SECRET,
    POST_CLIENT_ID,
    POST_CLIENT_SECRET,
    OAuthServer,
)
from tests.support.receiver import Receiver, Reply
from tests.support.relay_harness import RunningRelay, running_relay, webhook

HOUR = 3600.0


def client_credentials(server: OAuthServer, client_id: str, secret: str, client_auth: str = "basic") -> OAuth2Auth:
    return OAuth2Auth(
        grant="client_credentials",
        token_url=server.token_url,
        client_id=client_id,
        client_secret=Secret(secret),
        scope="webhooks:write",
        client_auth=client_auth,
    )


async def _all_succeeded(relay: RunningRelay, count: int) -> None:
    await relay.wait_until(
        lambda: relay.sql("SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded'") == [(count,)], timeout=15
    )


async def test_client_credentials_token_is_fetched_once_and_shared(tmp_path: Path, oauth_server: OAuthServer) -> None:
    auth = client_credentials(oauth_server, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    hook = webhook(oauth_server.resource_url, auth=auth)
    async with running_relay(tmp_path, [hook], per_webhook_concurrency=64) as relay:
        status, _ = await relay.post([{"type": "user.created", "data": {"n": n}} for n in range(200)])
        assert status == 202
        await _all_succeeded(relay, 200)
    assert oauth_server.token_requests["client_credentials"] == 1  # a burst of 200 made one token request
    assert oauth_server.resource_answers[200] == 200


async def test_both_client_auth_methods_with_an_awkward_secret(tmp_path: Path, oauth_server: OAuthServer) -> None:
    hooks = [
        webhook(
            oauth_server.resource_url,
            id="basic",
            auth=client_credentials(oauth_server, ODD_CLIENT_ID, ODD_CLIENT_SECRET),
        ),
        webhook(
            oauth_server.resource_url,
            id="post",
            auth=client_credentials(oauth_server, POST_CLIENT_ID, POST_CLIENT_SECRET, client_auth="post"),
        ),
        webhook(
            oauth_server.resource_url,
            id="oddpost",
            auth=client_credentials(oauth_server, ODD_CLIENT_ID, ODD_CLIENT_SECRET, client_auth="post"),
        ),
    ]
    async with running_relay(tmp_path, hooks) as relay:
        await relay.post({"type": "t", "data": {}})
        await _all_succeeded(relay, 3)
    assert oauth_server.token_requests["client_credentials"] == 3


async def test_a_401_drops_the_token_refetches_and_retries_once_at_once(
    tmp_path: Path, oauth_server: OAuthServer
) -> None:
    hook = webhook(
        oauth_server.resource_url, auth=client_credentials(oauth_server, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    )
    async with running_relay(tmp_path, [hook]) as relay:
        await relay.post({"type": "t", "data": {}})
        await _all_succeeded(relay, 1)
        oauth_server.revoke_access_tokens()
        _, answer = await relay.post({"type": "t", "data": {}})
        await _all_succeeded(relay, 2)
        [delivery] = (await relay.event(answer["data"]["id"]))["deliveries"]
        assert delivery["attempt_count"] == 1 and delivery["attempts"][0]["status_code"] == 200
    assert oauth_server.token_requests["client_credentials"] == 2
    assert oauth_server.resource_answers[401] == 1


async def test_a_403_does_not_refetch(tmp_path: Path, oauth_server: OAuthServer, receiver: Receiver) -> None:
    receiver.script("/hook", [Reply(403)])
    auth = client_credentials(oauth_server, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    async with running_relay(tmp_path, [webhook(receiver.url(), auth=auth)], retry_schedule=(0.0, HOUR)) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        await receiver.wait_for(1)
        await relay.wait_until(lambda: relay.sql("SELECT attempt_count FROM deliveries") == [(1,)])
        [delivery] = (await relay.event(answer["data"]["id"]))["deliveries"]
        assert delivery["attempts"][0]["error"] == "http_error" and delivery["attempts"][0]["status_code"] == 403
    assert receiver.requests[0].headers["authorization"].startswith("Bearer ")
    assert len(receiver.requests) == 1
    assert oauth_server.token_requests["client_credentials"] == 1


async def test_token_endpoint_errors_fail_the_attempt_and_follow_the_schedule(
    tmp_path: Path, oauth_server: OAuthServer
) -> None:
    auth = client_credentials(oauth_server, BASIC_CLIENT_ID, "wrong-secret")
    clock = FakeClock()
    async with running_relay(
        tmp_path, [webhook(oauth_server.resource_url, auth=auth)], clock=clock, retry_schedule=(0.0, 60.0, 300.0)
    ) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        event_id = answer["data"]["id"]
        await relay.wait_until(lambda: relay.sql("SELECT attempt_count FROM deliveries") == [(1,)])
        [delivery] = (await relay.event(event_id))["deliveries"]
        attempt = delivery["attempts"][0]
        assert delivery["status"] == "pending"
        assert attempt["error"] == "oauth_error" and attempt["status_code"] is None
        assert "invalid_client" in attempt["error_detail"]
        assert "wrong-secret" not in attempt["error_detail"]
        assert oauth_server.total_token_requests == 1  # a 4xx is not retried locally: no hot loop
        relay.advance(60)
        await relay.wait_until(lambda: relay.sql("SELECT attempt_count FROM deliveries") == [(2,)])
        assert oauth_server.total_token_requests == 2


async def test_a_hung_token_endpoint_is_an_oauth_error(tmp_path: Path, oauth_server: OAuthServer) -> None:
    oauth_server.hang_next(2, seconds=5)
    auth = client_credentials(oauth_server, BASIC_CLIENT_ID, BASIC_CLIENT_SECRET)
    hook = webhook(oauth_server.resource_url, auth=auth, timeout=0.3)
    async with running_relay(tmp_path, [hook], retry_schedule=(0.0, HOUR)) as relay:
        _, answer = await relay.post({"type": "t", "data": {}})
        await relay.wait_until(lambda: relay.sql("SELECT attempt_count FROM deliveries") == [(1,)])
        [delivery] = (await relay.event(answer["data"]["id"]))["deliveries"]
        assert delivery["attempts"][0]["error"] == "oauth_error"


async def test_refresh_token_rotation_is_persisted_before_use(tmp_path: Path, oauth_server: OAuthServer) -> None:
    first = oauth_server.seed_refresh_token(BASIC_CLIENT_ID)
    auth = OAuth2Auth(
        grant="refresh_token",
        token_url=oauth_server.token_url,
        client_id=BASIC_CLIENT_ID,
        client_secret=Secret(BASIC_CLIENT_SECRET),
        refresh_token=Secret(first),
    )
    hook = webhook(oauth_server.resource_url, auth=auth)
    async with running_relay(tmp_path, [hook]) as relay:
        await relay.post({"type": "t", "data": {}})
        await _all_succeeded(relay, 1)
        [(stored,)] = relay.sql("SELECT refresh_token FROM oauth_tokens WHERE webhook_id = 'hook'")
    assert stored != first and oauth_server.refresh_token_active(stored)
    assert not oauth_server.refresh_token_active(first)
    # A new relay on the same store (a restart) uses the rotated token, not the dead one in its config.
    oauth_server.revoke_access_tokens()
    async with running_relay(tmp_path, [hook]) as relay:
        await relay.post({"type": "t", "data": {}})
        await _all_succeeded(relay, 2)
    assert oauth_server.token_requests["refresh_token"] == 2


async def test_static_credentials(tmp_path: Path, receiver: Receiver) -> None:
    hooks = [
        webhook(receiver.url("/bearer"), id="bearer", auth=BearerAuth(Secret("tok-123"))),
        webhook(receiver.url("/header"), id="header", auth=HeaderAuth("X-Api-Key", Secret("key-456"))),
        webhook(receiver.url("/basic"), id="basic", auth=BasicAuth("relay", Secret("pä:ss"))),
    ]
    async with running_relay(tmp_path, hooks) as relay:
        await relay.post({"type": "t", "data": {}})
        await receiver.wait_for(3)
    assert receiver.requests_to("/bearer")[0].headers["authorization"] == "Bearer tok-123"
    assert receiver.requests_to("/header")[0].headers["x-api-key"] == "key-456"
    encoded = receiver.requests_to("/basic")[0].headers["authorization"].removeprefix("Basic ")
    assert base64.b64decode(encoded).decode() == "relay:pä:ss"
