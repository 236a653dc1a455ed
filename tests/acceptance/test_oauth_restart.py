"""A rotated refresh token survives kill -9 of the relay process; no credential ever reaches the logs."""

from __future__ import annotations

from pathlib import Path

from tests.support.oauth_server import BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OAuthServer
from tests.support.process import RelayProcess, post_events, write_config

KEY = "oauth-restart-key"


async def test_rotated_refresh_token_survives_kill_9(tmp_path: Path, oauth_server: OAuthServer) -> None:
    seeded = oauth_server.seed_refresh_token(BASIC_CLIENT_ID)
    (tmp_path / "refresh_token").write_text(seeded + "\n")
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

[[webhooks]]
id = "dataguard"
url = "{oauth_server.resource_url}"

[webhooks.auth]
type = "oauth2"
grant = "refresh_token"
token_url = "{oauth_server.token_url}"
client_id = "{BASIC_CLIENT_ID}"
client_secret = "env:TEST_CLIENT_SECRET"
refresh_token = "file:{tmp_path / "refresh_token"}"
""",
    )
    env = {"TEST_CLIENT_SECRET": BASIC_CLIENT_SECRET}
    relay = await RelayProcess(config, env=env).start()
    assert (await post_events(relay.url, KEY, {"type": "user.updated", "data": {}}))[0] == 202
    await _until(lambda: oauth_server.resource_answers[200] == 1)
    await relay.kill()
    assert not oauth_server.refresh_token_active(seeded)  # the configured token is dead now

    oauth_server.revoke_access_tokens()  # force a new token fetch after the restart
    relay = await RelayProcess(config, env=env).start()
    try:
        assert (await post_events(relay.url, KEY, {"type": "user.updated", "data": {}}))[0] == 202
        # >= 2: when the kill came before the first result was recorded, that delivery goes again (at least once),
        # and both can land between two polls.
        await _until(lambda: oauth_server.resource_answers[200] >= 2)
    finally:
        assert await relay.stop() == 0
    assert oauth_server.token_requests["refresh_token"] == 2

    logs = relay.log_path.read_text()
    issued = oauth_server.issued_tokens()
    assert len(issued) >= 4
    for secret in [seeded, BASIC_CLIENT_SECRET, KEY, *issued]:
        assert secret not in logs


async def _until(predicate: object, timeout: float = 30.0) -> None:
    import asyncio

    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
