"""A hostile or broken token endpoint fails the attempt with ``oauth_error``, through a running relay.

It cannot raise relay's memory with a huge answer (relay reads at most ``TOKEN_ANSWER_LIMIT`` of it and closes the
connection), nor crash the attempt with a value that cannot go into a header or a sane cache lifetime.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from relay.auth import TOKEN_ANSWER_LIMIT
from relay.models import OAuth2Auth, Secret
from tests.support.oauth_server import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OAuthServer
from tests.support.receiver import serve_locally
from tests.support.relay_harness import RunningRelay, running_relay, webhook

HOUR = 3600.0
HUGE = 32 * 1024 * 1024  # far past what loopback socket buffers hold (about 4 MiB here)
CHUNK = 64 * 1024
TOKEN = "tok-0123456789"  # the hostile answers' token: it must appear in no attempt and no log


async def _first_attempt(relay: RunningRelay) -> dict[str, Any]:
    _, answer = await relay.post({"type": "t", "data": {}})
    await relay.wait_until(lambda: relay.sql("SELECT attempt_count FROM deliveries") == [(1,)])
    [delivery] = (await relay.event(answer["data"]["id"]))["deliveries"]
    attempt: dict[str, Any] = delivery["attempts"][0]
    return attempt


# -- a huge answer -------------------------------------------------------------------------------------------


@dataclass
class HugeTokenEndpoint:
    """Answers every token request with a JSON object whose access token is ``HUGE`` bytes, streamed in chunks."""

    requests: int = 0
    sent: int = 0
    finished: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def token(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(request)
            await response.write(b'{"token_type": "Bearer", "access_token": "')
            chunk = b"a" * CHUNK
            while self.sent < HUGE:
                await response.write(chunk)
                self.sent += len(chunk)
            await response.write(b'"}')
            await response.write_eof()
            self.finished = True
        except ConnectionError:
            pass  # relay closed the connection: what this test wants
        finally:
            self.done.set()
        return response


async def test_a_huge_token_answer_fails_the_attempt_and_is_not_read(tmp_path: Path) -> None:
    endpoint = HugeTokenEndpoint()
    app = web.Application()
    app.router.add_post("/token", endpoint.token)
    runner, port = await serve_locally(app)
    try:
        auth = OAuth2Auth(
            grant="client_credentials",
            token_url=f"http://127.0.0.1:{port}/token",
            client_id="relay",
            client_secret=Secret("client-secret-0123"),
        )
        hook = webhook(f"http://127.0.0.1:{port}/hook", auth=auth)
        async with running_relay(tmp_path, [hook], retry_schedule=(0.0, HOUR)) as relay:
            attempt = await _first_attempt(relay)
            await asyncio.wait_for(endpoint.done.wait(), timeout=5)
    finally:
        await runner.cleanup()

    assert attempt["error"] == "oauth_error" and attempt["status_code"] is None
    assert attempt["error_detail"] == (
        f"token answer: too large (over {TOKEN_ANSWER_LIMIT // 1024} KiB), not read further"
    )
    assert endpoint.requests == 1  # not worth a local retry
    # relay hung up after its cap: the server could not hand over the rest.
    assert not endpoint.finished
    assert endpoint.sent < HUGE


# -- hostile values ------------------------------------------------------------------------------------------


def _client_credentials(server: OAuthServer) -> OAuth2Auth:
    return OAuth2Auth(
        grant="client_credentials",
        token_url=server.token_url,
        client_id=BASIC_CLIENT_ID,
        client_secret=Secret(BASIC_CLIENT_SECRET),
    )


EXPIRES_IN = "token answer: expires_in must be a positive number of seconds"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"access_token": f"{TOKEN}\r\nX-Injected: 1"}, "token answer: access_token holds a control character"),
        ({"access_token": f"{TOKEN}\nX-Injected: 1"}, "token answer: access_token holds a control character"),
        ({"access_token": f"{TOKEN}\x00rest"}, "token answer: access_token holds a control character"),
        ({"access_token": f"{TOKEN} rest"}, "token answer: access_token holds a space"),
        ({"access_token": f"{TOKEN}é"}, "token answer: access_token holds a non-ASCII character"),
        ({"access_token": 12345}, "token answer: access_token must be a string"),
        ({"access_token": TOKEN, "token_type": 7}, "token answer: token_type must be a string"),
        ({"access_token": TOKEN, "expires_in": 1e300}, EXPIRES_IN),
        ({"access_token": TOKEN, "expires_in": 10**30}, EXPIRES_IN),
        ({"access_token": TOKEN, "expires_in": -5}, EXPIRES_IN),
        ({"access_token": TOKEN, "expires_in": 0}, EXPIRES_IN),
        ({"access_token": TOKEN, "expires_in": "abc"}, EXPIRES_IN),
        ({"access_token": TOKEN, "expires_in": "NaN"}, EXPIRES_IN),
        ({"access_token": TOKEN, "expires_in": "1e300"}, EXPIRES_IN),
        ({"access_token": TOKEN, "expires_in": True}, EXPIRES_IN),
        ({"access_token": TOKEN, "expires_in": [60]}, EXPIRES_IN),
    ],
    ids=[
        "token-crlf",
        "token-lf",
        "token-nul",
        "token-space",
        "token-non-ascii",
        "token-number",
        "token-type-number",
        "expires-1e300",
        "expires-huge-int",
        "expires-negative",
        "expires-zero",
        "expires-abc",
        "expires-nan-string",
        "expires-1e300-string",
        "expires-true",
        "expires-list",
    ],
)
async def test_a_hostile_token_answer_is_an_oauth_error(
    tmp_path: Path, oauth_server: OAuthServer, answer: dict[str, object], expected: str
) -> None:
    oauth_server.respond_next({"token_type": "Bearer", **answer})
    hook = webhook(oauth_server.resource_url, auth=_client_credentials(oauth_server))
    with capture_logs() as logs:
        async with running_relay(tmp_path, [hook], retry_schedule=(0.0, HOUR)) as relay:
            attempt = await _first_attempt(relay)

    assert attempt["error"] == "oauth_error"
    assert attempt["error_detail"].startswith(expected)
    assert TOKEN not in attempt["error_detail"]
    assert not [entry for entry in logs if entry["event"] == "attempt_crashed"]
    assert "oauth_token_failed" in [entry["event"] for entry in logs]
    assert TOKEN not in repr(logs)
    assert oauth_server.total_token_requests == 1  # a refused answer is not retried at once
    assert not oauth_server.resource_answers  # the endpoint never saw the token


async def test_a_hostile_rotated_refresh_token_is_refused_before_it_is_saved(
    tmp_path: Path, oauth_server: OAuthServer
) -> None:
    seeded = oauth_server.seed_refresh_token(BASIC_CLIENT_ID)
    oauth_server.respond_next(
        {"access_token": "fine-access-token", "token_type": "Bearer", "refresh_token": f"{TOKEN}\nX-Injected: 1"}
    )
    auth = OAuth2Auth(
        grant="refresh_token",
        token_url=oauth_server.token_url,
        client_id=BASIC_CLIENT_ID,
        client_secret=Secret(BASIC_CLIENT_SECRET),
        refresh_token=Secret(seeded),
    )
    with capture_logs() as logs:
        async with running_relay(
            tmp_path, [webhook(oauth_server.resource_url, auth=auth)], retry_schedule=(0.0, HOUR)
        ) as relay:
            attempt = await _first_attempt(relay)
            saved = relay.sql("SELECT COUNT(*) FROM oauth_tokens")

    assert attempt["error"] == "oauth_error"
    assert attempt["error_detail"] == "token answer: refresh_token holds a control character"
    assert saved == [(0,)]  # neither saved nor used: the next fetch still uses the seeded one
    assert not [entry for entry in logs if entry["event"] == "attempt_crashed"]
    assert TOKEN not in repr(logs) and seeded not in repr(logs)
    assert not oauth_server.resource_answers


@pytest.mark.parametrize(
    ("expires_in", "shown"),
    [("120", 120), (" 90.5 ", 90.5), (365 * 86400, 365 * 86400)],
    ids=["numeric-string", "decimal-string-with-spaces", "a-year"],
)
async def test_sane_expires_in_values_are_still_accepted(
    tmp_path: Path, oauth_server: OAuthServer, expires_in: object, shown: float
) -> None:
    oauth_server.respond_next({"access_token": TOKEN, "token_type": "bearer", "expires_in": expires_in})
    hook = webhook(oauth_server.resource_url, auth=_client_credentials(oauth_server))
    with capture_logs() as logs:
        async with running_relay(tmp_path, [hook], retry_schedule=(0.0, HOUR)) as relay:
            attempt = await _first_attempt(relay)

    # The scripted token is unknown to the server's resource: a 401, one refetch, then Authlib's own token.
    assert attempt["error"] is None and attempt["status_code"] == 200
    fetched = [entry["expires_in"] for entry in logs if entry["event"] == "oauth_token_fetched"]
    assert fetched[0] == shown
