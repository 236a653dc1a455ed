"""``relay init``'s starter configuration and the files the package carries (``relay.resources``): every starter
loads with no environment at all, and the development one lines up with ``relay receive``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay import resources
from relay.config import load_config
from relay.models import SignatureScheme
from relay.signing import new_secret, secret_problem
from relay.starter import DEV_RECEIVER_PORT, PLACEHOLDER, starter_config
from tests.support.profiles import PLATFORMS, PROFILE_DIR

REPO = Path(__file__).resolve().parents[2]
API_KEY = "starter-api-key-0123456789"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # storage.path is relative to the working directory


def test_the_package_carries_the_repositorys_files() -> None:
    assert [p.name for p in resources.profiles()] == sorted(PLATFORMS)
    for profile in resources.profiles():
        assert profile.text == (PROFILE_DIR / f"{profile.name}.toml").read_text()
    assert resources.example_config() == (REPO / "relay.toml.example").read_text()
    assert resources.systemd_unit() == (REPO / "systemd" / "relay.service").read_text()
    assert Path(resources.example_config_location()).read_text() == resources.example_config()


def test_each_profile_has_a_one_line_summary_and_names_its_guide() -> None:
    for profile in resources.profiles():
        platform = {"consentproof": "ConsentProof", "dataguard": "DataGuard", "didomi": "Didomi"}.get(
            profile.name, "ExpressConsent"
        )
        assert profile.summary.startswith(f"Deliver like {platform}: ")
        assert "\n" not in profile.summary and len(profile.summary) <= 116
        assert f"{platform}'s webhooks guide" in profile.text
        assert "seed" not in profile.text  # the guide, not the file it was saved in


def test_an_unknown_profile_names_the_ones_there_are() -> None:
    with pytest.raises(LookupError) as caught:
        resources.profile("svix")
    assert str(caught.value.args[0]) == "no profile 'svix' (there are: consentproof, dataguard, didomi, expressconsent)"


def test_the_development_starter_loads_with_no_environment_and_matches_relay_receive(tmp_path: Path) -> None:
    secret = new_secret()
    starter = starter_config(None, api_key=API_KEY, secret=secret)
    path = tmp_path / "relay.toml"
    path.write_text(starter.text)
    config = load_config(path, environ={})
    assert [key.reveal() for key in config.server.api_keys] == [API_KEY]
    assert config.storage.path == tmp_path / "var" / "relay.db"
    [webhook] = config.webhooks
    assert webhook.url == f"http://127.0.0.1:{DEV_RECEIVER_PORT}/webhook" and webhook.events == ("*",)
    assert webhook.signature is SignatureScheme.STANDARD and webhook.secret is not None
    assert webhook.secret.reveal() == starter.secret == secret
    steps = starter.next_steps("relay.toml")
    assert f"relay receive --port {DEV_RECEIVER_PORT} --secret {secret}" in steps
    assert f"Bearer {API_KEY}" in steps and "relay serve --config relay.toml" in steps


@pytest.mark.parametrize("name", PLATFORMS)
def test_each_profile_starter_loads_with_no_environment(tmp_path: Path, name: str) -> None:
    secret = new_secret()
    starter = starter_config(resources.profile(name), api_key=API_KEY, secret=secret)
    path = tmp_path / "relay.toml"
    path.write_text(starter.text)
    [webhook] = load_config(path, environ={}).webhooks
    assert webhook.id == name
    active = [line for line in starter.text.splitlines() if not line.lstrip().startswith("#")]
    assert not any('"env:' in line.split("#")[0] for line in active)
    if webhook.secret is not None:  # the profile signs: with the new secret, which its scheme accepts
        assert webhook.secret.reveal() == starter.secret == secret
        assert secret_problem(secret, webhook.signature) is None
    else:
        assert starter.secret is None and secret not in starter.text
    placeholders = re.findall(rf'^([a-z_]+) = "{PLACEHOLDER}"', starter.text, re.MULTILINE)
    assert tuple(placeholders) == starter.placeholders
    expected = {"didomi": ("client_secret",), "dataguard": ("client_secret", "refresh_token")}.get(name, ())
    assert starter.placeholders == expected
    assert resources.profile(name).text.splitlines()[0] in starter.text  # the profile, comments and all
