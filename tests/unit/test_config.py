"""``load_config``: every key of CONTRACT §3, its defaults, and one test per kind of problem (with its key path)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

import relay
from relay.config import (
    Config,
    DeliveryConfig,
    Listen,
    ServerConfig,
    StorageConfig,
    event_loop_factory,
    load_config,
    parse_listen,
    parse_webhook,
    summarize,
)
from relay.errors import ConfigError, Problem
from relay.models import (
    BasicAuth,
    BearerAuth,
    BodyFormat,
    Durability,
    HeaderAuth,
    OAuth2Auth,
    Secret,
    SignatureScheme,
    Webhook,
)

REPO = Path(__file__).resolve().parents[2]
# The Standard Webhooks spec's v1a example key (Svix's tests): base64 of the ed25519 seed and its public key.
ED25519_KEY = "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
MINIMAL = '[server]\napi_keys = ["dev-key"]\n'


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ=environ or {})


def problems(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every problem of an invalid file, as ``path: message`` lines."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    return [str(p) for p in caught.value.problems]


def problem_paths(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    return [p.path for p in caught.value.problems]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # storage.path is relative to the working directory


# --- valid files -------------------------------------------------------------------------------------------


FULL = """
[server]
listen = "0.0.0.0:8081"
health_listen = "[::1]:9091"
api_keys = ["env:RELAY_API_KEY", "file:{tmp}/api-key", "cred:second-key", "literal-key"]
max_body_size = "2MiB"
max_batch = 50
request_timeout = "15s"
shutdown_timeout = 2.5
metrics_cache_ttl = "0s"

[storage]
path = "state/relay.db"
durability = "normal"
retention = "3d"

[delivery]
timeout = "250ms"
concurrency = 8
per_webhook_concurrency = 2
retry_schedule = ["0s", "30s", 120]
jitter = 0
redrive_interval = "10m"
redrive_max_age = "2d"
allow_http = true
allow_private_networks = true
user_agent = "acme-relay/{{version}} (+https://acme.example)"

[[webhooks]]
id = "crm"
url = "https://crm.example.com/hooks/consent"
events = ["consent.created", "consent.*", "*"]
secret = "env:CRM_WEBHOOK_SECRET"
signature = "standard"
format = "flat"
sent_at_field = "sentAt"
headers = {{ "X-Tenant" = "acme", "X-Env" = "prod" }}
retry_schedule = ["1s", "2s"]
timeout = "5s"
rate_limit = "600/m"
description = "CRM"
is_active = false
[webhooks.auth]
type = "oauth2"
grant = "refresh_token"
token_url = "https://auth.crm.example.com/oauth/token"
client_id = "relay"
client_secret = "env:CRM_CLIENT_SECRET"
scope = "webhooks:write"
audience = "https://crm.example.com"
extra_params = {{ resource = "consent" }}
client_auth = "post"
refresh_token = "env:CRM_REFRESH_TOKEN"

[[webhooks]]
id = "bearer_1"
url = "http://10.0.0.5:8080/hook"
secret = "plain-secret-0123"
signature = "hmac-sha256"
format = "data"
[webhooks.auth]
type = "bearer"
token = "bearer-tok-1"

[[webhooks]]
id = "header-auth"
url = "https://h.example.com/"
[webhooks.auth]
type = "header"
name = "X-Api-Key"
value = "key"

