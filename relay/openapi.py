"""The OpenAPI 3.1 document of the ingest (CONTRACT §4) and management (§5) APIs, served at
``GET /v1/openapi.json`` without a key. ``tests/integration/test_openapi.py`` runs schemathesis against a running
relay with it, so it stays true: a response that breaks it fails the build.
"""

from __future__ import annotations

from typing import Any

from relay import __version__
from relay.models import BodyFormat, DeliveryStatus, ErrorKind, SignatureScheme

Schema = dict[str, Any]

_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = (), *, closed: bool = False) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


_TIME = {"type": "string", "format": "date-time"}
_DURATION: Schema = {
    "description": 'A duration such as "250ms", "30s", "5m", "2h", "7d", or a number of seconds',
    "anyOf": [{"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$"}, {"type": "number", "minimum": 0}],
}
_SECRET_INPUT: Schema = {  # minLength stays 1: with signature "none" a secret signs nothing and has no rule
    "type": "string",
    "minLength": 1,
    "description": 'With signature "standard": "whsec_" + base64 of 24-64 bytes (or the base64 alone); with '
    '"hmac-sha256": at least 16 characters. Generated ("whsec_" + base64 of 32 random bytes) when absent',
}
_RATE: Schema = {
    "description": 'Attempts per second ("50/s", "600/m", "1000/h") or a number per second',
    "anyOf": [{"type": "string"}, {"type": "number", "exclusiveMinimum": 0}],
}


def _auth_input() -> Schema:
    text = {"type": "string", "minLength": 1}
    return {
        "description": "How the relay authenticates to the endpoint (secrets are never shown back)",
        "oneOf": [
            _object({"type": {"const": "bearer"}, "token": text}, ("type", "token"), closed=True),
            _object({"type": {"const": "header"}, "name": text, "value": text}, ("type", "name", "value"), closed=True),
            _object(
                {"type": {"const": "basic"}, "username": text, "password": text},
                ("type", "username", "password"),
                closed=True,
            ),
            _object(
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


def _webhook_fields(*, nullable: bool) -> dict[str, Schema]:
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
        "auth": _auth_input(),
        "retry_schedule": {"type": "array", "items": _DURATION, "minItems": 1, "maxItems": 50},
        "timeout": _DURATION,
        "rate_limit": _RATE,
        "is_active": {"type": "boolean"},
    }
    if nullable:
        return {name: _nullable(schema) for name, schema in fields.items()}
    return fields


def _schemas() -> dict[str, Schema]:
    str_or_null = {"type": ["string", "null"]}
    statuses = {"enum": list(DeliveryStatus)}
    counts = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    return {
        "Error": _object(
            {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": _object({"path": {"type": "string"}, "message": {"type": "string"}}, ("path", "message")),
                },
            },
            ("code", "message", "details"),
        ),
        "ErrorEnvelope": _object({"success": {"const": False}, "error": _ref("Error")}, ("success", "error")),
        "Attempt": _object(
            {
                "number": {"type": "integer", "minimum": 1},
                "started_at": _TIME,
                "duration_ms": {"type": "number", "minimum": 0},
                "status_code": {"type": ["integer", "null"]},
                "error": {"enum": [*ErrorKind, None]},
                "error_detail": str_or_null,
                "response_body": str_or_null,
                "next_attempt_at": _nullable(_TIME),
            },
            ("number", "started_at", "duration_ms", "status_code", "error", "error_detail", "response_body"),
        ),
        "Delivery": _object(
            {
                "id": {"type": "string"},
                "event_id": {"type": "string"},
                "webhook_id": {"type": "string"},
                "status": statuses,
                "attempt_count": {"type": "integer", "minimum": 0},
                "next_attempt_at": _nullable(_TIME),
                "created_at": _TIME,
                "updated_at": _TIME,
                "attempts": {"type": "array", "items": _ref("Attempt")},
            },
            ("id", "event_id", "webhook_id", "status", "attempt_count", "next_attempt_at", "created_at", "updated_at"),
        ),
        "Event": _object(
            {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "created_at": _TIME,
                "ingested_at": _TIME,
                "data": {"type": ["object", "array"]},
                "deliveries": {"type": "array", "items": _ref("Delivery")},
            },
            ("id", "type", "created_at", "data"),
        ),
        "EventInput": _object(
            {
                "type": {"type": "string", "pattern": _ID},
                "data": {"type": ["object", "array"]},
                "id": {"type": "string", "pattern": _ID},
                "created_at": {"type": "string", "format": "date-time"},
            },
            ("type", "data"),
        ),
        "IngestResult": _object(
            {"id": {"type": "string"}, "deliveries": {"type": "integer", "minimum": 0}}, ("id", "deliveries")
        ),
        "Webhook": _object(
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
                "auth": _nullable(
                    _object(
                        {"type": {"enum": ["bearer", "header", "basic", "oauth2"]}},
                        ("type",),
                    )
                ),
                "is_active": {"type": "boolean"},
                "source": {"enum": ["config", "api"]},
                "created_at": _nullable(_TIME),
                "previous_secret_until": _nullable(_TIME),
                "secret": {
                    "type": "string",
                    "description": "Only in the answers to creation and rotation: shown once",
                },
            },
            ("id", "url", "events", "signature", "format", "is_active", "source", "created_at"),
        ),
        "WebhookCreate": _object({**_webhook_fields(nullable=False), "secret": _SECRET_INPUT}, ("url",), closed=True),
        "WebhookPatch": {
            **_object(_webhook_fields(nullable=True), closed=True),
            "description": "A JSON merge patch (RFC 7396): null removes a field, objects merge",
        },
        "RotateSecret": _object(
            {
                "overlap": {**_DURATION, "description": "How long the previous secret keeps signing (default 24h)"},
                "secret": _SECRET_INPUT,
            },
            closed=True,
        ),
        "TestResult": {
            "allOf": [
                _ref("Attempt"),
                _object({"event_id": {"type": "string"}, "succeeded": {"type": "boolean"}}, ("event_id", "succeeded")),
            ]
        },
        "Replay": _object({"webhook_id": {"type": "string", "minLength": 1}}, closed=True),
        "Redrive": _object(
            {"webhook_id": {"type": "string", "minLength": 1}, "include_dead": {"type": "boolean"}}, closed=True
        ),
        "Stats": _object(
            {"deliveries": counts, "webhooks": {"type": "object", "additionalProperties": counts}},
            ("deliveries", "webhooks"),
        ),
        "ListMeta": _object({"next_cursor": str_or_null}, ("next_cursor",)),
    }


