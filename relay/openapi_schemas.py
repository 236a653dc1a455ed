"""The OpenAPI document's schemas (``components.schemas``) and the small builders ``relay.openapi`` shares."""

from __future__ import annotations

from typing import Any

from relay.models import (
    EVENT_TOKEN,
    ORDERING_KEY,
    TENANT_ID,
    BodyFormat,
    DeliveryStatus,
    ErrorKind,
    Ordering,
    SignatureScheme,
)

Schema = dict[str, Any]

ID = f"^{EVENT_TOKEN.pattern}$"  # an event type or id
TENANT = f"^{TENANT_ID.pattern}$"  # a tenant id (CONTRACT §9)
ORDERING_KEY_PATTERN = f"^{ORDERING_KEY.pattern}$"  # an ordering key (CONTRACT §11)
_ORDERING: Schema = {
    "enum": list(Ordering),
    "description": 'Per event ordering_key: "none" (default), "fifo" (one at a time, in ingest order) or "latest" '
    "(only the newest event of a key matters; older unfinished deliveries end superseded)",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def or_null(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), *, closed: bool = False) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


TIME = {"type": "string", "format": "date-time"}
_DURATION: Schema = {
    "description": 'A duration such as "250ms", "30s", "5m", "2h", "7d", or a number of seconds',
    "anyOf": [{"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$"}, {"type": "number", "minimum": 0}],
}
_SECRET_INPUT: Schema = {  # minLength stays 1: with signature "none" a secret signs nothing and has no rule
    "type": "string",
    "minLength": 1,
    "description": 'With signature "standard": "whsec_" + base64 of 24-64 bytes (or the base64 alone); with '
    '"standard-ed25519": "whsk_" + base64 of an ed25519 key (64 bytes: the seed, then its public key; or the '
    '32-byte seed); with "hmac-sha256": at least 16 characters. Generated when absent ("whsec_" + base64 of 32 '
    'random bytes, or a new "whsk_" key for "standard-ed25519")',
}
_RATE: Schema = {
    "description": 'Attempts per second ("50/s", "600/m", "1000/h") or a number per second',
    "anyOf": [{"type": "string"}, {"type": "number", "exclusiveMinimum": 0}],
}