[[webhooks]]
id = "basic"
url = "https://b.example.com/"
signature = "none"
[webhooks.auth]
type = "basic"
username = "relay"
password = "pw"
"""

FULL_ENV = {
    "RELAY_API_KEY": "api-key-1",
    "CRM_WEBHOOK_SECRET": "whsec_Y3JtLXdlYmhvb2stc2VjcmV0LWZvci10ZXN0cw==",
    "CRM_CLIENT_SECRET": "client+secret%",
    "CRM_REFRESH_TOKEN": "refresh-1",
}


def test_full_config_reads_every_key(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("api-key-2\nignored second line\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "second-key").write_text("api-key-3")
    environ = {**FULL_ENV, "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    config = load(tmp_path, FULL.format(tmp=tmp_path), environ)

    assert config.server == ServerConfig(
        listen=Listen("0.0.0.0", 8081),
        health_listen=Listen("::1", 9091),
        api_keys=(Secret("api-key-1"), Secret("api-key-2"), Secret("api-key-3"), Secret("literal-key")),
        max_body_size=2 * 1024 * 1024,
        max_batch=50,
        request_timeout=15.0,
        shutdown_timeout=2.5,
        metrics_cache_ttl=0.0,
    )
    assert config.storage == StorageConfig(tmp_path / "state/relay.db", Durability.NORMAL, 3 * 86400.0)
    assert config.delivery == DeliveryConfig(
        timeout=0.25,
        concurrency=8,
        per_webhook_concurrency=2,
        retry_schedule=(0.0, 30.0, 120.0),
        jitter=0.0,
        redrive_interval=600.0,
        redrive_max_age=2 * 86400.0,
        allow_http=True,
        allow_private_networks=True,
        user_agent=f"acme-relay/{relay.__version__} (+https://acme.example)",
    )
    assert config.source_path == tmp_path / "relay.toml"

    crm, bearer, header, basic = config.webhooks
    assert crm.id == "crm"
    assert crm.url == "https://crm.example.com/hooks/consent"
    assert crm.events == ("consent.created", "consent.*", "*")
    assert crm.secret == Secret(FULL_ENV["CRM_WEBHOOK_SECRET"])
    assert crm.signature is SignatureScheme.STANDARD
    assert crm.format is BodyFormat.FLAT
    assert crm.sent_at_field == "sentAt"
    assert crm.headers == {"X-Tenant": "acme", "X-Env": "prod"}
    assert crm.retry_schedule == (1.0, 2.0)
    assert crm.timeout == 5.0
    assert crm.rate_limit == 10.0
    assert crm.description == "CRM"
    assert crm.is_active is False
    assert crm.source == "config"
    assert crm.auth == OAuth2Auth(
        grant="refresh_token",
        token_url="https://auth.crm.example.com/oauth/token",
        client_id="relay",
        client_secret=Secret("client+secret%"),
        scope="webhooks:write",
        audience="https://crm.example.com",
        extra_params={"resource": "consent"},
        client_auth="post",
        refresh_token=Secret("refresh-1"),
    )

    assert bearer.signature is SignatureScheme.HMAC_SHA256
    assert bearer.format is BodyFormat.DATA
    assert bearer.auth == BearerAuth(Secret("bearer-tok-1"))
    assert bearer.events == ()
    assert bearer.retry_schedule is None and bearer.timeout is None and bearer.rate_limit is None
    assert header.auth == HeaderAuth("X-Api-Key", Secret("key"))
    assert header.signature is SignatureScheme.NONE  # no secret: unsigned
    assert basic.auth == BasicAuth("relay", Secret("pw"))
    assert config.webhook_map()["basic"] is basic


def test_minimal_file_takes_every_default(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    defaults = DeliveryConfig()
    assert config.server == ServerConfig(api_keys=(Secret("dev-key"),))
    assert config.server.listen == Listen("127.0.0.1", 8080)
    assert config.server.health_listen is None
    assert config.storage == StorageConfig(path=tmp_path / "var/relay.db")
    assert config.storage.durability is Durability.FULL
    assert config.delivery.retry_schedule == (0.0, 60.0, 300.0, 1800.0, 7200.0)
    assert config.delivery.user_agent == f"relay/{relay.__version__}"
    assert config.delivery == DeliveryConfig(user_agent=defaults.user_agent.replace("{version}", relay.__version__))
    assert config.webhooks == ()


def test_webhook_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + '[[webhooks]]\nid = "a"\nurl = "https://a.example.com/"\n')
    (webhook,) = config.webhooks
    assert webhook.events == ()
    assert webhook.secret is None
    assert webhook.signature is SignatureScheme.NONE
    assert webhook.format is BodyFormat.ENVELOPE
    assert webhook.sent_at_field is None
    assert webhook.headers == {}
    assert webhook.auth is None
    assert webhook.is_active is True
    assert webhook.description is None


def test_signature_defaults_to_standard_with_a_secret(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + WEBHOOK + f'secret = "{HOOK_SECRET}"\n')
    assert config.webhooks[0].signature is SignatureScheme.STANDARD


def test_empty_sent_at_field_means_none(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + '[[webhooks]]\nid = "a"\nurl = "https://a.example.com/"\nsent_at_field = ""\n')
    assert config.webhooks[0].sent_at_field is None


def test_absolute_storage_path_is_kept(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + f'[storage]\npath = "{tmp_path}/x/relay.db"\n')
    assert config.storage.path == tmp_path / "x" / "relay.db"


POSTGRES_URL = "postgresql://relay:pa%3Ass@db.example.com:5432/relay"


def test_storage_url_picks_postgresql_with_a_pool_of_ten(tmp_path: Path) -> None:
    config = load(
        tmp_path, MINIMAL + '[storage]\nurl = "env:RELAY_DATABASE_URL"\n', {"RELAY_DATABASE_URL": POSTGRES_URL}
    )
    assert config.storage.url == Secret(POSTGRES_URL) and config.storage.pool_size == 10
    assert config.storage.describe() == "postgresql://relay:***@db.example.com:5432/relay"
    assert "pa%3Ass" not in summarize(config) and "relay (10 connections, retention 7d)" in summarize(config)
    (tmp_path / "db-url").write_text("postgres://u:secret@127.0.0.1/d?password=other&sslmode=disable\n")
    config = load(tmp_path, MINIMAL + f'[storage]\nurl = "file:{tmp_path}/db-url"\npool_size = 100\n')
    assert config.storage.url == Secret("postgres://u:secret@127.0.0.1/d?password=other&sslmode=disable")
    assert config.storage.pool_size == 100
    assert config.storage.describe() == "postgres://u:***@127.0.0.1/d?password=***&sslmode=disable"
    assert load(tmp_path, MINIMAL).storage.url is None  # neither: the SQLite file at the default path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f'[storage]\npath = "x.db"\nurl = "{POSTGRES_URL}"\n',
            "storage: set either storage.path or storage.url, not both",
        ),
        ('[storage]\nurl = "mysql://u:hunter2@h/d"\n', "storage.url: must start with postgresql:// or postgres://"),
        ('[storage]\nurl = "env:NO_SUCH_URL"\n', "storage.url: environment variable NO_SUCH_URL is not set"),
        ('[storage]\nurl = ""\n', "storage.url: must not be empty"),
        (f'[storage]\nurl = "{POSTGRES_URL}"\npool_size = 0\n', "storage.pool_size: must be at least 1"),
        (f'[storage]\nurl = "{POSTGRES_URL}"\npool_size = 101\n', "storage.pool_size: must be at most 100"),
        (f'[storage]\nurl = "{POSTGRES_URL}"\npool_size = "10"\n', "storage.pool_size: must be an integer"),
        (
            f'[storage]\nurl = "{POSTGRES_URL}"\ndurability = "normal"\n',
            "storage.durability: applies to SQLite (storage.path) only: PostgreSQL commits as the server does",
        ),
        ("[storage]\npool_size = 5\n", "storage.pool_size: applies to PostgreSQL (storage.url) only"),
    ],
)
def test_storage_url_problems(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, MINIMAL + text) == [expected]


def test_oauth2_defaults(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent(
        """
        [[webhooks]]
        id = "a"
        url = "https://a.example.com/"
        [webhooks.auth]
        type = "oauth2"
        token_url = "https://auth.example.com/token"
        client_id = "relay"
        client_secret = "s"
        """
    )
    auth = load(tmp_path, text).webhooks[0].auth
    assert auth == OAuth2Auth("client_credentials", "https://auth.example.com/token", "relay", Secret("s"))
    assert isinstance(auth, OAuth2Auth) and auth.client_auth == "basic" and auth.extra_params == {}


@pytest.mark.parametrize(
    ("text", "listen"),
    [
        ("127.0.0.1:8080", Listen("127.0.0.1", 8080)),
        ("0.0.0.0:0", Listen("0.0.0.0", 0)),
        ("localhost:65535", Listen("localhost", 65535)),
        ("[::1]:8080", Listen("::1", 8080)),
        ("[::]:80", Listen("::", 80)),
        ("unix:/run/relay/relay.sock", Listen(path="/run/relay/relay.sock")),
    ],
)
def test_listen_forms(text: str, listen: Listen) -> None:
    assert parse_listen(text) == listen


def test_listen_str_round_trips() -> None:
    for text in ("127.0.0.1:8080", "[::1]:8080", "unix:/run/relay.sock"):
        assert str(parse_listen(text)) == text


@pytest.mark.parametrize(
    "text", ["8080", ":8080", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:65536", "::1:8080", "[nope]:80", "unix:"]
)
def test_bad_listen(tmp_path: Path, text: str) -> None:
    assert problem_paths(tmp_path, f'[server]\nlisten = "{text}"\napi_keys = ["k"]\n') == ["server.listen"]


def test_example_file_loads_with_its_environment(tmp_path: Path) -> None:
    environ = {
        "RELAY_API_KEY": "example-api-key",
        "CRM_WEBHOOK_SECRET": "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "CRM_CLIENT_SECRET": "client-secret",
        "AUDIT_WEBHOOK_SECRET": "audit-secret-0123",
        "AUDIT_TOKEN": "audit-token",
    }
    config = load_config(REPO / "relay.toml.example", environ=environ)
    assert config.server == ServerConfig(api_keys=(Secret("example-api-key"),))
    assert config.delivery == DeliveryConfig(user_agent=f"relay/{relay.__version__}")
    assert config.storage == StorageConfig(path=tmp_path / "var/relay.db")
    assert [w.id for w in config.webhooks] == ["crm", "audit"]
    assert isinstance(config.webhooks[0].auth, OAuth2Auth)
    assert isinstance(config.webhooks[1].auth, BearerAuth)


def test_example_file_names_its_missing_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "relay.toml.example", environ={})
    assert [p.path for p in caught.value.problems] == [
        "server.api_keys[0]",
        "webhooks[0].secret",
        "webhooks[0].auth.client_secret",
        "webhooks[1].secret",
        "webhooks[1].auth.token",
    ]


def test_dev_file_loads() -> None:
    config = load_config(REPO / "config" / "dev.toml", environ={})
    assert config.server.listen == Listen("127.0.0.1", 8080)
    assert config.server.api_keys == (Secret("dev-key"),)
    assert config.storage.durability is Durability.FULL
    assert config.delivery.allow_http and config.delivery.allow_private_networks
    assert config.delivery.retry_schedule == (0.0, 5.0, 30.0)
    assert config.delivery.redrive_interval == 60.0
    (local,) = config.webhooks
    assert (local.id, local.url, local.events) == ("local", "http://127.0.0.1:9000/webhook", ("*",))
    assert local.signature is SignatureScheme.STANDARD
    assert local.secret is not None and local.secret.reveal().startswith("whsec_")


def test_summary_names_webhooks_and_no_secret(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("api-key-2\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "second-key").write_text("api-key-3")
    text = FULL.format(tmp=tmp_path).replace(
        "https://crm.example.com/hooks/consent", "https://crm.example.com/hooks?token=sup3rs3cret"
    )
    config = load(tmp_path, text, {**FULL_ENV, "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    summary = summarize(config)
    assert "listen: 0.0.0.0:8081 (health: [::1]:9091)" in summary
    assert f"store: {tmp_path / 'state/relay.db'} (durability normal" in summary
    assert "retries 0s 30s 2m" in summary
    assert (
        "crm (inactive): https://crm.example.com/hooks?token=*** events=consent.created,consent.*,* "
        "signature=standard format=flat sent_at_field=sentAt auth=oauth2 retries=1s,2s timeout=5s rate_limit=10/s"
    ) in summary
    assert (  # [delivery]'s retry schedule and timeout where the webhook has none of its own
        "bearer_1: http://10.0.0.5:8080/hook events=* signature=hmac-sha256 format=data auth=bearer "
        "retries=0s,30s,2m timeout=250ms\n"
    ) in summary
    assert "header-auth" in summary and "auth=header" in summary and "auth=basic" in summary
    for secret in [
        *FULL_ENV.values(),
        "api-key-2",
        "api-key-3",
        "literal-key",
        "plain-secret-0123",
        "bearer-tok-1",
        "sup3rs3cret",
    ]:
        assert secret not in summary


# --- the file itself ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml", environ={})
    assert [str(p) for p in caught.value.problems] == [f"{tmp_path / 'nope.toml'}: no such file"]


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\napi_keys = ["k"]\nlisten = = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert str(problem) == f"{path}: TOML syntax error at line 3, column 10: Invalid value"


def test_toml_syntax_error_at_end_of_document(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\napi_keys = ["k')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value.problems[0]).startswith(f"{path}: TOML syntax error at end of document: ")


def test_relative_path_is_reported_as_given(tmp_path: Path) -> None:
    write(tmp_path, "[server\n")
    with pytest.raises(ConfigError) as caught:
        load_config("relay.toml", environ={})
    assert str(caught.value.problems[0]).startswith("relay.toml: TOML syntax error at line 1, column 8: ")


def test_api_keys_are_required(tmp_path: Path) -> None:
    assert problems(tmp_path, 'server = "x"\n') == [
        "server: must be a table",
        'server.api_keys: required: a list of keys such as ["env:RELAY_API_KEY"]',
    ]
    assert problems(tmp_path, "") == ['server.api_keys: required: a list of keys such as ["env:RELAY_API_KEY"]']
    assert problems(tmp_path, "[server]\napi_keys = []\n") == ["server.api_keys: must not be empty"]
    assert problems(tmp_path, '[server]\napi_keys = "k"\n') == ["server.api_keys: must be a list"]
    assert problems(tmp_path, '[server]\napi_keys = ["k", ""]\n') == ["server.api_keys[1]: must not be empty"]


# --- unknown keys, at every level --------------------------------------------------------------------------


WEBHOOK = '[[webhooks]]\nid = "a"\nurl = "https://a.example.com/"\n'
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example: 24 bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "[servers]\n", 'servers: unknown key (did you mean "server"?)'),
        ("colour = 1\n" + MINIMAL, "colour: unknown key"),
        ('[server]\napi_keys = ["k"]\nlisen = "x"\n', 'server.lisen: unknown key (did you mean "listen"?)'),
        (MINIMAL + "[storage]\nfsync = true\n", "storage.fsync: unknown key"),
        (MINIMAL + "[delivery]\nretries = 3\n", "delivery.retries: unknown key"),
        (
            MINIMAL + WEBHOOK + "secrett = 'x'\n",
            'webhooks[0].secrett: unknown key (did you mean "secret"?) (webhook "a")',
        ),
        (
            MINIMAL + WEBHOOK + "headers.'X A' = 'x'\n",
            'webhooks[0].headers."X A": is not a valid header name (webhook "a")',
        ),
        (
            MINIMAL + WEBHOOK + "[webhooks.auth]\ntype = 'bearer'\ntoken = 't'\nusername = 'u'\n",
            'webhooks[0].auth.username: unknown key for type "bearer" (webhook "a")',
        ),
        (
            MINIMAL + WEBHOOK + "[webhooks.auth]\ntype = 'basic'\nusername = 'u'\npassword = 'p'\ntoken = 't'\n",
            'webhooks[0].auth.token: unknown key for type "basic" (webhook "a")',
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


# --- wrong types and bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("storage = 1\n" + MINIMAL, "storage: must be a table"),
        (MINIMAL + "[webhooks]\nid = 'a'\n", "webhooks: must be an array of tables ([[webhooks]])"),
        ("webhooks = [1]\n" + MINIMAL, "webhooks[0]: must be a table"),
        ('[server]\napi_keys = ["k"]\nlisten = 8080\n', "server.listen: must be a string"),
        ('[server]\napi_keys = ["k"]\nmax_batch = "10"\n', "server.max_batch: must be an integer"),
        ('[server]\napi_keys = ["k"]\nmax_batch = 0\n', "server.max_batch: must be at least 1"),
        ("[server]\napi_keys = [1]\n", "server.api_keys[0]: must be a string"),
        (MINIMAL + "[delivery]\nallow_http = 'yes'\n", "delivery.allow_http: must be true or false"),
        (MINIMAL + "[delivery]\nconcurrency = 0\n", "delivery.concurrency: must be at least 1"),
        (MINIMAL + "[delivery]\nconcurrency = 1.5\n", "delivery.concurrency: must be an integer"),
        (MINIMAL + "[delivery]\nper_webhook_concurrency = 0\n", "delivery.per_webhook_concurrency: must be at least 1"),
        (MINIMAL + "[delivery]\njitter = 1\n", "delivery.jitter: must be at least 0 and less than 1"),
        (MINIMAL + "[delivery]\njitter = -0.1\n", "delivery.jitter: must be at least 0 and less than 1"),
        (MINIMAL + "[delivery]\njitter = '10%'\n", "delivery.jitter: must be a number"),
        (MINIMAL + "[delivery]\nretry_schedule = []\n", "delivery.retry_schedule: must not be empty"),
        (MINIMAL + "[delivery]\nretry_schedule = '1m'\n", "delivery.retry_schedule: must be a list"),
        (MINIMAL + "[delivery]\nuser_agent = ''\n", "delivery.user_agent: must not be empty"),
        (MINIMAL + "[delivery]\ntimeout = '0s'\n", "delivery.timeout: must be longer than zero"),
        (MINIMAL + "[storage]\ndurability = 'fast'\n", 'storage.durability: must be "full" or "normal"'),
        (MINIMAL + "[storage]\npath = ''\n", "storage.path: must not be empty"),
        (MINIMAL + WEBHOOK + "events = 'consent.created'\n", "webhooks[0].events: must be a list"),
        (MINIMAL + WEBHOOK + "is_active = 1\n", "webhooks[0].is_active: must be true or false"),
        (MINIMAL + WEBHOOK + "headers = 'X-A: b'\n", "webhooks[0].headers: must be a table"),
        (MINIMAL + WEBHOOK + "headers = { X-A = 1 }\n", "webhooks[0].headers.X-A: must be a string"),
        (MINIMAL + WEBHOOK + "auth = 'bearer'\n", "webhooks[0].auth: must be a table"),
        (MINIMAL + WEBHOOK + "description = 1\n", "webhooks[0].description: must be a string"),
        (
            MINIMAL + WEBHOOK + "format = 'xml'\n",
            'webhooks[0].format: must be "envelope", "data", "flat" or "data-flat"',
        ),
        (
            MINIMAL + WEBHOOK + "signature = 'ed25519'\n",
            'webhooks[0].signature: must be "standard", "standard-ed25519", "hmac-sha256" or "none"',
        ),
        (MINIMAL + WEBHOOK + "rate_limit = 'fast'\n", "webhooks[0].rate_limit"),
        (MINIMAL + WEBHOOK + "timeout = 0\n", "webhooks[0].timeout: must be longer than zero"),
    ],
)
def test_wrong_types_and_values(tmp_path: Path, text: str, expected: str) -> None:
    (found,) = problems(tmp_path, text)
    assert found.startswith(expected)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('[server]\napi_keys = ["k"]\nrequest_timeout = "30 parsecs"\n', "server.request_timeout"),
        ('[server]\napi_keys = ["k"]\nshutdown_timeout = -1\n', "server.shutdown_timeout"),
        ('[server]\napi_keys = ["k"]\nmax_body_size = "lots"\n', "server.max_body_size"),
        ('[server]\napi_keys = ["k"]\nmax_body_size = 0\n', "server.max_body_size"),
        ('[server]\napi_keys = ["k"]\nmax_body_size = "1 TB"\n', "server.max_body_size"),
        (MINIMAL + "[storage]\nretention = 'forever'\n", "storage.retention"),
        (MINIMAL + "[delivery]\nretry_schedule = ['0s', 'soon', '5m']\n", "delivery.retry_schedule[1]"),
        (MINIMAL + "[delivery]\nretry_schedule = ['0s', true]\n", "delivery.retry_schedule[1]"),
        (MINIMAL + "[delivery]\nredrive_interval = '1 hour'\n", "delivery.redrive_interval"),
        (MINIMAL + "[delivery]\nredrive_max_age = 0\n", "delivery.redrive_max_age"),
        (MINIMAL + WEBHOOK + "retry_schedule = ['1m', '1y']\n", "webhooks[0].retry_schedule[1]"),
        (MINIMAL + WEBHOOK + "retry_schedule = []\n", "webhooks[0].retry_schedule"),
        (MINIMAL + WEBHOOK + "timeout = '5 s econds'\n", "webhooks[0].timeout"),
    ],
)
def test_bad_durations_and_sizes(tmp_path: Path, text: str, path: str) -> None:
    assert problem_paths(tmp_path, text) == [path]


def test_retry_schedule_has_at_most_50_steps(tmp_path: Path) -> None:
    steps = ", ".join(['"1s"'] * 51)
    assert problems(tmp_path, MINIMAL + f"[delivery]\nretry_schedule = [{steps}]\n") == [
        "delivery.retry_schedule: must have at most 50 items"
    ]
    steps = ", ".join(['"1s"'] * 50)
    assert len(load(tmp_path, MINIMAL + f"[delivery]\nretry_schedule = [{steps}]\n").delivery.retry_schedule) == 50


def test_health_listen_must_differ_from_listen(tmp_path: Path) -> None:
    text = '[server]\napi_keys = ["k"]\nlisten = "127.0.0.1:8080"\nhealth_listen = "127.0.0.1:8080"\n'
    assert problem_paths(tmp_path, text) == ["server.health_listen"]


# --- webhooks ----------------------------------------------------------------------------------------------


def test_duplicate_webhook_ids(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK + WEBHOOK.replace('"a"', '"b"') + WEBHOOK
    assert problems(tmp_path, text) == ['webhooks[2].id: duplicate id "a" (also webhooks[0])']


@pytest.mark.parametrize("webhook_id", ["CRM", "crm.prod", "", "a" * 65, "crm hooks", "é"])
def test_bad_webhook_id(tmp_path: Path, webhook_id: str) -> None:
    text = MINIMAL + f'[[webhooks]]\nid = "{webhook_id}"\nurl = "https://a.example.com/"\n'
    assert problems(tmp_path, text) == ["webhooks[0].id: must be 1-64 characters of [a-z0-9_-]"]


def test_a_webhooks_problems_name_its_id_after_the_message(tmp_path: Path) -> None:
    oauth2 = '[webhooks.auth]\ntype = "oauth2"\nclient_id = "c"\nclient_secret = "s"\n'
    text = MINIMAL + WEBHOOK + '[[webhooks]]\nid = "crm"\nurl = "https://c.example.com/"\n' + oauth2
    assert problems(tmp_path, text) == ['webhooks[1].auth.token_url: required for type "oauth2" (webhook "crm")']
    for no_id in ("", 'id = "Not An Id"\n'):  # without a usable id, the key path alone (CONTRACT §2's example)
        text = MINIMAL + WEBHOOK + f'[[webhooks]]\n{no_id}url = "https://c.example.com/"\n' + oauth2
        found = problems(tmp_path, text)
        assert 'webhooks[1].auth.token_url: required for type "oauth2"' in found
        assert all("(webhook" not in problem for problem in found)


def test_webhook_id_and_url_are_required(tmp_path: Path) -> None:
    assert problems(tmp_path, MINIMAL + "[[webhooks]]\nevents = ['*']\n") == [
        "webhooks[0].id: required",
        "webhooks[0].url: required",
    ]


def test_http_url_without_allow_http(tmp_path: Path) -> None:
    text = MINIMAL + '[[webhooks]]\nid = "a"\nurl = "http://a.example.com/"\n'
    assert problems(tmp_path, text) == [
        'webhooks[0].url: http:// URLs are refused unless delivery.allow_http = true (webhook "a")'
    ]
    assert load(tmp_path, text + "[delivery]\nallow_http = true\n").webhooks[0].url == "http://a.example.com/"


def test_private_ip_literal_url(tmp_path: Path) -> None:
    text = MINIMAL + '[[webhooks]]\nid = "a"\nurl = "https://192.168.1.20/hook"\n'
    assert problems(tmp_path, text) == [
        "webhooks[0].url: destination 192.168.1.20 is in a refused range (private)"
        ' unless delivery.allow_private_networks = true (webhook "a")'
    ]
    assert load(tmp_path, text + "[delivery]\nallow_private_networks = true\n").webhooks


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/",
        "https://127.1/",
        "https://0x7f.0.0.1/",
        "https://0177.0.0.1/",
        "https://10.1.2/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::1]/",
        "https://169.254.169.254/",
        "https://100.64.0.1/",
    ],
)
def test_odd_ip_forms_in_urls(tmp_path: Path, url: str) -> None:
    text = MINIMAL + f'[[webhooks]]\nid = "a"\nurl = "{url}"\n'
    (found,) = problems(tmp_path, text)
    assert found.startswith("webhooks[0].url: destination ")
    assert "is in a refused range" in found


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://a.example.com/", "must be an https:// (or http://) URL"),
        ("https://u:p@a.example.com/", "must not contain credentials (user:password@); use auth instead"),
        ("https:///x", "has no host"),
    ],
)
def test_other_url_refusals(tmp_path: Path, url: str, message: str) -> None:
    assert problems(tmp_path, MINIMAL + f'[[webhooks]]\nid = "a"\nurl = "{url}"\n') == [
        f'webhooks[0].url: {message} (webhook "a")'
    ]


@pytest.mark.parametrize("pattern", ["consent.created", "consent.*", "*", "a:b-c_d.e", "x" * 128])
def test_good_event_patterns(tmp_path: Path, pattern: str) -> None:
    assert load(tmp_path, MINIMAL + WEBHOOK + f'events = ["{pattern}"]\n').webhooks[0].events == (pattern,)


@pytest.mark.parametrize("pattern", ["", "consent*", "*.created", "consent.**", "a b", "x" * 129, "consent/x"])
def test_bad_event_patterns(tmp_path: Path, pattern: str) -> None:
    assert problem_paths(tmp_path, MINIMAL + WEBHOOK + f'events = ["*", "{pattern}"]\n') == ["webhooks[0].events[1]"]


def test_signature_needs_a_secret(tmp_path: Path) -> None:
    assert problems(tmp_path, MINIMAL + WEBHOOK + 'signature = "standard"\n') == [
        'webhooks[0].signature: "standard" needs a secret (webhook "a")'
    ]
    assert problems(tmp_path, MINIMAL + WEBHOOK + 'signature = "hmac-sha256"\n') == [
        'webhooks[0].signature: "hmac-sha256" needs a secret (webhook "a")'
    ]


@pytest.mark.parametrize(
    ("field", "fmt"),
    [("sent at", "envelope"), ("a.b", "envelope"), ("id", "envelope"), ("data", "flat"), ("x" * 65, "data")],
)
def test_bad_sent_at_field(tmp_path: Path, field: str, fmt: str) -> None:
    text = MINIMAL + WEBHOOK + f'format = "{fmt}"\nsent_at_field = "{field}"\n'
    assert problem_paths(tmp_path, text) == ["webhooks[0].sent_at_field"]


@pytest.mark.parametrize("fmt", ["data", "data-flat"])
def test_sent_at_field_may_be_id_with_data_format(tmp_path: Path, fmt: str) -> None:
    assert load(tmp_path, MINIMAL + WEBHOOK + f'format = "{fmt}"\nsent_at_field = "id"\n').webhooks[0].sent_at_field


@pytest.mark.parametrize(
    "name",
    ["Content-Type", "content-length", "HOST", "User-Agent", "X-Event-ID", "x-event-type", "X-Delivery-Attempt",
     "webhook-id", "Webhook-Timestamp", "webhook-signature", "X-Signature", "X-Timestamp", "X-Webhook-ID",
     "Transfer-Encoding", "Connection", "Upgrade"],
)  # fmt: skip
def test_reserved_static_headers(tmp_path: Path, name: str) -> None:
    assert problem_paths(tmp_path, MINIMAL + WEBHOOK + f'headers = {{ "{name}" = "x" }}\n') == [
        f"webhooks[0].headers.{name}"
    ]


def test_authorization_header_is_refused_only_with_auth(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK + 'headers = { Authorization = "Token abc" }\n'
    assert load(tmp_path, text).webhooks[0].headers == {"Authorization": "Token abc"}
    assert problems(tmp_path, text + "[webhooks.auth]\ntype = 'bearer'\ntoken = 't'\n") == [
        'webhooks[0].headers.Authorization: "Authorization" is set by auth (webhook "a")'
    ]


def test_header_auth_name_is_refused_as_static_header(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK + 'headers = { x-api-key = "a" }\n[webhooks.auth]\ntype = "header"\n'
    text += 'name = "X-Api-Key"\nvalue = "v"\n'
    assert problem_paths(tmp_path, text) == ["webhooks[0].headers.x-api-key"]


def test_header_names_and_values_with_cr_lf(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK + 'headers = { "X-A\\r\\nX-B" = "1", X-C = "2\\r\\nX-D: 3" }\n'
    assert problems(tmp_path, text) == [
        'webhooks[0].headers."X-A\\r\\nX-B": is not a valid header name (webhook "a")',
        'webhooks[0].headers.X-C: must not contain CR, LF or other control characters (webhook "a")',
    ]


# --- auth --------------------------------------------------------------------------------------------------


def auth_problems(tmp_path: Path, auth: str, environ: Mapping[str, str] | None = None) -> list[str]:
    return problems(tmp_path, MINIMAL + WEBHOOK + "[webhooks.auth]\n" + textwrap.dedent(auth), environ)


def test_oauth2_without_token_url(tmp_path: Path) -> None:
    auth = 'type = "oauth2"\nclient_id = "relay"\nclient_secret = "s"\n'
    assert auth_problems(tmp_path, auth) == ['webhooks[0].auth.token_url: required for type "oauth2" (webhook "a")']


def test_oauth2_token_url_follows_the_url_policy(tmp_path: Path) -> None:
    auth = 'type = "oauth2"\ntoken_url = "http://10.0.0.1/token"\nclient_id = "relay"\nclient_secret = "s"\n'
    assert auth_problems(tmp_path, auth) == [
        'webhooks[0].auth.token_url: http:// URLs are refused unless delivery.allow_http = true (webhook "a")'
    ]


def test_refresh_token_grant_needs_a_refresh_token(tmp_path: Path) -> None:
    auth = 'type = "oauth2"\ngrant = "refresh_token"\ntoken_url = "https://a.example.com/t"\nclient_id = "c"\n'
    assert auth_problems(tmp_path, auth) == [
        'webhooks[0].auth.refresh_token: required for grant "refresh_token" (webhook "a")'
    ]


def test_client_credentials_needs_a_client_secret_and_no_refresh_token(tmp_path: Path) -> None:
    auth = 'type = "oauth2"\ntoken_url = "https://a.example.com/t"\nclient_id = "c"\nrefresh_token = "r"\n'
    assert auth_problems(tmp_path, auth) == [
        'webhooks[0].auth.client_secret: required for grant "client_credentials" (webhook "a")',
        'webhooks[0].auth.refresh_token: only used with grant "refresh_token" (webhook "a")',
    ]


def test_oauth2_bad_choices_and_extra_params(tmp_path: Path) -> None:
    auth = """\
        type = "oauth2"
        grant = "password"
        token_url = "https://a.example.com/t"
        client_id = ""
        client_auth = "jwt"
        extra_params = { grant_type = "x", resource = 1 }
        """
    assert auth_problems(tmp_path, auth) == [
        'webhooks[0].auth.grant: must be "client_credentials" or "refresh_token" (webhook "a")',
        'webhooks[0].auth.client_id: must not be empty (webhook "a")',
        'webhooks[0].auth.extra_params.grant_type: "grant_type" is set by the relay (use the key of the same name)'
        ' (webhook "a")',
        'webhooks[0].auth.extra_params.resource: must be a string (webhook "a")',
        'webhooks[0].auth.client_auth: must be "basic" or "post" (webhook "a")',
    ]


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ("token = 't'\n", 'webhooks[0].auth.type: required: "bearer", "header", "basic" or "oauth2"'),
        ("type = 'digest'\n", 'webhooks[0].auth.type: must be "bearer", "header", "basic" or "oauth2"'),
        ("type = 'bearer'\n", 'webhooks[0].auth.token: required for type "bearer"'),
        ("type = 'header'\nvalue = 'v'\n", 'webhooks[0].auth.name: required for type "header"'),
        ("type = 'basic'\nusername = 'u'\n", 'webhooks[0].auth.password: required for type "basic"'),
        ("type = 'basic'\nusername = 'a:b'\npassword = 'p'\n", "webhooks[0].auth.username: must not contain a colon"),
    ],
)
def test_auth_problems(tmp_path: Path, auth: str, expected: str) -> None:
    (found,) = auth_problems(tmp_path, auth)
    assert found.startswith(expected)


@pytest.mark.parametrize(
    "name", ["Content-Type", "X-Event-ID", "webhook-signature", "Host", "Connection", "X-Signature", "X A", "X\r\nY"]
)
def test_header_auth_refuses_reserved_names(tmp_path: Path, name: str) -> None:
    name_toml = name.replace("\r\n", "\\r\\n")
    assert [
        p.split(":")[0] for p in auth_problems(tmp_path, f'type = "header"\nname = "{name_toml}"\nvalue = "v"\n')
    ] == ["webhooks[0].auth.name"]


def test_header_auth_may_use_authorization(tmp_path: Path) -> None:
    config = load(
        tmp_path, MINIMAL + WEBHOOK + '[webhooks.auth]\ntype = "header"\nname = "Authorization"\nvalue = "Token t"\n'
    )
    assert config.webhooks[0].auth == HeaderAuth("Authorization", Secret("Token t"))


# --- secret references -------------------------------------------------------------------------------------


def secret_problems(tmp_path: Path, ref: str, environ: Mapping[str, str], signature: str = "standard") -> list[str]:
    return problems(tmp_path, MINIMAL + WEBHOOK + f'secret = "{ref}"\nsignature = "{signature}"\n', environ)


def load_secret(tmp_path: Path, ref: str, environ: Mapping[str, str], signature: str = "standard") -> Secret | None:
    text = MINIMAL + WEBHOOK + f'secret = "{ref}"\nsignature = "{signature}"\n'
    return load(tmp_path, text, environ).webhooks[0].secret


def test_env_secret(tmp_path: Path) -> None:
    assert load_secret(tmp_path, "env:HOOK_SECRET", {"HOOK_SECRET": HOOK_SECRET}) == Secret(HOOK_SECRET)


def test_unset_env_secret(tmp_path: Path) -> None:
    assert secret_problems(tmp_path, "env:HOOK_SECRET", {}) == [
        'webhooks[0].secret: environment variable HOOK_SECRET is not set (webhook "a")'
    ]
    assert secret_problems(tmp_path, "env:HOOK_SECRET", {"HOOK_SECRET": ""}) == [
        'webhooks[0].secret: environment variable HOOK_SECRET is empty (webhook "a")'
    ]


def test_file_secret_reads_the_first_line(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(f"{HOOK_SECRET}\nsecond\n")
    assert load_secret(tmp_path, f"file:{tmp_path}/secret", {}) == Secret(HOOK_SECRET)


def test_missing_file_secret(tmp_path: Path) -> None:
    (found,) = secret_problems(tmp_path, f"file:{tmp_path}/nope", {})
    assert found == f'webhooks[0].secret: cannot read {tmp_path}/nope: No such file or directory (webhook "a")'


def test_empty_file_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\nsecond\n")
    assert secret_problems(tmp_path, f"file:{tmp_path}/secret", {}) == [
        f'webhooks[0].secret: the first line of {tmp_path}/secret is empty (webhook "a")'
    ]


def test_cred_secret_reads_from_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "hook-secret").write_text(f"{HOOK_SECRET}\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_secret(tmp_path, "cred:hook-secret", environ) == Secret(HOOK_SECRET)


def test_cred_secret_without_credentials_directory(tmp_path: Path) -> None:
    assert secret_problems(tmp_path, "cred:hook-secret", {}) == [
        "webhooks[0].secret: cred:hook-secret needs $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=)"
        ' (webhook "a")'
    ]


def test_cred_secret_missing_from_credentials_directory(tmp_path: Path) -> None:
    (found,) = secret_problems(tmp_path, "cred:nope", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert found.startswith(f"webhooks[0].secret: cannot read {tmp_path}/nope")


def test_cred_secret_cannot_leave_the_directory(tmp_path: Path) -> None:
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert secret_problems(tmp_path, "cred:../etc/passwd", environ) == [
        'webhooks[0].secret: cred:../etc/passwd must name a file in $CREDENTIALS_DIRECTORY (webhook "a")'
    ]


def test_secret_references_in_auth_name_their_key(tmp_path: Path) -> None:
    auth = 'type = "oauth2"\ntoken_url = "https://a.example.com/t"\nclient_id = "c"\nclient_secret = "env:CS"\n'
    assert auth_problems(tmp_path, auth) == [
        'webhooks[0].auth.client_secret: environment variable CS is not set (webhook "a")'
    ]


def test_secret_that_merely_contains_a_colon_is_literal(tmp_path: Path) -> None:
    assert load_secret(tmp_path, "abc:def-ghi-jkl-mno", {}, "hmac-sha256") == Secret("abc:def-ghi-jkl-mno")


@pytest.mark.parametrize(
    ("secret", "signature", "reason"),
    [
        ("whsec_AA==", "standard", "decodes to 1 byte"),
        ("s", "standard", "not base64"),
        ("my-hand-chosen-webhook-secret", "standard", "not base64"),
        ("fifteen-chars!!", "hmac-sha256", "at least 16 characters"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "standard-ed25519", 'does not start with "whsk_"'),
        ("whsk_" + "A" * 44, "standard-ed25519", "decodes to 33 bytes"),
        ("whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4=", "standard-ed25519", "public key"),
        (ED25519_KEY, "standard", 'signature "standard-ed25519"'),  # a whsk_ key with the HMAC scheme
    ],
)
def test_a_secret_that_breaks_the_rules_of_its_scheme_names_its_key(
    tmp_path: Path, secret: str, signature: str, reason: str
) -> None:
    (found,) = secret_problems(tmp_path, "env:HOOK_SECRET", {"HOOK_SECRET": secret}, signature)
    assert found.startswith("webhooks[0].secret: must be") and reason in found


def test_an_ed25519_webhook_takes_a_whsk_key(tmp_path: Path) -> None:
    config = load(
        tmp_path, MINIMAL + WEBHOOK + 'secret = "env:KEY"\nsignature = "standard-ed25519"\n', {"KEY": ED25519_KEY}
    )
    assert config.webhooks[0].signature is SignatureScheme.STANDARD_ED25519
    assert config.webhooks[0].secret == Secret(ED25519_KEY)
    assert problems(tmp_path, MINIMAL + WEBHOOK + 'signature = "standard-ed25519"\n') == [
        'webhooks[0].signature: "standard-ed25519" needs a secret (webhook "a")'
    ]


def test_the_secret_rules_follow_the_default_scheme_and_skip_unsigned_webhooks(tmp_path: Path) -> None:
    assert problem_paths(tmp_path, MINIMAL + WEBHOOK + 'secret = "whsec_AA=="\n') == ["webhooks[0].secret"]
    assert load_secret(tmp_path, "whsec_AA==", {}, "none") == Secret("whsec_AA==")  # signs nothing, refused nothing


# --- many problems at once ---------------------------------------------------------------------------------


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    text = """
        [server]
        lisen = "127.0.0.1:8080"
        api_keys = ["env:RELAY_API_KEY"]
        max_batch = 0

        [delivery]
        retry_schedule = ["0s", "soon"]

        [[webhooks]]
        id = "crm"
        url = "http://crm.example.com/"

        [[webhooks]]
        id = "crm"
        url = "https://127.0.0.1/"
        [webhooks.auth]
        type = "oauth2"
        client_id = "relay"
        client_secret = "s"
        """
    assert problem_paths(tmp_path, text) == [
        "server.lisen",
        "server.api_keys[0]",
        "server.max_batch",
        "delivery.retry_schedule[1]",
        "webhooks[0].url",
        "webhooks[1].url",
        "webhooks[1].auth.token_url",
        "webhooks[1].id",
    ]
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert str(caught.value).count("; ") == 7


# --- parse_webhook for API bodies --------------------------------------------------------------------------


def api_webhook(body: dict[str, object]) -> tuple[Webhook | None, list[Problem]]:
    found: list[Problem] = []
    webhook = parse_webhook(
        body, "", found, delivery=DeliveryConfig(), resolve_secrets=False, source="api", require_id=False
    )
    return webhook, found


def test_api_body_takes_secrets_literally_and_generates_an_id() -> None:
    body: dict[str, object] = {
        "url": "https://a.example.com/",
        "secret": "env:RELAY_API_KEY",
        "signature": "hmac-sha256",
        "retry_schedule": [0, 30, "5m"],
        "timeout": 2.5,
        "auth": {"type": "bearer", "token": "file:/etc/passwd"},
    }
    webhook, found = api_webhook(body)
    assert found == []
    assert webhook is not None
    assert webhook.id.startswith("whk_")
    assert webhook.secret == Secret("env:RELAY_API_KEY")
    assert webhook.auth == BearerAuth(Secret("file:/etc/passwd"))
    assert webhook.retry_schedule == (0.0, 30.0, 300.0)
    assert webhook.timeout == 2.5
    assert webhook.source == "api"
    assert webhook.signature is SignatureScheme.HMAC_SHA256


def test_api_body_problems_have_unprefixed_paths() -> None:
    body: dict[str, object] = {
        "url": "http://a.example.com/",
        "events": ["ok", 3],
        "auth": {"type": "oauth2", "client_id": "c", "client_secret": "s"},
        "headers": ["X-A"],
        "colour": "red",
    }
    webhook, found = api_webhook(body)
    assert webhook is None
    assert [str(p) for p in found] == [
        "colour: unknown key",
        "url: http:// URLs are refused unless delivery.allow_http = true",
        "events[1]: must be a string",
        'auth.token_url: required for type "oauth2"',
        "headers: must be an object",
    ]


def test_api_body_may_be_null_for_optional_fields() -> None:
    webhook, found = api_webhook({"url": "https://a.example.com/", "secret": None, "auth": None, "events": None})
    assert found == [] and webhook is not None


def test_api_body_that_is_not_an_object() -> None:
    found: list[Problem] = []
    webhook = parse_webhook(
        ["x"],  # type: ignore[arg-type]
        "",
        found,
        delivery=DeliveryConfig(),
        resolve_secrets=False,
        source="api",
        require_id=False,
    )
    assert webhook is None and [str(p) for p in found] == ["must be an object"]


def test_event_loop_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(tmp_path, MINIMAL).server.event_loop == "auto"
    assert load(tmp_path, MINIMAL + 'event_loop = "asyncio"\n').server.event_loop == "asyncio"
    assert event_loop_factory("asyncio") is None
    assert problems(tmp_path, MINIMAL + 'event_loop = "trio"\n') == [
        'server.event_loop: must be "auto", "asyncio" or "uvloop"'
    ]
    monkeypatch.setattr("relay.config.uvloop_installed", lambda: False)
    assert event_loop_factory("auto") is None  # without uvloop, auto is asyncio's own loop
    [problem] = problems(tmp_path, MINIMAL + 'event_loop = "uvloop"\n')
    assert problem.startswith("server.event_loop: uvloop is not installed (pip install 'relay-webhooks[uvloop]')")


def test_auto_picks_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    factory = event_loop_factory("auto")
    assert factory is not None and type(factory()).__module__.startswith("uvloop")
