"""Calls to the management API of an in-process relay (``running_relay``), for integration tests."""

from __future__ import annotations

from typing import Any

import orjson

from tests.support.relay_harness import API_KEY, RunningRelay

NO_BODY = object()


async def call(
    relay: RunningRelay,
    method: str,
    path: str,
    body: Any = NO_BODY,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    key: str | None = API_KEY,
) -> tuple[int, Any]:
    """One request; returns (status, parsed JSON body or None for an empty one)."""
    sent = {"Authorization": f"Bearer {key}"} if key is not None else {}
    data = raw
    if body is not NO_BODY:
        data = orjson.dumps(body)
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    async with relay.http.request(method, f"{relay.url}{path}", data=data, headers=sent) as response:
        payload = await response.read()
        return response.status, orjson.loads(payload) if payload else None


async def create_webhook(relay: RunningRelay, **fields: Any) -> dict[str, Any]:
    status, answer = await call(relay, "POST", "/v1/webhooks", fields)
    assert status == 201, answer
    created: dict[str, Any] = answer["data"]
    return created


def error_of(answer: dict[str, Any]) -> tuple[str, list[str]]:
    """The error code and the paths its details name."""
    assert answer["success"] is False
    return answer["error"]["code"], [d["path"] for d in answer["error"]["details"]]
