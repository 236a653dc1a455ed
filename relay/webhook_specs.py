"""Webhooks created through the management API: the JSON body they are created from (their "spec"), a change
merged into it (JSON merge patch, RFC 7396), a secret rotation, and the ``Webhook`` rebuilt from what the store
keeps. Pure functions, except ``load_api_webhooks`` which reads the store and ``warn_weak_secrets`` which logs.

Secrets are held to ``relay.signing.secret_problem`` when they are given (create, rotation) and when a change
moves a webhook to another scheme; a webhook stored before those rules is rebuilt and signs as it did. A rotation
may also move a webhook between the two Standard Webhooks schemes (``standard`` and ``standard-ed25519``): the new
secret signs with the new scheme and the previous one, during the overlap, with its own.

The spec is validated by the same ``parse_webhook`` as a ``[[webhooks]]`` table, with secrets taken literally
(an API client never reads the server's environment) and a few extra bounds, so that no value a client sends can
push a timestamp past what RFC 3339 can show.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog

from relay.config import DeliveryConfig
from relay.config_fields import Fields, as_nonempty_str, one_of
from relay.config_webhooks import parse_webhook
from relay.errors import Problem, ValidationError
from relay.models import Secret, SignatureScheme, Webhook
from relay.signing import STANDARD_SCHEMES, new_secret, previous_scheme, secret_problem
from relay.store import StoredWebhook, Webhooks
from relay.units import parse_duration, parse_rate

log = structlog.get_logger()

SECRET_MESSAGE = "Save the webhook secret now - it will not be shown again."
DEFAULT_OVERLAP = 24 * 3600.0
MAX_OVERLAP = 30 * 86400.0
MAX_RETRY_STEP = 30 * 86400.0
MAX_TIMEOUT = 3600.0
MIN_RATE = 1 / 3600.0

# Stored webhooks are rebuilt without the URL policy: it is enforced when a URL is set, and again when each
# attempt connects, so a later, stricter [delivery] section does not make a stored webhook vanish.
_UNCHECKED = DeliveryConfig(allow_http=True, allow_private_networks=True)


def create_spec(body: object, delivery: DeliveryConfig, *, tenant: str | None = None) -> tuple[Webhook, dict[str, Any]]:
    """A new webhook from a ``POST /v1/webhooks`` body, and the spec to store (a ``secret`` is generated when
    the body has none). ``tenant``: the tenant of the key creating it, whose webhook it is (a body naming another
    is a problem); None: an admin key, and the body's ``tenant`` (if any) says whose. Raises ``ValidationError``
    naming every wrong field."""
    raw = _object(body)
    problems: list[Problem] = []
    if "id" in raw:
        problems.append(Problem("id", "is assigned by the relay"))
    spec = {key: value for key, value in raw.items() if value is not None and key != "id"}
    if tenant is not None and spec.setdefault("tenant", tenant) != tenant:
        problems.append(Problem("tenant", f'must be "{tenant}", the tenant of this key, or absent'))
        spec["tenant"] = tenant
    ed25519 = spec.get("signature") == SignatureScheme.STANDARD_ED25519
    spec.setdefault("secret", new_secret(SignatureScheme.STANDARD_ED25519 if ed25519 else SignatureScheme.STANDARD))
    return _parse(spec, delivery, problems), spec


def patch_spec(stored: Mapping[str, Any], patch: object, delivery: DeliveryConfig) -> tuple[Webhook, dict[str, Any]]:
    """``stored`` with ``patch`` merged in (``null`` removes a key), validated as a whole."""
    changes = _object(patch)
    problems: list[Problem] = []
    if "id" in changes:
        problems.append(Problem("id", "cannot be changed"))
    if "secret" in changes:
        problems.append(Problem("secret", "cannot be changed here: use POST /v1/webhooks/{id}/rotate-secret"))
    if "tenant" in changes and changes["tenant"] != stored.get("tenant"):
        problems.append(Problem("tenant", "cannot be changed: create the webhook again under the other tenant"))
    spec = merge_patch(stored, {k: v for k, v in changes.items() if k not in ("id", "secret", "tenant")})
    # Only what changes is held to the URL policy and the secret rules now: a stored URL was checked when it was
    # set, and a secret stored before the rules keeps signing until the webhook changes scheme (or rotates).
    checked = delivery if {"url", "auth"} & changes.keys() else _UNCHECKED
    return _parse(spec, checked, problems, check_secret=_scheme_of(spec) != _scheme_of(stored)), spec


def _scheme_of(spec: Mapping[str, Any]) -> object:
    """The scheme a spec signs with, as written (``parse_webhook`` checks it): the default when it names none."""
    return spec.get("signature") or ("standard" if spec.get("secret") is not None else "none")


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396: objects merge key by key, ``null`` deletes, anything else replaces."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True, slots=True)
class Rotation:
    """What a ``rotate-secret`` body asks: the new secret (None: generate one), how long the previous one keeps
    signing, and the scheme to sign with from now on (None: the webhook's own)."""

    secret: str | None
    overlap: float
    signature: SignatureScheme | None = None


def parse_rotation(body: object) -> Rotation:
    """``{"overlap"?: duration (default 24h, at most 30d), "secret"?: str, "signature"?: scheme}``. Whether a given
    secret fits the scheme is ``rotation_secret``'s to say, and whether the scheme may change ``rotation_scheme``'s."""
    problems: list[Problem] = []
    f = Fields(_object(body), "", problems, known=("overlap", "secret", "signature"), table_noun="an object")
    overlap = f.get("overlap", parse_duration)
    if overlap is not None and overlap > MAX_OVERLAP:
        f.problem("overlap", "must be at most 30d")
    secret = f.get("secret", as_nonempty_str)
    signature = f.get("signature", one_of(*SignatureScheme))
    if problems:
        raise ValidationError(problems)
    return Rotation(
        secret,
        DEFAULT_OVERLAP if overlap is None else overlap,
        None if signature is None else SignatureScheme(signature),
    )


def rotation_scheme(current: SignatureScheme, asked: SignatureScheme | None) -> SignatureScheme:
    """The scheme a webhook signs with after a rotation: ``asked``, which may differ from ``current`` only between
    ``standard`` and ``standard-ed25519``, whose secrets sign one ``webhook-signature`` header side by side during
    the overlap. Raises ``ValidationError`` naming ``signature``."""
    if asked is None or asked is current:
        return current
    if {current, asked} <= STANDARD_SCHEMES:
        return asked
    message = (
        f'a rotation can move a webhook only between "standard" and "standard-ed25519" (it signs with "{current}"); '
        "change other schemes with PATCH"
    )
    raise ValidationError([Problem("signature", message)])


def rotation_secret(given: str | None, scheme: SignatureScheme) -> str:
    """The secret a rotation installs: ``given``, held to the secret rules of ``scheme`` (the webhook's, after the
    rotation), or one generated for it. Raises ``ValidationError`` naming ``secret``."""
    if given is None:
        return new_secret(scheme)
    if (problem := secret_problem(given, scheme)) is not None:
        raise ValidationError([Problem("secret", problem)])
    return given


def rebuild(stored: StoredWebhook) -> Webhook | None:
    """The ``Webhook`` a stored spec describes, with its rotation state; None (logged) if it no longer parses."""
    problems: list[Problem] = []
    try:
        spec = orjson.loads(stored.spec)
    except orjson.JSONDecodeError as exc:
        problems.append(Problem("", f"the stored spec is not JSON: {exc}"))
        spec = None
    webhook = None
    if isinstance(spec, dict):
        webhook = parse_webhook(
            spec,
            "",
            problems,
            delivery=_UNCHECKED,
            resolve_secrets=False,
            source="api",
            require_id=False,
            check_secret=False,  # a secret stored before the rules keeps signing; warn_weak_secrets reports it
        )
    if webhook is None:
        log.error("webhook_not_loaded", webhook_id=stored.id, problems=[str(p) for p in problems])
        return None
    return replace(
        webhook,
        id=stored.id,
        created_at=stored.created_at,
        previous_secret=Secret(stored.previous_secret) if stored.previous_secret else None,
        previous_secret_until=stored.previous_secret_until,
    )


async def load_api_webhooks(store: Webhooks) -> list[Webhook]:
    """Every webhook created through the API, as the store keeps them (at startup)."""
    return [w for w in map(rebuild, await store.api_webhooks()) if w is not None]


def warn_weak_secrets(webhooks: Iterable[Webhook], now: float) -> None:
    """Log ``weak_secret`` (the webhook's id and what is wrong, never the secret) for each secret that signs at
    ``now`` but breaks the secret rules: one stored through the API before they existed. It keeps signing as it
    did until the secret is rotated (``POST /v1/webhooks/{id}/rotate-secret``) and the overlap ends."""
    for webhook in webhooks:
        signing = webhook.signing_secrets(now)
        hints = {
            "secret": f"rotate it: POST /v1/webhooks/{webhook.id}/rotate-secret",
            "previous_secret": "it signs until the rotation's overlap ends (previous_secret_until)",
        }
        for field, secret in (("secret", webhook.secret), ("previous_secret", webhook.previous_secret)):
            if secret is None or secret not in signing:
                continue
            scheme = webhook.signature if field == "secret" else previous_scheme(secret.reveal(), webhook.signature)
            if (problem := secret_problem(secret.reveal(), scheme)) is not None:
                log.warning(
                    "weak_secret",
                    webhook_id=webhook.id,
                    field=field,
                    signature=str(scheme),
                    problem=problem,
                    hint=hints[field],
                )


def _object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise ValidationError([Problem("", "the body must be a JSON object")])
    return body


def _parse(
    spec: Mapping[str, Any], delivery: DeliveryConfig, problems: list[Problem], *, check_secret: bool = True
) -> Webhook:
    webhook = parse_webhook(
        spec,
        "",
        problems,
        delivery=delivery,
        resolve_secrets=False,
        source="api",
        require_id=False,
        check_secret=check_secret,
    )
    _check_bounds(spec, problems)
    if webhook is None or problems:
        raise ValidationError(problems)
    return webhook


def _check_bounds(spec: Mapping[str, Any], problems: list[Problem]) -> None:
    """Bounds the config file does not need; a value that does not parse at all is parse_webhook's to report."""

    def over(value: object, limit: float, parse: Callable[[object], float] = parse_duration) -> bool:
        try:
            return parse(value) > limit
        except ValueError:
            return False

    if over(spec.get("timeout"), MAX_TIMEOUT):
        problems.append(Problem("timeout", "must be at most 1h"))
    steps = spec.get("retry_schedule")
    for index, step in enumerate(steps if isinstance(steps, list) else ()):
        if over(step, MAX_RETRY_STEP):
            problems.append(Problem(f"retry_schedule[{index}]", "must be at most 30d"))
    if over(spec.get("rate_limit"), 1 / MIN_RATE, lambda value: 1 / parse_rate(value)):  # seconds per attempt
        problems.append(Problem("rate_limit", 'must be at least "1/h"'))
