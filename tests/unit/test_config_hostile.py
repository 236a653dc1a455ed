"""Hostile input to the TOML loader: no text and no structure makes ``load_config`` raise anything but
``ConfigError`` (a bounded hypothesis run over raw text, TOML-ish fragments, and generated structures).
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config import Config, load_config
from relay.errors import ConfigError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        path = Path(name)
        (path / "empty").write_text("")
        (path / "binary").write_bytes(b"\xff\xfe\x00secret")
        (path / "secret").write_text("s3cret\nsecond line\n")
        (path / "creds").mkdir()
        (path / "creds" / "key").write_text("from-credentials\n")
        yield path


def load(folder: Path, text: str | bytes) -> Config | None:
    """Load ``text`` as a config file; None when it is (rightly) refused with a ConfigError."""
    path = folder / "relay.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    environ = {"SET": "value", "EMPTY": "", "CREDENTIALS_DIRECTORY": str(folder / "creds")}
    try:
        return load_config(path, environ=environ)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError names at least one problem"
        for problem in exc.problems:
            assert isinstance(problem.path, str) and isinstance(problem.message, str) and problem.message
        return None


# -- TOML text ---------------------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    """Scalars and arrays first, then ``[tables]`` and ``[[arrays of tables]]``."""
    lines: list[str] = []
    tables: list[str] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append(f"[{toml_string(key)}]")
            tables.extend(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items())
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                tables.append(f"[[{toml_string(key)}]]")
                tables.extend(f"{toml_string(k)} = {toml_value(v)}" for k, v in item.items())
        else:
            lines.append(f"{toml_string(key)} = {toml_value(value)}")
    return "\n".join(lines + tables) + "\n"


# Secret references only ever point into the test's own folder (or nowhere): "file:" never reads anything else.
keys = st.text(max_size=12).filter(lambda s: not s.startswith(("file:", "cred:")))
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(),
    keys,
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)


def plausible(*choices: Any) -> st.SearchStrategy[Any]:
    """Mostly one of ``choices`` (valid and edge values), sometimes anything: so some documents are valid."""
    listed = st.sampled_from(choices)
    return st.one_of(listed, listed, listed, listed, values)


DURATIONS = ("30s", "0s", "250ms", "1.5h", "-1s", "9" * 400 + "s", "7d", 0, 10**400, 1e308)
SECRETS = (
    "env:SET",
    "env:EMPTY",
    "env:UNSET",
    "env:",
    "file:/nonexistent/secret",
    "file:",
    "cred:key",
    "cred:../key",
    "cred:",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
)
URLS = (
    "https://example.com/hook",
    "http://example.com/hook",
    "https://127.0.0.1/x",
    "https://[::1]/",
    "https://[zz/",
    "https://h:99999/",
    "https://u:p@example.com/",
    "https://２１３０７０６４３３/",
    "https://0x7f.1/",
    "ftp://example.com/",
    "https:///x",
    "",
)
server = st.fixed_dictionaries(
    {"api_keys": st.lists(plausible(*SECRETS), max_size=3) | values},
    optional={
        "listen": plausible(
            "127.0.0.1:8080",
            "unix:/tmp/relay.sock",
            "[::1]:0",
            "h:99999",
            ":80",
            "unix:",
            "[zz]:1",
            "h:" + "9" * 5000,
            "h:１２",
        ),
        "health_listen": plausible("127.0.0.1:8080", "127.0.0.1:9090"),
        "max_body_size": plausible("1MiB", "0", "9" * 400 + "GiB", "1.5KB", -1, 10**400),
        "max_batch": plausible(1, 0, -1, 10**400),
        "request_timeout": plausible(*DURATIONS),
        "shutdown_timeout": plausible(*DURATIONS),
        "max_connections": plausible(1, 0, 10**400),
        "event_loop": plausible("auto", "asyncio", "uvloop", "UVLOOP"),
        "bogus": values,
    },
)
storage = st.fixed_dictionaries(
    {},
    optional={
        "path": plausible("var/relay.db", "", "/dev/null", "a\u0000b"),
        "durability": plausible("full", "normal", "FULL"),
        "retention": plausible(*DURATIONS),
    },
)
delivery = st.fixed_dictionaries(
    {},
    optional={
        "timeout": plausible(*DURATIONS),
        "concurrency": plausible(1, 0, 10**400),
        "per_webhook_concurrency": plausible(16, -1),
        "retry_schedule": st.lists(plausible(*DURATIONS), max_size=60) | values,
        "jitter": plausible(0.1, 1, -0.1, math.nan),
        "redrive_interval": plausible(*DURATIONS),
        "redrive_max_age": plausible(*DURATIONS),
        "allow_http": plausible(True, "true"),
        "allow_private_networks": plausible(False),
        "user_agent": plausible("relay/{version}", "a\nb", ""),
    },
)
auth = st.fixed_dictionaries(
    {"type": plausible("bearer", "header", "basic", "oauth2", "other")},
    optional={
        "token": plausible(*SECRETS),
        "name": plausible("X-Api-Key", "Content-Type", "bad name", ""),
        "value": plausible(*SECRETS),
        "username": plausible("relay", "a:b", "a\nb"),
        "password": plausible(*SECRETS),
        "grant": plausible("client_credentials", "refresh_token", "password"),
        "token_url": plausible(*URLS),
        "client_id": plausible("relay", ""),
        "client_secret": plausible(*SECRETS),
        "refresh_token": plausible(*SECRETS),
        "scope": values,
        "audience": values,
        "extra_params": st.dictionaries(keys, values, max_size=3) | values,
        "client_auth": plausible("basic", "post", "jwt"),
    },
)
webhook = st.fixed_dictionaries(
    {},
    optional={
        "id": plausible("crm", "CRM", "", "a" * 65, "a b"),
        "url": plausible(*URLS),
        "events": st.lists(plausible("consent.*", "*", "a.b", "", ".*", "a" * 200), max_size=3) | values,
        "secret": plausible(*SECRETS),
        "signature": plausible("standard", "hmac-sha256", "none", "rsa"),
        "format": plausible("envelope", "data", "flat", "data-flat", "xml"),
        "sent_at_field": plausible("sentAt", "id", "data", "", "1x", "a" * 100),
        "headers": st.dictionaries(keys | st.sampled_from(["X-Tenant", "Host", "Connection"]), values, max_size=3)
        | values,
        "retry_schedule": st.lists(plausible(*DURATIONS), max_size=4) | values,
        "timeout": plausible(*DURATIONS),
        "rate_limit": plausible("50/s", "0/s", "1/x", "9" * 400 + "/s", 10**400, math.inf),
        "description": values,
        "is_active": plausible(True, "yes"),
        "auth": auth | values,
        "extra": values,
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "server": server | values,
        "storage": storage | values,
        "delivery": delivery | values,
        "webhooks": st.lists(webhook, max_size=3) | values,
        "unknown": values,
    },
)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with a few keys set to generated values: reaches the checks behind the first ones."""
    doc: dict[str, Any] = {
        "server": {"api_keys": ["k"], "listen": "127.0.0.1:0"},
        "storage": {"path": "var/relay.db"},
        "delivery": {"allow_http": True},
        "webhooks": [{"id": "a", "url": "https://example.com/h", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}],
    }
    sections = {"server": server, "storage": storage, "delivery": delivery, "webhooks": webhook}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(sections)))
        changes = draw(sections[name])
        table = doc[name][0] if name == "webhooks" else doc[name]
        for key, value in list(changes.items())[: draw(st.integers(1, 2))]:
            table[key] = value
    return doc


