"""The OpenAPI 3.1 document of the ingest (CONTRACT §4) and management (§5) APIs, served at
``GET /v1/openapi.json`` without a key. ``tests/integration/test_openapi.py`` runs schemathesis against a running
relay with it, so it stays true: a response that breaks it fails the build. The schemas are in
``relay.openapi_schemas``.
"""

from __future__ import annotations

from relay import __version__
from relay.models import DeliveryStatus
from relay.openapi_schemas import ID, TIME, Schema, obj, ref, schemas


def _envelope(data: Schema, *, meta: Schema | None = None) -> Schema:
    properties: dict[str, Schema] = {"success": {"const": True}, "data": data}
    if meta is not None:
        properties["meta"] = meta
    return obj(properties, ("success", "data") + (("meta",) if meta is not None else ()))


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
    answers = {str(s): _answer(meaning[s], ref("ErrorEnvelope")) for s in (401, *statuses)}
    answers["default"] = _answer("Any other error, in the same envelope", ref("ErrorEnvelope"))
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
_WINDOW = [
    _query("since", TIME, "Only those created at or after this RFC 3339 time (inclusive)"),
    _query("until", TIME, "Only those created before this RFC 3339 time (exclusive); not before since"),
]
_STATUS = _query("status", {"enum": list(DeliveryStatus)}, "Only this status")


def _list(description: str, item: str) -> Schema:
    return _answer(description, _envelope({"type": "array", "items": ref(item)}, meta=ref("ListMeta")))


def _paths() -> dict[str, Schema]:
    webhook = _envelope(ref("Webhook"))
    with_secret = _envelope(ref("Webhook"), meta=obj({"message": {"type": "string"}}, ("message",)))
    ingest = ref("IngestResult")
    return {
        "/v1/events": {
            "post": {
                "operationId": "ingestEvents",
                "summary": "Ingest one event or a batch (all or nothing)",
                "requestBody": _body(
                    {"oneOf": [ref("EventInput"), {"type": "array", "items": ref("EventInput")}]}, required=True
                ),
                "responses": {
                    "202": _answer(
                        "Committed to the outbox", _envelope({"oneOf": [ingest, {"type": "array", "items": ingest}]})
                    ),
                    **_errors(400, 413, 415, 503),
                },
            },
            "get": {
                "operationId": "listEvents",
                "summary": "Events newest first (as ingested), without their data, each with its number of deliveries",
                "parameters": [
                    _query("type", {"type": "string", "pattern": ID}, "Only events of this type (exact)"),
                    *_WINDOW,
                    *_PAGE,
                ],
                "responses": {"200": _list("A page of events", "EventSummary"), **_errors(400)},
            },
        },
        "/v1/events/{event_id}": {
            "get": {
                "operationId": "getEvent",
                "summary": "An event with every delivery and attempt",
                "parameters": [_EVENT_ID],
                "responses": {"200": _answer("The event", _envelope(ref("Event"))), **_errors(404)},
            }
        },
        "/v1/events/{event_id}/replay": {
            "post": {
                "operationId": "replayEvent",
                "summary": "New deliveries of an event: to every webhook it matches now, or to one",
                "parameters": [_EVENT_ID],
                "requestBody": _body(ref("Replay"), required=False),
                "responses": {
                    "202": _answer(
                        "The new deliveries",
                        _envelope(obj({"deliveries": {"type": "array", "items": ref("Delivery")}}, ("deliveries",))),
                    ),
                    **_errors(400, 404, 415),
                },
            }
        },
        "/v1/webhooks": {
            "post": {
                "operationId": "createWebhook",
                "summary": "Create a webhook; its secret is shown in this answer only",
                "requestBody": _body(ref("WebhookCreate"), required=True),
                "responses": {"201": _answer("The new webhook, with its secret", with_secret), **_errors(400, 415)},
            },
            "get": {
                "operationId": "listWebhooks",
                "summary": "Every webhook, newest first",
                "parameters": _PAGE,
                "responses": {
                    "200": _answer(
                        "A page of webhooks",
                        _envelope({"type": "array", "items": ref("Webhook")}, meta=ref("ListMeta")),
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
                "requestBody": _body(ref("WebhookPatch"), required=True),
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
                "requestBody": _body(ref("RotateSecret"), required=False),
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
                "responses": {"200": _answer("The attempt", _envelope(ref("TestResult"))), **_errors(404)},
            }
        },
        "/v1/webhooks/{webhook_id}/deliveries": {
            "get": {
                "operationId": "listWebhookDeliveries",
                "summary": "A webhook's deliveries with their attempts, newest first",
                "parameters": [_WEBHOOK_ID, _STATUS, *_WINDOW, *_PAGE],
                "responses": {"200": _list("A page of deliveries", "Delivery"), **_errors(400, 404)},
            }
        },
        "/v1/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "summary": "Deliveries of every webhook with their attempts, newest first",
                "parameters": [
                    _query(
                        "webhook_id",
                        {"type": "string", "minLength": 1},
                        "Only this webhook's (an id no webhook has lists nothing)",
                    ),
                    _STATUS,
                    *_WINDOW,
                    *_PAGE,
                ],
                "responses": {"200": _list("A page of deliveries", "Delivery"), **_errors(400)},
            }
        },
        "/v1/failures/redrive": {
            "post": {
                "operationId": "redriveFailures",
                "summary": "Parked (and, if asked, dead) deliveries are attempted again now",
                "requestBody": _body(ref("Redrive"), required=False),
                "responses": {
                    "200": _answer(
                        "How many were re-driven",
                        _envelope(obj({"redriven": {"type": "integer", "minimum": 0}}, ("redriven",))),
                    ),
                    **_errors(400, 404, 415),
                },
            }
        },
        "/v1/stats": {
            "get": {
                "operationId": "getStats",
                "summary": "Delivery counts by status, in all and per webhook",
                "responses": {"200": _answer("The counts", _envelope(ref("Stats"))), **_errors()},
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
            "schemas": schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "One of server.api_keys"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