def auth_input() -> Schema:
    text = {"type": "string", "minLength": 1}
    return {
        "description": "How the relay authenticates to the endpoint (secrets are never shown back)",
        "oneOf": [
            obj({"type": {"const": "bearer"}, "token": text}, ("type", "token"), closed=True),
            obj({"type": {"const": "header"}, "name": text, "value": text}, ("type", "name", "value"), closed=True),
            obj(
                {"type": {"const": "basic"}, "username": text, "password": text},
                ("type", "username", "password"),
                closed=True,
            ),
            obj(
                {
                    "type": {"const": "oauth2"},
                    "grant": {"enum": ["client_credentials", "refresh_token"]},
                    "token_url": text,
                    "client_id": text,
                    "client_secret": text,
                    "refresh_token": text,
                    "scope": {"type": "string"},
                    "audience": {"type": "string"},
                    "client_auth": {"enum": ["basic", "post"]},
                    "extra_params": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                ("type", "token_url", "client_id"),
                closed=True,
            ),
        ],
    }


def webhook_fields(*, nullable: bool) -> dict[str, Schema]:
    fields: dict[str, Schema] = {
        "url": {"type": "string", "description": "https:// (http:// only with delivery.allow_http)"},
        "events": {
            "type": "array",
            "items": {"type": "string"},
            "description": 'Exact types, "prefix.*" or "*"; empty or absent: every type',
        },
        "description": {"type": "string"},
        "signature": {"enum": list(SignatureScheme)},
        "format": {"enum": list(BodyFormat)},
        "sent_at_field": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "auth": auth_input(),
        "retry_schedule": {"type": "array", "items": _DURATION, "minItems": 1, "maxItems": 50},
        "timeout": _DURATION,
        "rate_limit": _RATE,
        "is_active": {"type": "boolean"},
        "ordering": _ORDERING,
    }
    if nullable:
        return {name: or_null(schema) for name, schema in fields.items()}
    return fields


def schemas() -> dict[str, Schema]:
    str_or_null = {"type": ["string", "null"]}
    tenant_or_null = {"type": ["string", "null"], "description": "The tenant it belongs to; null: platform-wide"}
    statuses = {"enum": list(DeliveryStatus)}
    counts = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    return {
        "Error": obj(
            {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": obj({"path": {"type": "string"}, "message": {"type": "string"}}, ("path", "message")),
                },
            },
            ("code", "message", "details"),
        ),
        "ErrorEnvelope": obj({"success": {"const": False}, "error": ref("Error")}, ("success", "error")),
        "Attempt": obj(
            {
                "number": {"type": "integer", "minimum": 1},
                "started_at": TIME,
                "duration_ms": {"type": "number", "minimum": 0},
                "status_code": {"type": ["integer", "null"]},
                "error": {"enum": [*ErrorKind, None]},
                "error_detail": str_or_null,
                "response_body": str_or_null,
                "next_attempt_at": or_null(TIME),
            },
            ("number", "started_at", "duration_ms", "status_code", "error", "error_detail", "response_body"),
        ),
        "Delivery": obj(
            {
                "id": {"type": "string"},
                "event_id": {"type": "string"},
                "webhook_id": {"type": "string"},
                "status": statuses,
                "attempt_count": {"type": "integer", "minimum": 0},
                "next_attempt_at": or_null(TIME),
                "created_at": TIME,
                "updated_at": TIME,
                "attempts": {"type": "array", "items": ref("Attempt")},
            },
            ("id", "event_id", "webhook_id", "status", "attempt_count", "next_attempt_at", "created_at", "updated_at"),
        ),
        "Event": obj(
            {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "created_at": TIME,
                "ingested_at": TIME,
                "tenant": tenant_or_null,
                "ordering_key": {"type": ["string", "null"], "description": "Its ordering key (CONTRACT §11)"},
                "data": {"type": ["object", "array"]},
                "deliveries": {"type": "array", "items": ref("Delivery")},
            },
            ("id", "type", "created_at", "data"),
        ),
        "EventSummary": obj(
            {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "created_at": TIME,
                "ingested_at": TIME,
                "tenant": tenant_or_null,
                "deliveries": {"type": "integer", "minimum": 0, "description": "How many it has, replays included"},
            },
            ("id", "type", "created_at", "ingested_at", "deliveries"),
        ),
        "EventInput": obj(
            {
                "type": {"type": "string", "pattern": ID},
                "data": {"type": ["object", "array"]},
                "id": {"type": "string", "pattern": ID},
                "created_at": {"type": "string", "format": "date-time"},
                "tenant": {
                    "type": "string",
                    "pattern": TENANT,
                    "description": "The tenant it belongs to; with a tenant key, that key's tenant (or absent)",
                },
                "ordering_key": {
                    "type": "string",
                    "pattern": ORDERING_KEY_PATTERN,
                    "description": '1-256 characters without control characters; ordered webhooks ("fifo", '
                    '"latest") keep this key\'s order',
                },
            },
            ("type", "data"),
        ),
        "IngestResult": obj(
            {"id": {"type": "string"}, "deliveries": {"type": "integer", "minimum": 0}}, ("id", "deliveries")
        ),
        "Webhook": obj(
            {
                "id": {"type": "string"},
                "url": {"type": "string"},
                "description": str_or_null,
                "events": {"type": "array", "items": {"type": "string"}},
                "signature": {"enum": list(SignatureScheme)},
                "format": {"enum": list(BodyFormat)},
                "sent_at_field": str_or_null,
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "retry_schedule": {"type": ["array", "null"], "items": {"type": "string"}},
                "timeout": str_or_null,
                "rate_limit": str_or_null,
                "auth": or_null(
                    obj(
                        {"type": {"enum": ["bearer", "header", "basic", "oauth2"]}},
                        ("type",),
                    )
                ),
                "is_active": {"type": "boolean"},
                "source": {"enum": ["config", "api"]},
                "tenant": tenant_or_null,
                "ordering": {"enum": list(Ordering)},
                "created_at": or_null(TIME),
                "previous_secret_until": or_null(TIME),
                "public_key": {
                    "type": ["string", "null"],
                    "description": 'Only for signature "standard-ed25519": the "whpk_" public key that verifies '
                    "its v1a signatures (base64 of the 32-byte ed25519 public key)",
                },
                "secret": {
                    "type": "string",
                    "description": "Only in the answers to creation and rotation: shown once",
                },
            },
            ("id", "url", "events", "signature", "format", "is_active", "source", "created_at"),
        ),
        "WebhookCreate": obj(
            {
                **webhook_fields(nullable=False),
                "secret": _SECRET_INPUT,
                "tenant": {
                    "type": "string",
                    "pattern": TENANT,
                    "description": "The tenant it belongs to (absent: platform-wide); with a tenant key, that key's "
                    "tenant (or absent)",
                },
            },
            ("url",),
            closed=True,
        ),
        "WebhookPatch": {
            **obj(webhook_fields(nullable=True), closed=True),
            "description": "A JSON merge patch (RFC 7396): null removes a field, objects merge",
        },
        "RotateSecret": obj(
            {
                "overlap": {**_DURATION, "description": "How long the previous secret keeps signing (default 24h)"},
                "secret": _SECRET_INPUT,
                "signature": {
                    "enum": list(SignatureScheme),
                    "description": "The scheme to sign with from now on: a rotation may move a webhook between "
                    '"standard" and "standard-ed25519"; during the overlap the previous secret signs with its own, '
                    'so webhook-signature carries a "v1," and a "v1a," entry',
                },
            },
            closed=True,
        ),
        "TestResult": {
            "allOf": [
                ref("Attempt"),
                obj({"event_id": {"type": "string"}, "succeeded": {"type": "boolean"}}, ("event_id", "succeeded")),
            ]
        },
        "Replay": obj({"webhook_id": {"type": "string", "minLength": 1}}, closed=True),
        "Redrive": obj(
            {"webhook_id": {"type": "string", "minLength": 1}, "include_dead": {"type": "boolean"}}, closed=True
        ),
        "Stats": obj(
            {"deliveries": counts, "webhooks": {"type": "object", "additionalProperties": counts}},
            ("deliveries", "webhooks"),
        ),
        "ListMeta": obj({"next_cursor": str_or_null}, ("next_cursor",)),
        "Tenant": obj(
            {
                "id": {"type": "string"},
                "webhooks": {"type": "integer", "minimum": 0},
                "keys": {"type": "integer", "minimum": 0},
                "deliveries": {**counts, "description": "Its webhooks' deliveries by status"},
            },
            ("id", "webhooks", "keys", "deliveries"),
        ),
        "TenantKey": obj(
            {
                "id": {"type": "string"},
                "tenant": {"type": "string"},
                "prefix": {"type": "string", "description": "The key's first characters, to tell keys apart"},
                "description": str_or_null,
                "created_at": TIME,
                "last_used_at": or_null(TIME),
                "key": {"type": "string", "description": "Only in the answer that creates it: shown once"},
            },
            ("id", "tenant", "prefix", "description", "created_at", "last_used_at"),
        ),
        "TenantKeyCreate": obj({"description": {"type": "string", "maxLength": 500}}, closed=True),
        "PortalCreate": obj(
            {"ttl": {**_DURATION, "description": "How long the link opens the dashboard (default 1h, at most 30d)"}},
            closed=True,
        ),
        "PortalLink": obj({"url": {"type": "string"}, "expires_at": TIME}, ("url", "expires_at")),
    }
