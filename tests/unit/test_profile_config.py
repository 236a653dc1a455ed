"""config/profiles/*.toml: each loads when pasted after a minimal config, so does each commented alternative, and
the retry claims in their comments hold for the schedules they declare."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from relay.config import Config, load_config
from relay.errors import ConfigError
from relay.models import BodyFormat, DeliveryStatus, OAuth2Auth, SignatureScheme
from relay.retry import Outcome, RetryPolicy, decide
from tests.support.profiles import (
    PLATFORMS,
    PROFILE_ENV,
    commented_lines,
    commented_tables,
    delivery_hints,
    read_profile,
    replace_auth,
    uncomment_line,
)

MINIMAL = '[server]\napi_keys = ["dev-key"]\n'
MIN, HOUR = 60.0, 3600.0


def paste(tmp_path: Path, platform: str, environ: dict[str, str] = PROFILE_ENV) -> Config:
    """The profile appended to a minimal valid config, as a user pastes it, loaded with a fake environment."""
    path = tmp_path / "relay.toml"
    path.write_text(MINIMAL + "\n" + read_profile(platform))
    return load_config(path, environ=environ)


def test_expressconsent_profile_loads(tmp_path: Path) -> None:
    [hook] = paste(tmp_path, "expressconsent").webhooks
    assert (hook.id, hook.format, hook.signature, hook.events) == (
        "expressconsent",
        BodyFormat.DATA,
        SignatureScheme.HMAC_SHA256,
        ("snapshot.created",),
    )
    assert hook.secret is not None and hook.secret.reveal() == PROFILE_ENV["EXPRESSCONSENT_WEBHOOK_SECRET"]
    assert hook.retry_schedule is None and hook.auth is None  # [delivery] retry_schedule applies


def test_consentproof_profile_loads(tmp_path: Path) -> None:
    [hook] = paste(tmp_path, "consentproof").webhooks
    assert (hook.id, hook.format, hook.signature, hook.events) == (
        "consentproof",
        BodyFormat.ENVELOPE,
        SignatureScheme.HMAC_SHA256,
        ("*",),
    )
    assert hook.retry_schedule == (0.0, 1 * MIN, 5 * MIN, 30 * MIN, 2 * HOUR)


def test_didomi_profile_loads(tmp_path: Path) -> None:
    [hook] = paste(tmp_path, "didomi").webhooks
    assert (hook.id, hook.format, hook.signature, hook.events) == ("didomi", BodyFormat.DATA, SignatureScheme.NONE, ())
    assert isinstance(hook.auth, OAuth2Auth) and hook.auth.grant == "client_credentials"
    assert hook.auth.client_secret is not None
    assert hook.auth.client_secret.reveal() == PROFILE_ENV["DIDOMI_OAUTH_CLIENT_SECRET"]


def test_dataguard_profile_loads(tmp_path: Path) -> None:
    [hook] = paste(tmp_path, "dataguard").webhooks
    assert (hook.id, hook.format, hook.sent_at_field) == ("dataguard", BodyFormat.DATA, "sentAt")
    assert hook.retry_schedule is not None and len(hook.retry_schedule) == 3
    assert isinstance(hook.auth, OAuth2Auth) and hook.auth.grant == "refresh_token"
    assert hook.auth.refresh_token is not None
    assert hook.auth.refresh_token.reveal() == PROFILE_ENV["DATAGUARD_REFRESH_TOKEN"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_profile_reads_its_secrets_from_the_environment(tmp_path: Path, platform: str) -> None:
    with pytest.raises(ConfigError) as caught:
        paste(tmp_path, platform, environ={})
    assert caught.value.problems
    assert all(problem.path.startswith("webhooks[0].") for problem in caught.value.problems)


def test_all_four_profiles_pasted_into_one_file_load_together(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(MINIMAL + "\n" + "\n".join(read_profile(platform) for platform in PLATFORMS))
    assert [hook.id for hook in load_config(path, environ=PROFILE_ENV).webhooks] == list(PLATFORMS)


def _alternatives() -> list[tuple[str, str, str]]:
    """(platform, label, the whole file with that alternative switched on) for every commented alternative."""
    cases: list[tuple[str, str, str]] = []
    for platform in PLATFORMS:
        text = read_profile(platform)
        for index, key in commented_lines(text):
            cases.append((platform, f"# {key}", MINIMAL + uncomment_line(text, index)))
        for number, (header, table) in enumerate(commented_tables(text)):
            if header == "[delivery]":
                cases.append((platform, "# [delivery]", MINIMAL + table + "\n" + text))
            else:
                assert header == "[webhooks.auth]", f"{platform}: unexpected commented table {header}"
                cases.append((platform, f"# {header} {number}", MINIMAL + replace_auth(text, table)))
    return cases


ALTERNATIVES = _alternatives()


def test_the_profiles_offer_the_expected_alternatives() -> None:
    assert sorted((platform, label) for platform, label, _ in ALTERNATIVES) == [
        ("consentproof", "# [delivery]"),
        ("consentproof", "# ordering"),
        ("dataguard", "# [delivery]"),
        ("dataguard", "# [webhooks.auth] 1"),
        ("dataguard", "# [webhooks.auth] 2"),
        ("didomi", "# [delivery]"),
        ("didomi", "# events"),
        ("didomi", "# format"),
        ("didomi", "# scope"),
    ]


@pytest.mark.parametrize(("platform", "label", "text"), ALTERNATIVES, ids=[f"{p} {a}" for p, a, _ in ALTERNATIVES])
def test_every_commented_alternative_loads(tmp_path: Path, platform: str, label: str, text: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    [hook] = load_config(path, environ=PROFILE_ENV).webhooks
    assert hook.id == platform


def test_didomi_data_flat_is_the_flatten_request_body_switch(tmp_path: Path) -> None:
    [(index, _)] = [(i, key) for i, key in commented_lines(read_profile("didomi")) if key == "format"]
    path = tmp_path / "relay.toml"
    path.write_text(MINIMAL + uncomment_line(read_profile("didomi"), index))
    assert load_config(path, environ=PROFILE_ENV).webhooks[0].format is BodyFormat.DATA_FLAT


def _declared(tmp_path: Path, platform: str) -> tuple[RetryPolicy, float]:
    """The retry policy a profile declares, its [delivery] hints applied, with the attempt timeout."""
    text = read_profile(platform)
    hints = "".join(table for header, table in commented_tables(text) if header == "[delivery]")
    path = tmp_path / "relay.toml"
    path.write_text(MINIMAL + hints + "\n" + text)
    config = load_config(path, environ=PROFILE_ENV)
    [hook] = config.webhooks
    delivery = config.delivery
    policy = RetryPolicy(
        schedule=hook.retry_schedule or delivery.retry_schedule,
        jitter=delivery.jitter,
        redrive_interval=delivery.redrive_interval,
        redrive_max_age=delivery.redrive_max_age,
    )
    return policy, hook.timeout or delivery.timeout


def _fail_every_attempt(policy: RetryPolicy, *, lasting: float, rand: float) -> list[tuple[float, DeliveryStatus]]:
    """(start time, status decided) of each attempt of a delivery created at 0 whose attempts all fail after
    ``lasting`` seconds, with the jitter drawn at ``rand``; stops at "dead" or after 30 attempts."""
    history: list[tuple[float, DeliveryStatus]] = []
    start = 0.0
    for number in range(1, 31):
        decision = decide(
            policy, attempt_number=number, outcome=Outcome(False), now=start + lasting, created_at=0.0, rand=rand
        )
        history.append((start, decision.status))
        if decision.next_attempt_at is None:
            break
        start = decision.next_attempt_at
    return history


JITTER_DRAWS = (0.0, 0.5, 0.999999)  # shortest, exact and longest delays


@pytest.mark.parametrize("rand", JITTER_DRAWS)
@pytest.mark.parametrize("lasting", [0.0, 10.0])
def test_consentproof_hint_gives_up_right_after_the_fifth_attempt(tmp_path: Path, rand: float, lasting: float) -> None:
    policy, _ = _declared(tmp_path, "consentproof")
    assert delivery_hints(read_profile("consentproof")) == {"redrive_max_age": "3h"}
    statuses = [status for _, status in _fail_every_attempt(policy, lasting=lasting, rand=rand)]
    assert statuses == [DeliveryStatus.PENDING] * 4 + [DeliveryStatus.DEAD]
    # Without the hint (redrive_max_age 7d) the fifth failure parks the delivery and re-drives go on.
    kept = _fail_every_attempt(replace(policy, redrive_max_age=7 * 86400.0), lasting=lasting, rand=rand)
    assert [status for _, status in kept[:6]] == [DeliveryStatus.PENDING] * 4 + [DeliveryStatus.FAILED] * 2


@pytest.mark.parametrize("rand", JITTER_DRAWS)
def test_didomi_retries_at_least_five_times_within_five_minutes_then_parks(tmp_path: Path, rand: float) -> None:
    policy, timeout = _declared(tmp_path, "didomi")
    assert timeout == 5.0
    history = _fail_every_attempt(policy, lasting=timeout, rand=rand)  # every attempt times out
    within = [(start, status) for start, status in history if start <= 5 * MIN]
    assert len(within) >= 6  # the first attempt and at least five retries
    assert [status for _, status in within] == [DeliveryStatus.PENDING] * 5 + [DeliveryStatus.FAILED]
    assert history[6][0] - history[5][0] >= 0.9 * HOUR  # then "permanent storage": re-driven hourly


def test_dataguard_three_attempts_then_the_failures_store_every_hour(tmp_path: Path) -> None:
    policy, _ = _declared(tmp_path, "dataguard")
    history = _fail_every_attempt(replace(policy, jitter=0.0), lasting=0.0, rand=0.5)
    assert [status for _, status in history[:3]] == [DeliveryStatus.PENDING] * 2 + [DeliveryStatus.FAILED]
    redrives = [start for start, _ in history[2:8]]
    assert [later - earlier for earlier, later in itertools.pairwise(redrives)] == [HOUR] * 5
