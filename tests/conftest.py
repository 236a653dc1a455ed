"""Fixtures shared by every tier: the recording receiver, the OAuth2 server, a private PostgreSQL server, a headless
Chromium; hypothesis made deterministic."""

import os

from hypothesis import settings

pytest_plugins = [
    "tests.support.receiver",
    "tests.support.oauth_server",
    "tests.support.postgres",
    "tests.support.browser",
]

# The same examples on every run and every machine: a failure found once is found again (CI included).
# Wider random campaigns are a local choice: HYPOTHESIS_PROFILE=explore pytest ...
settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
