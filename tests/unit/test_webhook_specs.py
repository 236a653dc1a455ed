"""API webhook specs (create, merge patch, rotation, rebuild), their views, and where the CLI finds the daemon:
pure functions, no I/O."""

from __future__ import annotations

import orjson
import pytest

from relay.client import url_for
from relay.config import DeliveryConfig, Listen
from relay.errors import ValidationError
from relay.models import BasicAuth, OAuth2Auth, Secret, Webhook
from relay.store_reads import StoredWebhook
from relay.views import auth_view, format_rate, webhook_view
from relay.webhook_specs import create_spec, merge_patch, parse_rotation, patch_spec, rebuild

STRICT = DeliveryConfig()  # https only, public destinations only


def paths(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return sorted(p.path for p in exc.value.problems)


def test_create_generates_an_id_and_a_secret_and_keeps_the_body() -> None:
    webhook, spec = create_spec({"url": "https://example.com/h", "events": ["a.*"], "description": None}, STRICT)
    assert webhook.id.startswith("whk_") and webhook.source == "api" and webhook.is_active
    assert spec["secret"].startswith("whsec_") and webhook.secret == Secret(spec["secret"])
    assert "description" not in spec and webhook.signature == "standard"


def test_create_refuses_what_the_policy_refuses_and_unbounded_values() -> None:
    with pytest.raises(ValidationError) as caught:
        create_spec(
            {"id": "x", "url": "http://10.0.0.1/h", "timeout": "2h", "retry_schedule": [1, "31d"], "rate_limit": "1/d"},
            STRICT,
        )
    assert paths(caught) == ["id", "rate_limit", "retry_schedule[1]", "timeout", "url"]
    with pytest.raises(ValidationError) as caught:
        create_spec(["not", "an", "object"], STRICT)
    assert paths(caught) == [""]


def test_merge_patch_follows_rfc_7396() -> None:
    target = {"a": 1, "h": {"x": "1", "y": "2"}, "l": [1, 2]}
    assert merge_patch(target, {"a": None, "h": {"x": None, "z": "3"}, "l": [3]}) == {
        "h": {"y": "2", "z": "3"},
        "l": [3],
    }
    assert target == {"a": 1, "h": {"x": "1", "y": "2"}, "l": [1, 2]}  # not changed in place


def test_patch_keeps_the_secret_and_checks_the_policy_only_for_what_changes() -> None:
    stored = {"url": "http://127.0.0.1/h", "secret": "s"}  # stored under a laxer policy than STRICT
    webhook, spec = patch_spec(stored, {"description": "d"}, STRICT)
    assert spec == {**stored, "description": "d"} and webhook.secret == Secret("s")
    with pytest.raises(ValidationError) as caught:
        patch_spec(stored, {"url": "http://127.0.0.2/h", "secret": "new", "id": "x"}, STRICT)
    assert paths(caught) == ["id", "secret", "url"]


def test_rotation_bounds() -> None:
    secret, overlap = parse_rotation({})
    assert secret.startswith("whsec_") and overlap == 86400
    assert parse_rotation({"overlap": 0, "secret": "mine"}) == ("mine", 0)
    with pytest.raises(ValidationError) as caught:
        parse_rotation({"overlap": "31d", "secret": "", "extra": 1})
    assert paths(caught) == ["extra", "overlap", "secret"]


def test_rebuild_restores_the_rotation_state_and_skips_what_no_longer_parses() -> None:
    spec = orjson.dumps({"url": "http://127.0.0.1/h", "secret": "new", "is_active": False})
    webhook = rebuild(StoredWebhook("whk_1", spec, 10.0, 20.0, "old", 99.0))
    assert webhook is not None and webhook.id == "whk_1" and not webhook.is_active and webhook.created_at == 10.0
    assert [s.reveal() for s in webhook.signing_secrets(98.0)] == ["new", "old"]
    assert [s.reveal() for s in webhook.signing_secrets(99.0)] == ["new"]
    assert rebuild(StoredWebhook("whk_2", b"{not json", 1.0, 1.0, None, None)) is None
    assert rebuild(StoredWebhook("whk_3", b'{"url": 5}', 1.0, 1.0, None, None)) is None


def test_views_hide_every_credential() -> None:
    webhook = Webhook(
        id="w",
        url="https://user:pw@example.com/h?x=1",
        secret=Secret("whsec_x"),
        headers={"X-Tenant": "acme", "Authorization-Extra": "t", "X-Session-Id": "s"},
        auth=BasicAuth("relay", Secret("pw")),
        previous_secret=Secret("old"),
        previous_secret_until=0.0,
    )
    view = webhook_view(webhook)
    assert view["url"] == "https://user:***@example.com/h?x=1"
    assert view["headers"] == {"X-Tenant": "acme", "Authorization-Extra": "***", "X-Session-Id": "***"}
    assert view["auth"] == {"type": "basic", "username": "relay"} and "secret" not in view
    assert "whsec_x" not in str(view) and "old" not in str(view)
    assert webhook_view(webhook, secret=True)["secret"] == "whsec_x"
    oauth = OAuth2Auth("client_credentials", "https://a.example/t", "id", client_secret=Secret("cs"))
    assert "cs" not in str(auth_view(oauth).values())


@pytest.mark.parametrize(
    ("rate", "shown"), [(50.0, "50/s"), (0.5, "30/m"), (1 / 3600, "1/h"), (2.5, "150/m"), (1e-5, "0.036/h")]
)
def test_rates_are_shown_in_whole_units_when_possible(rate: float, shown: str) -> None:
    assert format_rate(rate) == shown


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        (Listen("127.0.0.1", 8080), "http://127.0.0.1:8080"),
        (Listen("0.0.0.0", 80), "http://127.0.0.1:80"),
        (Listen("::", 8080), "http://[::1]:8080"),
        (Listen("::1", 8080), "http://[::1]:8080"),
        (Listen(path="/run/relay/relay.sock"), "unix:/run/relay/relay.sock"),
    ],
)
def test_the_cli_reaches_the_listen_address(listen: Listen, url: str) -> None:
    assert url_for(listen) == url
