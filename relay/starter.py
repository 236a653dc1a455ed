"""What ``relay init`` writes: a starter ``relay.toml`` that ``relay check-config`` accepts as it is.

Without a profile, one webhook delivers every event, signed, to the development receiver (``relay receive``) on
this machine. With a profile, its ``[[webhooks]]`` table follows, its webhook secret generated and any other
``env:`` secret (an OAuth2 client secret, a refresh token) left as a ``CHANGE-ME`` placeholder to fill in, so that
the file needs no environment to load. Pure text: the command writes it (``relay.cli``).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from relay.resources import Profile, example_config_location

DEV_RECEIVER_PORT = 9000
PLACEHOLDER = "CHANGE-ME"

# An active (uncommented) `key = "env:NAME"` line of a profile, with whatever follows the value.
_ENV_LINE = re.compile(r'^(?P<key>[a-z_]+) = "env:(?P<var>[A-Za-z_][A-Za-z0-9_]*)"(?P<rest>.*)$', re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Starter:
    text: str
    api_key: str
    secret: str | None  # the webhook's signing secret; None when the profile's webhook does not sign
    profile: str | None = None
    placeholders: tuple[str, ...] = ()  # the keys left as CHANGE-ME, for the user to fill in

    def next_steps(self, path: str) -> str:
        """What to run next, for a file written at ``path`` (quoted for a shell)."""
        run = [f"     relay check-config --config {path}", f"     relay serve --config {path}"]
        if self.profile is not None:
            todo = " and each CHANGE-ME" if self.placeholders else ""
            return "\n".join([f"set the {self.profile} webhook's url{todo} in it, then:", *run])
        return "\n".join(
            [
                "1. the development receiver, in a terminal of its own:",
                f"     relay receive --port {DEV_RECEIVER_PORT} --secret {self.secret}",
                "2. relay, in another:",
                *run,
                "3. an event, from a third:",
                f"     curl -H 'Authorization: Bearer {self.api_key}' -H 'Content-Type: application/json' \\",
                """          -d '{"type": "hello", "data": {}}' http://127.0.0.1:8080/v1/events""",
            ]
        )


def new_api_key() -> str:
    return secrets.token_urlsafe(32)


def starter_config(profile: Profile | None, *, api_key: str, secret: str) -> Starter:
    """The starter file: ``[server]`` with ``api_key``, ``[storage]``, then the dev webhook or ``profile``'s."""
    head = [
        "# relay.toml, written by `relay init`: `relay check-config` accepts it as it is.",
        f"# Every key, with its default: {example_config_location()}",
        "# It holds secrets: keep it readable by its owner only (relay init makes it 0600).",
        "",
        "[server]",
        'listen = "127.0.0.1:8080"            # the ingest and management API',
        f"api_keys = [{_toml(api_key)}]  # every /v1 request carries one: Authorization: Bearer KEY",
        "",
        "[storage]",
        'path = "var/relay.db"                # the SQLite outbox, relative to the directory relay runs in',
        "",
    ]
    if profile is None:
        return Starter("\n".join([*head, *_dev_webhook(secret)]) + "\n", api_key, secret)
    text, used, placeholders = _fill_profile(profile.text, secret)
    intro = [f"# The {profile.name} profile (`relay profiles` lists them): set `url` to your endpoint."]
    if placeholders:
        intro.append(f"# Replace each {PLACEHOLDER}: {', '.join(placeholders)}.")
    text = "\n".join([*head, *intro, "", text])
    return Starter(text, api_key, secret if used else None, profile=profile.name, placeholders=placeholders)


def _dev_webhook(secret: str) -> list[str]:
    return [
        "[delivery]",
        "# The development receiver is plain HTTP on this machine: both lines let relay deliver to it. Delete them",
        "# before you point relay at real endpoints.",
        "allow_http = true",
        "allow_private_networks = true",
        "",
        "# Every event, signed (Standard Webhooks), to the development receiver, which verifies and prints each one:",
        f"#   relay receive --port {DEV_RECEIVER_PORT} --secret {secret}",
        "[[webhooks]]",
        'id = "dev"',
        f'url = "http://127.0.0.1:{DEV_RECEIVER_PORT}/webhook"',
        'events = ["*"]',
        f"secret = {_toml(secret)}",
    ]


def _fill_profile(text: str, secret: str) -> tuple[str, bool, tuple[str, ...]]:
    """The profile with its ``env:`` secrets replaced: the webhook's ``secret`` by ``secret``, any other by the
    placeholder. Returns the text, whether ``secret`` was used, and the keys given the placeholder."""
    used = False
    placeholders: list[str] = []

    def fill(match: re.Match[str]) -> str:
        nonlocal used
        key, rest = match["key"], match["rest"]
        if key == "secret":
            used = True
            return f"{key} = {_toml(secret)}{rest}"
        placeholders.append(key)
        note = rest if rest.strip() else f'  # or "env:{match["var"]}" to read it from the environment'
        return f"{key} = {_toml(PLACEHOLDER)}{note}"

    return _ENV_LINE.sub(fill, text), used, tuple(placeholders)


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string
