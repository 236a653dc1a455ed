"""Webhook declarations: ``parse_webhook`` turns one raw table (a ``[[webhooks]]`` entry, or a JSON body of
the management API) into a ``Webhook``, collecting every problem with its key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from relay import policy
from relay.config_fields import (
    Fields,
    SecretResolver,
    as_bool,
    as_nonempty_str,
    as_str,
    choices,
    key_path,
    one_of,
    positive_duration,
)
from relay.errors import Problem
from relay.models import (
    EVENT_TOKEN,
    TENANT_ID,
    TENANT_ID_RULE,
    Auth,
    BasicAuth,
    BearerAuth,
    BodyFormat,
    HeaderAuth,
    OAuth2Auth,
    Ordering,
    Secret,
    SignatureScheme,
    Webhook,
    new_id,
)
from relay.signing import secret_problem
from relay.units import parse_duration, parse_rate

if TYPE_CHECKING:
    from relay.config import DeliveryConfig

MAX_RETRY_STEPS = 50
WEBHOOK_ID = re.compile(r"[a-z0-9_-]{1,64}")
_SENT_AT_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# fmt: off
# Headers the relay sets itself, or that belong to one hop: a webhook's static headers may not name them.
RELAY_HEADERS = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "user-agent",
    "x-event-id", "x-event-type", "x-delivery-attempt", "webhook-id", "webhook-timestamp",
    "webhook-signature", "x-signature", "x-timestamp", "x-webhook-id",
})
HOP_BY_HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "upgrade", "expect",
})
_WEBHOOK_KEYS = frozenset({
    "id", "url", "events", "secret", "signature", "format", "sent_at_field", "headers", "retry_schedule",
    "timeout", "rate_limit", "auth", "description", "is_active", "tenant", "ordering",
})
_AUTH_KEYS = {
    "bearer": frozenset({"type", "token"}),
    "header": frozenset({"type", "name", "value"}),
    "basic": frozenset({"type", "username", "password"}),
    "oauth2": frozenset({
        "type", "grant", "token_url", "client_id", "client_secret", "scope", "audience", "extra_params",
        "client_auth", "refresh_token",
    }),
}
_OAUTH2_OWN_PARAMS = frozenset({
    "grant_type", "client_id", "client_secret", "refresh_token", "scope", "audience",
})
_ENVELOPE_FIELDS = ("id", "type", "created_at", "data")
# fmt: on


def as_header_name(value: object) -> str:
    if not _HEADER_NAME.fullmatch(as_nonempty_str(value)):
        raise ValueError("is not a valid header name")
    return as_str(value)


def as_header_value(value: object) -> str:
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in as_str(value)):
        raise ValueError("must not contain CR, LF or other control characters")
    return as_str(value)


def as_event_pattern(value: object) -> str:
    pattern = as_str(value)
    if pattern == "*" or EVENT_TOKEN.fullmatch(pattern.removesuffix(".*")):
        return pattern
    raise ValueError('must be "*", an event type of 1-128 characters [A-Za-z0-9_.:-], or "prefix.*"')


def parse_webhook(
    raw: Mapping[str, object],
    path: str,
    problems: list[Problem],
    *,
    delivery: DeliveryConfig,
    resolve_secrets: bool,
    source: str,
    require_id: bool = True,
    check_secret: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Webhook | None:
    """One webhook from a raw table, or None after recording its problems (key paths prefixed by ``path``).

    ``resolve_secrets``: read ``env:``/``file:``/``cred:`` references from ``environ`` (default
    ``os.environ``); when False (API bodies) every secret is taken literally. ``require_id=False`` (API): an
    absent ``id`` is generated as ``whk_…``. Durations may be strings or numbers. ``check_secret=False`` skips
    the secret rules (``relay.signing.secret_problem``): a webhook stored before them keeps loading.
    """
    noun = "a table" if source == "config" else "an object"
    if not isinstance(raw, Mapping):
        problems.append(Problem(path, f"must be {noun}"))
        return None
    if resolve_secrets and environ is None:
        environ = os.environ
    secret = SecretResolver(environ if resolve_secrets else None)
    before = len(problems)
    f = Fields(raw, path, problems, known=_WEBHOOK_KEYS, table_noun=noun)

    webhook_id = f.get("id", _as_webhook_id, required="required" if require_id else None)
    url = f.get("url", as_nonempty_str, required="required")
    if url is not None and (message := _check_url(url, delivery)) is not None:
        f.problem("url", message)
    events = f.items("events", as_event_pattern)
    secret_value = f.get("secret", secret)
    signature = f.get("signature", one_of(*SignatureScheme))
    if signature is None and not f.present("signature"):
        signature = SignatureScheme.STANDARD if f.present("secret") else SignatureScheme.NONE
    if signature not in (None, SignatureScheme.NONE) and not f.present("secret"):
        f.problem("signature", f'"{signature}" needs a secret')
    if check_secret and (problem := _secret_problem(secret_value, signature)) is not None:
        f.problem("secret", problem)
    body_format = f.get("format", one_of(*BodyFormat))
    sent_at_field = f.get("sent_at_field", as_str) or None
    if sent_at_field is not None:
        if not _SENT_AT_FIELD.fullmatch(sent_at_field):
            f.problem("sent_at_field", "must be a plain JSON key: a letter or _, then up to 63 [A-Za-z0-9_-]")
        elif sent_at_field in _ENVELOPE_FIELDS and body_format not in (BodyFormat.DATA, BodyFormat.DATA_FLAT):
            f.problem("sent_at_field", f'"{sent_at_field}" is a field of the envelope itself')
    auth_raw = f.table("auth")
    auth = _parse_auth(auth_raw, f.at("auth"), problems, delivery, secret, noun) if auth_raw is not None else None
    headers = f.string_table("headers", _header_name_check(auth_raw), as_header_value)
    retry_schedule = f.items("retry_schedule", parse_duration, non_empty=True, max_items=MAX_RETRY_STEPS)
    timeout = f.get("timeout", positive_duration)
    rate_limit = f.get("rate_limit", parse_rate)
    description = f.get("description", as_str) or None
    is_active = f.get("is_active", as_bool)
    tenant = f.get("tenant", as_tenant_id)
    ordering = f.get("ordering", one_of(*Ordering))

    if len(problems) > before or url is None or signature is None:
        return None
    return Webhook(
        id=webhook_id if webhook_id is not None else new_id("whk"),
        url=url,
        events=tuple(dict.fromkeys(events or ())),
        secret=secret_value,
        signature=SignatureScheme(signature),
        format=BodyFormat(body_format or BodyFormat.ENVELOPE),
        sent_at_field=sent_at_field,
        headers=headers or {},
        retry_schedule=tuple(retry_schedule) if retry_schedule is not None else None,
        timeout=timeout,
        rate_limit=rate_limit,
        auth=auth,
        description=description,
        is_active=is_active if is_active is not None else True,
        source=source,
        tenant=tenant,
        ordering=Ordering(ordering or Ordering.NONE),
    )


def as_tenant_id(value: object) -> str:
    if not TENANT_ID.fullmatch(as_str(value)):
        raise ValueError(TENANT_ID_RULE)
    return as_str(value)


def _as_webhook_id(value: object) -> str:
    if not WEBHOOK_ID.fullmatch(as_str(value)):
        raise ValueError("must be 1-64 characters of [a-z0-9_-]")
    return as_str(value)


def _secret_problem(secret: Secret | None, signature: str | None) -> str | None:
    if secret is None or signature is None:
        return None  # absent, or already reported
    return secret_problem(secret.reveal(), SignatureScheme(signature))


def _check_url(url: str, delivery: DeliveryConfig) -> str | None:
    return policy.check_url(url, allow_http=delivery.allow_http, allow_private_networks=delivery.allow_private_networks)


def _header_name_check(auth_raw: Mapping[str, object] | None) -> Callable[[str], str]:
    """Static header names may not be the relay's own, hop-by-hop, or the one the auth sets."""
    auth_headers: set[str] = set()
    if auth_raw is not None:
        auth_headers.add("authorization")
        custom = auth_raw.get("name") if auth_raw.get("type") == "header" else None
        if isinstance(custom, str):
            auth_headers.add(custom.lower())

    def check(name: str) -> str:
        lower = as_header_name(name).lower()
        if lower in RELAY_HEADERS:
            raise ValueError(f'"{name}" is set by the relay and cannot be overridden')
        if lower in HOP_BY_HOP_HEADERS:
            raise ValueError(f'"{name}" is a hop-by-hop header')
        if lower in auth_headers:
            raise ValueError(f'"{name}" is set by auth')
        return name

    return check