def _envelope(data: Schema, *, meta: Schema | None = None) -> Schema:
    properties: dict[str, Schema] = {"success": {"const": True}, "data": data}
    if meta is not None:
        properties["meta"] = meta
    return _object(properties, ("success", "data") + (("meta",) if meta is not None else ()))


def _answer(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    meaning = {
        400: "Invalid JSON or a wrong field (details name each path)",
        401: "No or wrong API key",
        404: "No such object",
        409: "The webhook is declared in the configuration file",
        413: "Body larger than server.max_body_size, or batch over server.max_batch",
        415: "The body is not JSON",
        503: "Shutting down, or the store cannot write",
    }
    answers = {str(s): _answer(meaning[s], _ref("ErrorEnvelope")) for s in (401, *statuses)}
    answers["default"] = _answer("Any other error, in the same envelope", _ref("ErrorEnvelope"))
    return answers


def _body(schema: Schema, *, required: bool) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_WEBHOOK_ID = _path("webhook_id", "A webhook's id")
_EVENT_ID = _path("event_id", "An event's id")
_PAGE = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Items per page (default 50, at most 500)"),
    _query("cursor", {"type": "string"}, "meta.next_cursor of the previous page"),
]


def _paths() -> dict[str, Schema]:
    webhook = _envelope(_ref("Webhook"))
    with_secret = _envelope(_ref("Webhook"), meta=_object({"message": {"type": "string"}}, ("message",)))
    ingest = _ref("IngestResult")
    return {
        "/v1/events": {
            "post": {
                "operationId": "ingestEvents",
                "summary": "Ingest one event or a batch (all or nothing)",
                "requestBody": _body(
                    {"oneOf": [_ref("EventInput"), {"type": "array", "items": _ref("EventInput")}]}, required=True
                ),
                "responses": {
                    "202": _answer(
                        "Committed to the outbox", _envelope({"oneOf": [ingest, {"type": "array", "items": ingest}]})
                    ),
                    **_errors(400, 413, 415, 503),
                },
            }
        },
        "/v1/events/{event_id}": {
            "get": {
                "operationId": "getEvent",
                "summary": "An event with every delivery and attempt",
                "parameters": [_EVENT_ID],
                "responses": {"200": _answer("The event", _envelope(_ref("Event"))), **_errors(404)},
            }
        },
        "/v1/events/{event_id}/replay": {
            "post": {
                "operationId": "replayEvent",
                "summary": "New deliveries of an event: to every webhook it matches now, or to one",
                "parameters": [_EVENT_ID],
                "requestBody": _body(_ref("Replay"), required=False),
                "responses": {
                    "202": _answer(
                        "The new deliveries",
                        _envelope(
                            _object({"deliveries": {"type": "array", "items": _ref("Delivery")}}, ("deliveries",))
                        ),
                    ),
                    **_errors(400, 404, 415),
                },
            }
        },
        "/v1/webhooks": {
            "post": {
                "operationId": "createWebhook",
                "summary": "Create a webhook; its secret is shown in this answer only",
                "requestBody": _body(_ref("WebhookCreate"), required=True),
                "responses": {"201": _answer("The new webhook, with its secret", with_secret), **_errors(400, 415)},
            },
            "get": {
                "operationId": "listWebhooks",
                "summary": "Every webhook, newest first",
                "parameters": _PAGE,
                "responses": {
                    "200": _answer(
                        "A page of webhooks",
                        _envelope({"type": "array", "items": _ref("Webhook")}, meta=_ref("ListMeta")),
                    ),
                    **_errors(400),
                },
            },
        },
        "/v1/webhooks/{webhook_id}": {
            "get": {
                "operationId": "getWebhook",
                "parameters": [_WEBHOOK_ID],
                "responses": {"200": _answer("The webhook", webhook), **_errors(404)},
            },
            "patch": {
                "operationId": "updateWebhook",
                "summary": "Change fields (a JSON merge patch), is_active included",
                "parameters": [_WEBHOOK_ID],
                "requestBody": _body(_ref("WebhookPatch"), required=True),
                "responses": {"200": _answer("The changed webhook", webhook), **_errors(400, 404, 409, 415)},
            },
            "delete": {
                "operationId": "deleteWebhook",
                "summary": "Delete a webhook; its unfinished deliveries are cancelled (and kept)",
                "parameters": [_WEBHOOK_ID],
                "responses": {"204": {"description": "Deleted"}, **_errors(404, 409)},
            },
        },
        "/v1/webhooks/{webhook_id}/rotate-secret": {
            "post": {
                "operationId": "rotateWebhookSecret",
                "summary": "A new secret, shown once; the previous one keeps signing during the overlap",
                "parameters": [_WEBHOOK_ID],
                "requestBody": _body(_ref("RotateSecret"), required=False),
                "responses": {
                    "200": _answer("The webhook, with its new secret", with_secret),
                    **_errors(400, 404, 409, 415),
                },
            }
        },
        "/v1/webhooks/{webhook_id}/test": {
            "post": {
                "operationId": "testWebhook",
                "summary": "Send a webhook.test event to this webhook alone, now; not stored, not retried",
                "parameters": [_WEBHOOK_ID],
                "responses": {"200": _answer("The attempt", _envelope(_ref("TestResult"))), **_errors(404)},
            }
        },
        "/v1/webhooks/{webhook_id}/deliveries": {
            "get": {
                "operationId": "listWebhookDeliveries",
                "summary": "A webhook's deliveries with their attempts, newest first",
                "parameters": [
                    _WEBHOOK_ID,
                    _query("status", {"enum": list(DeliveryStatus)}, "Only this status"),
                    *_PAGE,
                ],
                "responses": {
                    "200": _answer(
                        "A page of deliveries",
                        _envelope({"type": "array", "items": _ref("Delivery")}, meta=_ref("ListMeta")),
                    ),
                    **_errors(400, 404),
                },
            }
        },
        "/v1/failures/redrive": {
            "post": {
                "operationId": "redriveFailures",
                "summary": "Parked (and, if asked, dead) deliveries are attempted again now",
                "requestBody": _body(_ref("Redrive"), required=False),
                "responses": {
                    "200": _answer(
                        "How many were re-driven",
                        _envelope(_object({"redriven": {"type": "integer", "minimum": 0}}, ("redriven",))),
                    ),
                    **_errors(400, 404, 415),
                },
            }
        },
        "/v1/stats": {
            "get": {
                "operationId": "getStats",
                "summary": "Delivery counts by status, in all and per webhook",
                "responses": {"200": _answer("The counts", _envelope(_ref("Stats"))), **_errors()},
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document (no key needed)",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {}}}},
            }
        },
    }


def openapi_document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay",
            "version": __version__,
            "description": "Ingest events into relay's durable outbox and manage webhooks, deliveries and re-drives.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "One of server.api_keys"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