FRAGMENTS = (
    "[server]",
    "[storage]",
    "[delivery]",
    "[[webhooks]]",
    "[webhooks.auth]",
    "[[webhooks.auth]]",
    "[server.listen]",
    'api_keys = ["k"]',
    'listen = "127.0.0.1:0"',
    'url = "https://example.com/h"',
    'id = "a"',
    "x = " + "[" * 1200 + "]" * 1200,
    "x = " + "{a = " * 600 + "1" + "}" * 600,
    "x = " + "9" * 5000,
    "x = 0x" + "f" * 5000,
    "x = 1e99999",
    "x = nan",
    "x = 9999-12-31T23:59:59-23:00",
    'x = """',
    "x = '''\n",
    'x = "\\ud800"',
    "a.b.c.d = 1",
    "= 1",
    "x = 1\nx = 2",
)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(folder: Path, text: str) -> None:
    load(folder, text)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_a_config_or_a_config_error(folder: Path, raw: bytes) -> None:
    load(folder, raw)


@FUZZ
@given(lines=st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=30), max_size=12))
def test_toml_fragments_are_a_config_or_a_config_error(folder: Path, lines: list[str]) -> None:
    load(folder, "\n".join(lines))


@FUZZ
@given(doc=documents | near_valid())
def test_generated_structures_are_a_config_or_a_config_error(folder: Path, doc: dict[str, Any]) -> None:
    config = load(folder, toml_document(doc))
    if config is not None:
        assert config.server.api_keys, "a valid config has an API key"


def test_the_fixed_faults_stay_fixed(folder: Path) -> None:
    """Inputs that made the loader raise something else before: each is now a ConfigError naming the key."""
    cases = {
        "x = " + "[" * 2000 + "]" * 2000: "",
        "x = " + "9" * 5000: "",
        '[server]\napi_keys = ["k"]\n[delivery]\ntimeout = ' + "9" * 400: "delivery.timeout",
        '[server]\napi_keys = ["k"]\nmax_body_size = "' + "9" * 400 + 'GiB"': "server.max_body_size",
        '[server]\napi_keys = ["k"]\nlisten = "h:' + "9" * 5000 + '"': "server.listen",
        '[server]\napi_keys = ["k"]\n[[webhooks]]\nid = "a"\nurl = "https://example.com/"\nrate_limit = '
        + "9" * 400: "webhooks[0].rate_limit",
    }
    for text, where in cases.items():
        path = folder / "fault.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ={})
        assert [p.path for p in caught.value.problems] == [where], caught.value.problems