def _parse_auth(
    raw: Mapping[str, object],
    path: str,
    problems: list[Problem],
    delivery: DeliveryConfig,
    secret: SecretResolver,
    noun: str,
) -> Auth | None:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in _AUTH_KEYS:
        message = f"required: {choices(_AUTH_KEYS)}" if kind is None else f"must be {choices(_AUTH_KEYS)}"
        problems.append(Problem(key_path(path, "type"), message))
        return None
    before = len(problems)
    f = Fields(raw, path, problems, known=_AUTH_KEYS[kind], unknown=f'unknown key for type "{kind}"', table_noun=noun)
    required = f'required for type "{kind}"'
    auth: Auth | None = None
    if kind == "bearer":
        token = f.get("token", secret, required=required)
        auth = BearerAuth(token) if token is not None else None
    elif kind == "header":
        name = f.get("name", _as_auth_header_name, required=required)
        value = f.get("value", secret, required=required)
        auth = HeaderAuth(name, value) if name is not None and value is not None else None
    elif kind == "basic":
        username = f.get("username", _as_basic_username, required=required)
        password = f.get("password", secret, required=required)
        auth = BasicAuth(username, password) if username is not None and password is not None else None
    else:
        auth = _parse_oauth2(f, required, delivery, secret)
    return auth if len(problems) == before else None


