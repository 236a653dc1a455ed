"""API webhook specs (create, merge patch, rotation, rebuild), their views, and where the CLI finds the daemon:
pure functions, no I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from relay.client import url_for
from relay.config import DeliveryConfig, Listen
from relay.errors import ValidationError
from relay.models import BasicAuth, OAuth2Auth, Secret, SignatureScheme, Webhook
from relay.signing import new_secret, public_key
from relay.store import StoredWebhook
from relay.views import auth_view, format_rate, webhook_view
from relay.webhook_specs import (
    Rotation,
    create_spec,
    merge_patch,
    parse_rotation,
    patch_spec,
    rebuild,
    rotation_scheme,
    rotation_secret,
    warn_weak_secrets,
)

STRICT = DeliveryConfig()  # https only, public destinations only
ED25519 = SignatureScheme.STANDARD_ED25519
# The Standard Webhooks spec's v1a example key pair (Svix's tests).
ED25519_KEY = "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
ED25519_PUBLIC_KEY = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="


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
    stored = {"url": "http://127.0.0.1/h", "secret": "s"}  # stored under a laxer policy, and before the secret rules
    webhook, spec = patch_spec(stored, {"description": "d"}, STRICT)
    assert spec == {**stored, "description": "d"} and webhook.secret == Secret("s")
    with pytest.raises(ValidationError) as caught:
        patch_spec(stored, {"url": "http://127.0.0.2/h", "secret": "new", "id": "x"}, STRICT)
    assert paths(caught) == ["id", "secret", "url"]


def test_rotation_bounds() -> None:
    assert parse_rotation({}) == Rotation(None, 86400)
    assert parse_rotation({"overlap": 0, "secret": "mine"}) == Rotation("mine", 0)
    assert parse_rotation({"signature": "standard-ed25519"}) == Rotation(None, 86400, ED25519)
    with pytest.raises(ValidationError) as caught:
        parse_rotation({"overlap": "31d", "secret": "", "extra": 1, "signature": "rsa"})
    assert paths(caught) == ["extra", "overlap", "secret", "signature"]


def test_a_rotation_moves_a_webhook_only_between_the_standard_webhooks_schemes() -> None:
    standard, hmac_sha256, none = SignatureScheme.STANDARD, SignatureScheme.HMAC_SHA256, SignatureScheme.NONE
    assert rotation_scheme(standard, None) is standard and rotation_scheme(hmac_sha256, hmac_sha256) is hmac_sha256
    assert rotation_scheme(standard, ED25519) is ED25519 and rotation_scheme(ED25519, standard) is standard
    for current, asked in [(standard, hmac_sha256), (hmac_sha256, ED25519), (none, ED25519), (ED25519, none)]:
        with pytest.raises(ValidationError) as caught:
            rotation_scheme(current, asked)
        assert paths(caught) == ["signature"]


def test_rotation_generates_a_secret_or_holds_the_given_one_to_the_webhooks_scheme() -> None:
    assert rotation_secret(None, SignatureScheme.STANDARD).startswith("whsec_")
    assert rotation_secret(None, ED25519).startswith("whsk_")
    assert rotation_secret(ED25519_KEY, ED25519) == ED25519_KEY
    with pytest.raises(ValidationError) as caught:
        rotation_secret("whsec_" + "A" * 32, ED25519)
    assert paths(caught) == ["secret"]
    assert rotation_secret("my-own-hmac-secret", SignatureScheme.HMAC_SHA256) == "my-own-hmac-secret"
    for given, scheme in [("mine", SignatureScheme.HMAC_SHA256), ("my-own-hmac-secret", SignatureScheme.STANDARD)]:
        with pytest.raises(ValidationError) as caught:
            rotation_secret(given, scheme)
        assert paths(caught) == ["secret"] and given not in str(caught.value)


def test_an_ed25519_webhook_is_created_with_a_generated_whsk_key_or_a_given_one() -> None:
    webhook, spec = create_spec({"url": "https://example.com/h", "signature": "standard-ed25519"}, STRICT)
    assert webhook.signature is ED25519 and spec["secret"].startswith("whsk_")
    webhook, spec = create_spec({"url": "https://example.com/h", "signature": ED25519, "secret": ED25519_KEY}, STRICT)
    assert webhook.secret == Secret(ED25519_KEY)
    for secret in ["whsec_" + "A" * 32, ED25519_PUBLIC_KEY, "whsk_" + "A" * 40]:
        with pytest.raises(ValidationError) as caught:
            create_spec({"url": "https://example.com/h", "signature": "standard-ed25519", "secret": secret}, STRICT)
        assert paths(caught) == ["secret"] and secret not in str(caught.value)


def test_create_holds_a_given_secret_to_the_rules_of_its_scheme() -> None:
    for body in [
        {"url": "https://example.com/h", "secret": "whsec_AA=="},  # one zero byte: anyone could sign
        {"url": "https://example.com/h", "secret": "not base64 at all!"},  # the libraries would decode it otherwise
        {"url": "https://example.com/h", "secret": "short-secret", "signature": "hmac-sha256"},
    ]:
        with pytest.raises(ValidationError) as caught:
            create_spec(body, STRICT)
        assert paths(caught) == ["secret"] and str(body["secret"]) not in str(caught.value)
    good = "whsec_" + "A" * 32  # 24 bytes
    assert create_spec({"url": "https://example.com/h", "secret": good}, STRICT)[0].secret == Secret(good)


def test_patch_that_changes_the_scheme_holds_the_stored_secret_to_the_new_rules() -> None:
    stored = {"url": "https://example.com/h", "secret": "a-hand-chosen-hmac-secret", "signature": "hmac-sha256"}
    with pytest.raises(ValidationError) as caught:
        patch_spec(stored, {"signature": "standard"}, STRICT)
    assert paths(caught) == ["secret"]
    webhook, _ = patch_spec(stored, {"signature": "none"}, STRICT)
    assert webhook.signature is SignatureScheme.NONE
    legacy = {"url": "https://example.com/h", "secret": "whsec_AA=="}  # stored before the rules
    for restated in ({"signature": "standard"}, {"description": "d"}):  # the scheme does not change: no new rule
        webhook, _ = patch_spec(legacy, restated, STRICT)
        assert webhook.secret == Secret("whsec_AA==")


def test_weak_secrets_that_still_sign_are_reported_by_webhook_id_only() -> None:
    weak, strong = "whsec_AA==", "whsec_" + "A" * 32

    def stored(webhook_id: str, secret: str, **rotation: Any) -> Webhook:
        scheme = SignatureScheme.HMAC_SHA256 if webhook_id.endswith("hmac") else SignatureScheme.STANDARD
        return Webhook(webhook_id, "https://example.com/h", secret=Secret(secret), signature=scheme, **rotation)

    webhooks = [
        stored("whk_weak", weak),
        stored("whk_ok", strong),
        stored("whk_rotating", strong, previous_secret=Secret("tiny"), previous_secret_until=100.0),
        stored("whk_rotated", strong, previous_secret=Secret("tiny"), previous_secret_until=10.0),  # signs no more
        stored("whk_hmac", "tiny"),
        stored("whk_ok_hmac", "sixteen-chars-ok"),
    ]
    with capture_logs() as logs:
        warn_weak_secrets(webhooks, now=50.0)
    assert [(e["event"], e["log_level"], e["webhook_id"], e["field"]) for e in logs] == [
        ("weak_secret", "warning", "whk_weak", "secret"),
        ("weak_secret", "warning", "whk_rotating", "previous_secret"),
        ("weak_secret", "warning", "whk_hmac", "secret"),
    ]
    assert "decodes to 1 byte" in logs[0]["problem"]
    assert not any(secret in str(entry) for entry in logs for secret in (weak, "tiny", weak.removeprefix("whsec_")))


def test_a_previous_secret_of_the_other_standard_scheme_is_held_to_its_own_rules() -> None:
    """After a rotation from ``standard`` to ``standard-ed25519`` the previous ``whsec_`` secret is no weak ed25519
    key, and the other way round; a weak one is still reported, under the scheme it signs with."""
    whsec, whsk = "whsec_" + "A" * 32, new_secret(ED25519)

    def rotated(webhook_id: str, secret: str, scheme: SignatureScheme, previous: str) -> Webhook:
        return Webhook(
            webhook_id,
            "https://example.com/h",
            secret=Secret(secret),
            signature=scheme,
            previous_secret=Secret(previous),
            previous_secret_until=100.0,
        )

    webhooks = [
        rotated("whk_to_ed25519", whsk, ED25519, whsec),
        rotated("whk_back_to_v1", whsec, SignatureScheme.STANDARD, whsk),
        rotated("whk_weak_v1", whsk, ED25519, "whsec_AA=="),
    ]
    with capture_logs() as logs:
        warn_weak_secrets(webhooks, now=50.0)
    assert [(e["webhook_id"], e["field"], e["signature"]) for e in logs] == [
        ("whk_weak_v1", "previous_secret", "standard")
    ]


def test_rebuild_restores_the_rotation_state_and_skips_what_no_longer_parses() -> None:
    spec = orjson.dumps({"url": "http://127.0.0.1/h", "secret": "new", "is_active": False})  # before the rules
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


def test_an_ed25519_webhook_shows_its_public_key_and_never_its_signing_key() -> None:
    webhook = Webhook("w", "https://example.com/h", secret=Secret(ED25519_KEY), signature=ED25519)
    view = webhook_view(webhook)
    assert view["public_key"] == ED25519_PUBLIC_KEY == public_key(ED25519_KEY)
    assert "secret" not in view and ED25519_KEY.removeprefix("whsk_")[:43] not in str(view)
    assert webhook_view(webhook, secret=True)["secret"] == ED25519_KEY  # once, at creation and rotation
    hmac_webhook = Webhook(
        "h", "https://example.com/h", secret=Secret("whsec_" + "A" * 32), signature=SignatureScheme.STANDARD
    )
    assert "public_key" not in webhook_view(hmac_webhook)


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
