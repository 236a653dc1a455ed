"""A rotating OAuth2 refresh token shared by three relays on one PostgreSQL store (CONTRACT §8): the relays refresh
one at a time, each with the token the last one stored, so the token server never sees one refresh token twice,
through the real Authlib server with rotation on."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from relay.models import OAuth2Auth, Secret
from tests.integration.test_postgres_group import relays
from tests.support.oauth_server import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OAuthServer
from tests.support.relay_harness import webhook

ROUNDS = 3
EVENTS = 6  # per relay and round


async def test_three_relays_never_use_one_refresh_token_twice(
    tmp_path: Path, postgres_url: str, oauth_server: OAuthServer
) -> None:
    seeded = oauth_server.seed_refresh_token(BASIC_CLIENT_ID)
    auth = OAuth2Auth(
        grant="refresh_token",
        token_url=oauth_server.token_url,
        client_id=BASIC_CLIENT_ID,
        client_secret=Secret(BASIC_CLIENT_SECRET),
        refresh_token=Secret(seeded),
    )
    hook = webhook(oauth_server.resource_url, id="dataguard", auth=auth)
    async with relays(3, tmp_path, postgres_url, [hook]) as group:
        delivered = 0
        for round_ in range(ROUNDS):
            if round_:
                oauth_server.revoke_access_tokens()  # every relay must fetch again: three refreshes at once
            answers = await asyncio.gather(
                *(relay.post({"type": "user.updated", "data": {"n": n}}) for relay in group for n in range(EVENTS))
            )
            assert {status for status, _ in answers} == {202}
            delivered += len(answers)
            await group[0].wait_until(lambda n=delivered: oauth_server.resource_answers[200] >= n, timeout=15)

    presented = Counter(
        r.form["refresh_token"] for r in oauth_server.received if r.form.get("grant_type") == "refresh_token"
    )
    assert presented, "no refresh happened"
    assert max(presented.values()) == 1, presented  # never one refresh token twice
    assert presented[seeded] == 1  # the configured one was used once, then only rotated ones
    assert oauth_server.resource_answers[200] == ROUNDS * 3 * EVENTS
    assert oauth_server.token_requests["refresh_token"] == len(presented)  # no failed refresh to retry
