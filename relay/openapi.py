"""The OpenAPI 3.1 document of the ingest (CONTRACT §4) and management (§5) APIs, served at
``GET /v1/openapi.json`` without a key. ``tests/integration/test_openapi.py`` runs schemathesis against a running
relay with it, so it stays true: a response that breaks it fails the build. The schemas are in
``relay.openapi_schemas``.
"""

from __future__ import annotations

from relay import __version__
from relay.models import DeliveryStatus
from relay.openapi_schemas import ID, TENANT, TIME, Schema, obj, ref, schemas


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
        403: "A tenant key on a route for admin keys only",
        404: "No such object (or one of another tenant, for a tenant key)",
        409: "A conflict: the webhook is declared in the configuration file, a tenant's quota is reached, an event "
        "id is another tenant's, the dashboard is off, or the delivery to cancel has ended or is being attempted",
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
_DELIVERY_ID = _path("delivery_id", "A delivery's id")
_TENANT = {**_path("tenant", "A tenant's id"), "schema": {"type": "string", "pattern": TENANT}}
_KEY_ID = _path("key_id", "A tenant key's id")
_TENANT_FILTER = _query(
    "tenant",
    {"type": "string", "pattern": TENANT},
    "Only this tenant's (admin keys; a tenant key may name only its own tenant)",
)
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
                    **_errors(400, 409, 413, 415, 503),
                },
            },
            "get": {
                "operationId": "listEvents",
                "summary": "Events newest first (as ingested), without their data, each with its number of deliveries",
                "parameters": [
                    _query("type", {"type": "string", "pattern": ID}, "Only events of this type (exact)"),
                    _TENANT_FILTER,
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
                "responses": {
                    "201": _answer("The new webhook, with its secret", with_secret),
                    **_errors(400, 409, 415),
                },
            },
            "get": {
                "operationId": "listWebhooks",
                "summary": "Every webhook, newest first",
                "parameters": [_TENANT_FILTER, *_PAGE],
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
                    _TENANT_FILTER,
                    _STATUS,
                    *_WINDOW,
                    *_PAGE,
                ],
                "responses": {"200": _list("A page of deliveries", "Delivery"), **_errors(400)},
            }
        },
        "/v1/deliveries/{delivery_id}/cancel": {
            "post": {
                "operationId": "cancelDelivery",
                "summary": "Cancel a pending or parked delivery (kept, as cancelled); an ordering key it held moves on",
                "parameters": [_DELIVERY_ID],
                "responses": {
                    "200": _answer("The delivery, now cancelled", _envelope(ref("Delivery"))),
                    **_errors(404, 409),
                },
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
                "parameters": [_TENANT_FILTER],
                "responses": {"200": _answer("The counts", _envelope(ref("Stats"))), **_errors(400)},
            }
        },
        **_tenant_paths(),
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document (no key needed)",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {}}}},
            }
        },
    }


def _tenant_paths() -> dict[str, Schema]:
    """CONTRACT §9: routes for admin keys only (a tenant key gets 403 on each)."""
    key = ref("TenantKey")
    return {
        "/v1/tenants": {
            "get": {
                "operationId": "listTenants",
                "summary": "Every tenant (one exists while it has webhooks or keys), with its counts",
                "responses": {
                    "200": _answer("The tenants", _envelope({"type": "array", "items": ref("Tenant")})),
                    **_errors(403),
                },
            }
        },
        "/v1/tenants/{tenant}": {
            "get": {
                "operationId": "getTenant",
                "parameters": [_TENANT],
                "responses": {"200": _answer("The tenant", _envelope(ref("Tenant"))), **_errors(400, 403, 404)},
            },
            "delete": {
                "operationId": "deleteTenant",
                "summary": "Offboard a tenant: its webhooks removed (unfinished deliveries cancelled), its keys "
                "revoked, its portal links ended",
                "parameters": [_TENANT],
                "responses": {"204": {"description": "Deleted"}, **_errors(400, 403, 404, 409)},
            },
        },
        "/v1/tenants/{tenant}/keys": {
            "post": {
                "operationId": "createTenantKey",
                "summary": "A new key of the tenant, shown in this answer only",
                "parameters": [_TENANT],
                "requestBody": _body(ref("TenantKeyCreate"), required=False),
                "responses": {
                    "201": _answer(
                        "The new key, with the key itself",
                        _envelope(key, meta=obj({"message": {"type": "string"}}, ("message",))),
                    ),
                    **_errors(400, 403, 415),
                },
            },
            "get": {
                "operationId": "listTenantKeys",
                "summary": "The tenant's keys, oldest first (never the keys themselves)",
                "parameters": [_TENANT],
                "responses": {
                    "200": _answer("The keys", _envelope({"type": "array", "items": key})),
                    **_errors(400, 403, 404),
                },
            },
        },
        "/v1/tenants/{tenant}/keys/{key_id}": {
            "delete": {
                "operationId": "revokeTenantKey",
                "summary": "Revoke a key: refused from the next request on",
                "parameters": [_TENANT, _KEY_ID],
                "responses": {"204": {"description": "Revoked"}, **_errors(400, 403, 404)},
            }
        },
        "/v1/tenants/{tenant}/portal": {
            "post": {
                "operationId": "createPortalLink",
                "summary": "A signed, expiring link that opens the dashboard as the tenant",
                "parameters": [_TENANT],
                "requestBody": _body(ref("PortalCreate"), required=False),
                "responses": {
                    "201": _answer("The link", _envelope(ref("PortalLink"))),
                    **_errors(400, 403, 404, 409, 415),
                },
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
