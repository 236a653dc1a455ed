"""OAuth2 authenticators end to end against a real Authlib authorization server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from urllib.parse import quote_plus

import aiohttp
import pytest
from structlog.testing import capture_logs

from relay.auth import Authenticator, OAuthError, build_authenticator
from relay.clock import Clock, FakeClock
from relay.errors import StoreUnavailable
from relay.models import OAuth2Auth, Secret
from relay.store.base import RefreshTokenSession, local_refresh_session
from tests.support.oauth_server import (
    BASIC_CLIENT_ID,
    BASIC_CLIENT_SECRET,
    ODD_CLIENT_ID,
    ODD_CLIENT_SECRET,
    POST_CLIENT_ID,
    POST_CLIENT_SECRET,
    OAuthServer,
    run_oauth_server,
)

WEBHOOK = "crm"


@dataclass
class MemoryStore:
    """An in-memory RefreshTokenStore that records what happened, in order."""

    tokens: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    fail_saves: bool = False
    save_gate: asyncio.Event | None = None
    save_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def load_refresh_token(self, webhook_id: str) -> str | None:
        self.events.append("load")
        return self.tokens.get(webhook_id)

    async def save_refresh_token(self, webhook_id: str, token: str) -> None:
        self.events.append("save")
        self.save_started.set()
        if self.save_gate is not None:
            await self.save_gate.wait()
        if self.fail_saves:
            raise StoreUnavailable("disk full")
        self.tokens[webhook_id] = token
        self.events.append("saved")

    def refresh_token_session(self, webhook_id: str) -> AbstractAsyncContextManager[RefreshTokenSession]:
        return local_refresh_session(self, webhook_id)


@dataclass
class Harness:
    server: OAuthServer
    session: aiohttp.ClientSession
    clock: FakeClock = field(default_factory=lambda: FakeClock(1_000_000.0))
    store: MemoryStore = field(default_factory=MemoryStore)
    requests: list[str] = field(default_factory=list)  # on_token_request results

    def auth(
        self,
        client_id: str = BASIC_CLIENT_ID,
        client_secret: str = BASIC_CLIENT_SECRET,
        *,
        client_auth: str = "basic",
        grant: str = "client_credentials",
        token_url: str | None = None,
        **kwargs: object,
    ) -> OAuth2Auth:
        return OAuth2Auth(
            grant=grant,
            token_url=token_url or self.server.token_url,
            client_id=client_id,
            client_secret=Secret(client_secret),
            client_auth=client_auth,
            **kwargs,  # type: ignore[arg-type]
        )

    def build(self, auth: OAuth2Auth, *, timeout: float = 2.0, clock: Clock | None = None) -> Authenticator:
        return build_authenticator(
            WEBHOOK,
            auth,
            session=self.session,
            timeout=timeout,
            clock=clock or self.clock,
            tokens=self.store,
            on_token_request=self.requests.append,
        )

    async def resource(self, headers: dict[str, str]) -> int:
        async with self.session.post(self.server.resource_url, headers=headers) as resp:
            await resp.read()
            return resp.status


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    with run_oauth_server() as server:
        async with aiohttp.ClientSession(trust_env=False) as session:
            yield Harness(server, session)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- client credentials ------------------------------------------------------------------------------------


async def test_client_secret_basic(h: Harness) -> None:
    authenticator = h.build(h.auth(BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, client_auth="basic"))
    headers = await authenticator.headers()

    assert authenticator.retry_on_401 is True
    assert headers["Authorization"].startswith("Bearer ")
    assert await h.resource(headers) == 200
    assert h.server.last_form == {"grant_type": "client_credentials"}
    assert h.server.last_headers["Accept"] == "application/json"
    assert h.server.last_headers["Authorization"].startswith("Basic ")
    assert h.server.issued["client_credentials"] == 1
    assert h.requests == ["success"]


async def test_client_secret_post(h: Harness) -> None:
    authenticator = h.build(h.auth(POST_CLIENT_ID, POST_CLIENT_SECRET, client_auth="post"))
    headers = await authenticator.headers()

    assert await h.resource(headers) == 200
    assert h.server.last_form == {
        "grant_type": "client_credentials",
        "client_id": POST_CLIENT_ID,
        "client_secret": POST_CLIENT_SECRET,
    }
    assert "Authorization" not in h.server.last_headers
    assert h.requests == ["success"]


async def test_client_auth_method_is_really_used(h: Harness) -> None:
    """The server accepts relay-basic only by client_secret_basic: the wrong method is refused."""
    authenticator = h.build(h.auth(BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, client_auth="post"))
    with pytest.raises(OAuthError) as caught:
        await authenticator.headers()
    assert caught.value.error == "invalid_client"


@pytest.mark.parametrize("client_auth", ["basic", "post"])
async def test_awkward_secret(h: Harness, client_auth: str) -> None:
    authenticator = h.build(h.auth(ODD_CLIENT_ID, ODD_CLIENT_SECRET, client_auth=client_auth))
    headers = await authenticator.headers()

    assert await h.resource(headers) == 200
    if client_auth == "basic":
        encoded = base64.b64encode(f"{quote_plus(ODD_CLIENT_ID)}:{quote_plus(ODD_CLIENT_SECRET)}".encode())
        assert h.server.last_headers["Authorization"] == f"Basic {encoded.decode()}"
    else:
        assert h.server.last_form["client_secret"] == ODD_CLIENT_SECRET


async def test_scope_audience_and_extra_params_reach_the_server(h: Harness) -> None:
    auth = h.auth(
        scope="webhooks:write webhooks:read",
        audience="https://crm.example.com",
        extra_params={"resource": "https://crm.example.com/hooks", "tenant": "acme"},
    )
    await h.build(auth).headers()

    assert h.server.last_form == {
        "grant_type": "client_credentials",
        "scope": "webhooks:write webhooks:read",
        "audience": "https://crm.example.com",
        "resource": "https://crm.example.com/hooks",
        "tenant": "acme",
    }


# -- caching, expiry, single flight ------------------------------------------------------------------------


async def test_token_is_cached_across_sequential_calls(h: Harness) -> None:
    authenticator = h.build(h.auth())
    seen = {(await authenticator.headers())["Authorization"] for _ in range(50)}

    assert len(seen) == 1
    assert h.server.total_token_requests == 1
    assert h.requests == ["success"]


async def test_token_is_refetched_after_90_percent_of_expires_in(h: Harness) -> None:
    h.server.expires_in = 100
    authenticator = h.build(h.auth())
    first = await authenticator.headers()

    h.clock.advance(89.9)
    assert await authenticator.headers() == first
    assert h.server.total_token_requests == 1

    h.clock.advance(0.2)  # past 100 - 10 %
    second = await authenticator.headers()
    assert second != first
    assert h.server.total_token_requests == 2


async def test_short_tokens_are_refreshed_at_least_5s_early(h: Harness) -> None:
    h.server.expires_in = 20  # 10 % would be 2 s; 5 s wins
    authenticator = h.build(h.auth())
    await authenticator.headers()

    h.clock.advance(14.9)
    await authenticator.headers()
    assert h.server.total_token_requests == 1
    h.clock.advance(0.2)
    await authenticator.headers()
    assert h.server.total_token_requests == 2


async def test_missing_expires_in_means_an_hour(h: Harness) -> None:
    h.server.expires_in = None  # Authlib leaves expires_in out of the answer
    authenticator = h.build(h.auth())
    await authenticator.headers()

    h.clock.advance(3239)
    await authenticator.headers()
    assert h.server.total_token_requests == 1
    h.clock.advance(2)
    await authenticator.headers()
    assert h.server.total_token_requests == 2


@pytest.mark.parametrize("start", [0.0, 4_000_000_000.0], ids=["1970", "2096"])
async def test_expiry_reads_the_injected_clock_not_wall_time(h: Harness, start: float) -> None:
    clock = FakeClock(start)  # far from wall time either way: mixing in time.time() would break caching
    authenticator = h.build(h.auth(), clock=clock)
    first = await authenticator.headers()
    assert await authenticator.headers() == first
    clock.advance(3239)
    assert await authenticator.headers() == first
    assert h.server.total_token_requests == 1
    clock.advance(2)
    assert await authenticator.headers() != first
    assert h.server.total_token_requests == 2


async def test_a_token_shorter_than_the_margin_is_not_cached(h: Harness) -> None:
    h.server.expires_in = 1
    authenticator = h.build(h.auth())
    await authenticator.headers()
    await authenticator.headers()
    assert h.server.total_token_requests == 2


async def test_burst_of_200_concurrent_calls_makes_one_token_request(h: Harness) -> None:
    authenticator = h.build(h.auth())
    results = await asyncio.gather(*(authenticator.headers() for _ in range(200)))

    assert len({r["Authorization"] for r in results}) == 1
    assert h.server.total_token_requests == 1
    assert h.requests == ["success"]


async def test_a_short_lived_token_is_still_shared_by_its_round(h: Harness) -> None:
    h.server.expires_in = 1  # not cacheable, but the burst that waited for it must not fetch 200 times
    authenticator = h.build(h.auth())
    await asyncio.gather(*(authenticator.headers() for _ in range(200)))

    assert h.server.total_token_requests == 1


# -- 401 from the endpoint ---------------------------------------------------------------------------------


async def test_invalidate_after_401_refetches_once_for_50_tasks(h: Harness) -> None:
    authenticator = h.build(h.auth())
    old = await authenticator.headers()
    assert await h.resource(old) == 200
    assert h.server.revoke_access_tokens() == 1
    assert await h.resource(old) == 401

    async def deliver() -> int:
        headers = await authenticator.headers()
        status = await h.resource(headers)
        if status == 401 and authenticator.retry_on_401:
            authenticator.invalidate(headers)
            status = await h.resource(await authenticator.headers())
        return status

    statuses = await asyncio.gather(*(deliver() for _ in range(50)))

    assert statuses == [200] * 50
    assert h.server.total_token_requests == 2
    assert h.server.resource_answers[401] >= 2


async def test_invalidate_ignores_a_token_that_is_no_longer_cached(h: Harness) -> None:
    authenticator = h.build(h.auth())
    old = await authenticator.headers()
    authenticator.invalidate(old)
    new = await authenticator.headers()
    assert new != old

    for _ in range(50):
        authenticator.invalidate(old)  # late 401s for the old token
    assert await authenticator.headers() == new
    authenticator.invalidate({"Authorization": "Bearer something-else"})
    assert await authenticator.headers() == new
    assert h.server.total_token_requests == 2


# -- errors ------------------------------------------------------------------------------------------------


async def test_invalid_client(h: Harness) -> None:
    authenticator = h.build(h.auth(BASIC_CLIENT_ID, "wrong-secret-value"))
    with capture_logs() as logs, pytest.raises(OAuthError) as caught:
        await authenticator.headers()

    error = caught.value
    assert error.error == "invalid_client"
    assert error.description is not None and "authenticate" in error.description
    assert error.status_code == 401
    assert str(error).startswith("invalid_client: ")
    assert "wrong-secret-value" not in f"{error!s} {error!r} {logs}"
    assert h.server.total_token_requests == 1  # a 4xx is never retried locally
    assert h.requests == ["error"]
    assert [e["event"] for e in logs] == ["oauth_token_failed"]
    assert logs[0]["webhook_id"] == WEBHOOK and logs[0]["error"] == str(error)


async def test_invalid_grant(h: Harness) -> None:
    auth = h.auth(grant="refresh_token", refresh_token=Secret("never-issued-refresh-token"))
    with pytest.raises(OAuthError) as caught:
        await h.build(auth).headers()

    assert caught.value.error == "invalid_grant"
    assert caught.value.status_code == 400
    assert "never-issued-refresh-token" not in repr(caught.value)
    assert h.requests == ["error"]


async def test_invalid_scope(h: Harness) -> None:
    with pytest.raises(OAuthError) as caught:
        await h.build(h.auth(scope="admin")).headers()

    assert caught.value.error == "invalid_scope"
    assert h.requests == ["error"]


async def test_server_error_is_retried_once_then_fails(h: Harness) -> None:
    h.server.fail_next(2, status=500, error="server_error", description="database unavailable")
    with pytest.raises(OAuthError) as caught:
        await h.build(h.auth()).headers()

    assert (caught.value.error, caught.value.description) == ("server_error", "database unavailable")
    assert str(caught.value) == "server_error: database unavailable"
    assert caught.value.status_code == 500
    assert h.server.total_token_requests == 2
    assert h.requests == ["error", "error"]


async def test_one_server_error_is_absorbed_by_the_local_retry(h: Harness) -> None:
    h.server.fail_next(1, status=503, error="temporarily_unavailable")
    headers = await h.build(h.auth()).headers()

    assert await h.resource(headers) == 200
    assert h.requests == ["error", "success"]


async def test_non_json_502(h: Harness) -> None:
    h.server.fail_next(2, status=502, error=None)
    with pytest.raises(OAuthError) as caught:
        await h.build(h.auth()).headers()

    assert caught.value.error is None
    assert caught.value.description is not None and caught.value.description.startswith("HTTP 502")
    assert caught.value.status_code == 502
    assert h.requests == ["error", "error"]


async def test_timeout(h: Harness) -> None:
    h.server.hang_next(2, seconds=5)
    started = time.monotonic()
    with pytest.raises(OAuthError) as caught:
        await h.build(h.auth(), timeout=0.3).headers()

    assert (caught.value.error, caught.value.description) == (None, "timeout")
    assert time.monotonic() - started < 2
    assert h.requests == ["error", "error"]


async def test_connection_refused(h: Harness) -> None:
    auth = h.auth(token_url=f"http://127.0.0.1:{closed_port()}/token")
    with pytest.raises(OAuthError) as caught:
        await h.build(auth).headers()

    assert caught.value.error is None
    assert caught.value.description is not None and caught.value.description.startswith("connect error: ")
    assert h.requests == ["error", "error"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"token_type": "Bearer", "expires_in": 60}, "no access_token"),
        ({"access_token": "abc", "token_type": "mac"}, "unsupported token_type 'mac'"),
    ],
    ids=["missing-access-token", "not-bearer"],
)
async def test_unusable_answer(h: Harness, payload: dict[str, object], expected: str) -> None:
    h.server.respond_next(payload)
    with pytest.raises(OAuthError) as caught:
        await h.build(h.auth()).headers()

    assert caught.value.error is None
    assert caught.value.description is not None and expected in caught.value.description
    assert h.server.total_token_requests == 1


async def test_token_type_is_case_insensitive_and_expires_in_may_be_a_string(h: Harness) -> None:
    h.server.respond_next({"access_token": "abc", "token_type": "BEARER", "expires_in": "100"})
    authenticator = h.build(h.auth())
    assert await authenticator.headers() == {"Authorization": "Bearer abc"}
    h.clock.advance(89)
    assert await authenticator.headers() == {"Authorization": "Bearer abc"}
    assert h.server.total_token_requests == 1


async def test_a_failed_round_fails_every_waiter_without_each_retrying(h: Harness) -> None:
    h.server.fail_next(2, status=500)
    authenticator = h.build(h.auth())
    results = await asyncio.gather(*(authenticator.headers() for _ in range(20)), return_exceptions=True)

    assert all(isinstance(r, OAuthError) and r.error == "server_error" for r in results)
    assert h.server.total_token_requests == 2  # one request and its one local retry, for all 20
    # The next call (the caller's retry schedule) starts a new round, and succeeds.
    assert await h.resource(await authenticator.headers()) == 200


# -- refresh token grant -----------------------------------------------------------------------------------


def refresh_auth(h: Harness, refresh_token: str) -> OAuth2Auth:
    return h.auth(
        POST_CLIENT_ID,
        POST_CLIENT_SECRET,
        client_auth="post",
        grant="refresh_token",
        refresh_token=Secret(refresh_token),
    )


async def test_refresh_token_rotation_is_saved_before_use_and_used_next(h: Harness) -> None:
    seeded = h.server.seed_refresh_token(POST_CLIENT_ID)
    h.store.save_gate = asyncio.Event()
    authenticator = h.build(refresh_auth(h, seeded))

    with capture_logs() as logs:
        task = asyncio.create_task(authenticator.headers())
        await asyncio.wait_for(h.store.save_started.wait(), timeout=2)
        await asyncio.sleep(0.05)
        assert not task.done()  # the access token waits for the save
        h.store.save_gate.set()
        headers = await task

    assert h.server.last_form["grant_type"] == "refresh_token"
    assert h.server.last_form["refresh_token"] == seeded
    rotated = h.store.tokens[WEBHOOK]
    assert rotated != seeded
    assert not h.server.refresh_token_active(seeded)
    assert h.server.refresh_token_active(rotated)
    assert await h.resource(headers) == 200
    assert [e["event"] for e in logs] == ["oauth_refresh_token_rotated", "oauth_token_fetched"]
    assert seeded not in str(logs) and rotated not in str(logs)

    authenticator.invalidate(headers)
    await authenticator.headers()
    assert h.server.last_form["refresh_token"] == rotated
    assert h.store.tokens[WEBHOOK] not in (seeded, rotated)
    assert h.server.token_requests["refresh_token"] == 2


async def test_restart_uses_the_persisted_refresh_token_not_the_configured_one(h: Harness) -> None:
    seeded = h.server.seed_refresh_token(POST_CLIENT_ID)
    await h.build(refresh_auth(h, seeded)).headers()
    persisted = h.store.tokens[WEBHOOK]

    restarted = h.build(refresh_auth(h, seeded))  # same config, same store, empty memory
    headers = await restarted.headers()

    assert h.server.last_form["refresh_token"] == persisted
    assert await h.resource(headers) == 200
    assert h.server.token_requests["refresh_token"] == 2  # no attempt with the dead configured token


async def test_a_new_configured_refresh_token_replaces_a_dead_persisted_one(h: Harness) -> None:
    h.store.tokens[WEBHOOK] = "revoked-long-ago"
    fresh = h.server.seed_refresh_token(POST_CLIENT_ID)
    headers = await h.build(refresh_auth(h, fresh)).headers()

    assert await h.resource(headers) == 200
    assert [r.form["refresh_token"] for r in h.server.received] == ["revoked-long-ago", fresh]
    assert h.store.tokens[WEBHOOK] not in ("revoked-long-ago", fresh)
    assert h.requests == ["error", "success"]


async def test_without_rotation_nothing_is_saved(h: Harness) -> None:
    h.server.rotate_refresh_tokens = False
    seeded = h.server.seed_refresh_token(POST_CLIENT_ID)
    authenticator = h.build(refresh_auth(h, seeded))
    first = await authenticator.headers()
    authenticator.invalidate(first)
    await authenticator.headers()

    assert [r.form["refresh_token"] for r in h.server.received] == [seeded, seeded]
    assert h.store.tokens == {}
    assert "save" not in h.store.events


async def test_a_failed_save_withholds_the_token_but_keeps_the_rotation(h: Harness) -> None:
    seeded = h.server.seed_refresh_token(POST_CLIENT_ID)
    h.store.fail_saves = True
    authenticator = h.build(refresh_auth(h, seeded))
    with pytest.raises(OAuthError) as caught:
        await authenticator.headers()
    assert caught.value.description == "could not save the refresh token: StoreUnavailable"

    h.store.fail_saves = False
    await authenticator.headers()
    forms = [r.form["refresh_token"] for r in h.server.received]
    assert forms[0] == seeded and forms[1] != seeded  # the rotated token, kept in memory, was used
    assert h.store.tokens[WEBHOOK] not in forms


async def test_refresh_grant_with_basic_client_auth(h: Harness) -> None:
    seeded = h.server.seed_refresh_token(ODD_CLIENT_ID)
    auth = h.auth(ODD_CLIENT_ID, ODD_CLIENT_SECRET, grant="refresh_token", refresh_token=Secret(seeded))
    headers = await h.build(auth).headers()

    assert await h.resource(headers) == 200
    assert h.server.last_form == {"grant_type": "refresh_token", "refresh_token": seeded}
