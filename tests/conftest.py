"""Fixtures shared by every tier: the recording receiver, the OAuth2 server, a relay in-process."""

pytest_plugins = ["tests.support.receiver", "tests.support.oauth_server"]