def _parse_oauth2(f: Fields, required: str, delivery: DeliveryConfig, secret: SecretResolver) -> OAuth2Auth | None:
    grant = f.get("grant", one_of("client_credentials", "refresh_token")) or (
        None if f.present("grant") else "client_credentials"
    )
    token_url = f.get("token_url", as_nonempty_str, required=required)
    if token_url is not None and (message := _check_url(token_url, delivery)) is not None:
        f.problem("token_url", message)
    client_id = f.get("client_id", as_nonempty_str, required=required)
    for_grant = f'required for grant "{grant}"'
    client_secret = f.get("client_secret", secret, required=for_grant if grant == "client_credentials" else None)
    refresh_token = f.get("refresh_token", secret, required=for_grant if grant == "refresh_token" else None)
    if grant == "client_credentials" and f.present("refresh_token"):
        f.problem("refresh_token", 'only used with grant "refresh_token"')
    extra_params = f.string_table("extra_params", _as_extra_param_name, as_str)
    client_auth = f.get("client_auth", one_of("basic", "post")) or "basic"
    scope = f.get("scope", as_str) or None
    audience = f.get("audience", as_str) or None
    if grant is None or token_url is None or client_id is None:
        return None
    return OAuth2Auth(
        grant=grant,
        token_url=token_url,
        client_id=client_id,
        client_secret=client_secret,
        scope=scope,
        audience=audience,
        extra_params=extra_params or {},
        client_auth=client_auth,
        refresh_token=refresh_token,
    )


def _as_auth_header_name(value: object) -> str:
    name = as_header_name(value)
    if name.lower() in RELAY_HEADERS or name.lower() in HOP_BY_HOP_HEADERS:
        raise ValueError(f'"{name}" is set by the relay or belongs to one hop; pick another header')
    return name


def _as_basic_username(value: object) -> str:
    username = as_header_value(value)
    if ":" in username:
        raise ValueError("must not contain a colon (RFC 7617)")
    return username


def _as_extra_param_name(name: str) -> str:
    if name in _OAUTH2_OWN_PARAMS:
        raise ValueError(f'"{name}" is set by the relay (use the key of the same name)')
    return name
