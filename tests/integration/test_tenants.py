"""Tenants (CONTRACT §9) end to end, against a running relay on a real SQLite file (and, for scoping, on
PostgreSQL) with real receivers: tenant keys, matching by tenant, the tenant on events and webhooks, quotas,
the admin's views, offboarding, portal links into ``/ui/``, and a walk over every route of the OpenAPI document
with one tenant's key and another tenant's ids (time moved by a FakeClock)."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from relay.api import build_app
from relay.clock import FakeClock
from relay.config import Config, StorageConfig, TenantsConfig, UiConfig
from relay.models import Secret, Webhook
from tests.support.management import NO_BODY, call, error_of
from tests.support.receiver import Receiver, Reply
from tests.support.relay_harness import RunningRelay, make_config, poll_until, running_relay, webhook

T0 = 1_750_000_000.0
A, B = "tenant-alpha", "tenant-bravo"


def config_of(tmp_path: Path, hooks: list[Webhook], **changes: Any) -> Config:
    return replace(make_config(tmp_path, hooks), **changes)


@contextlib.asynccontextmanager
async def relay_with(
    tmp_path: Path, hooks: list[Webhook], *, postgres_url: str | None = None, **changes: Any
) -> AsyncIterator[RunningRelay]:
    config = config_of(tmp_path, hooks, **changes)
    if postgres_url is not None:
        config = replace(config, storage=StorageConfig(url=Secret(postgres_url), pool_size=4))
    async with running_relay(tmp_path, [], config=config, clock=FakeClock(T0)) as relay:
        yield relay


async def new_key(relay: RunningRelay, tenant: str, description: str | None = None) -> dict[str, Any]:
    status, answer = await call(relay, "POST", f"/v1/tenants/{tenant}/keys", {"description": description})
    assert status == 201, answer
    created: dict[str, Any] = answer["data"]
    return created


async def new_webhook(relay: RunningRelay, key: str | None = None, **fields: Any) -> dict[str, Any]:
    status, answer = await call(relay, "POST", "/v1/webhooks", fields, **({"key": key} if key else {}))
    assert status == 201, answer
    created: dict[str, Any] = answer["data"]
    return created


async def ingest(relay: RunningRelay, body: Any, key: str | None = None) -> tuple[int, Any]:
    return await call(relay, "POST", "/v1/events", body, **({"key": key} if key else {}))


def delivered_to(event: dict[str, Any]) -> list[str]:
    return sorted(d["webhook_id"] for d in event["deliveries"])


# -- keys -----------------------------------------------------------------------------------------------------


async def test_a_tenant_key_is_shown_once_listed_by_prefix_and_refused_once_revoked(tmp_path: Path) -> None:
    async with relay_with(tmp_path, []) as relay:
        status, answer = await call(relay, "POST", f"/v1/tenants/{A}/keys", {"description": "ci"})
        assert status == 201 and answer["meta"]["message"]
        created = answer["data"]
        text = created["key"]
        assert text.startswith("rk_") and len(text) == 46 and created["prefix"] == text[:11]
        assert created["id"].startswith("key_") and created["tenant"] == A
        assert created["description"] == "ci" and created["last_used_at"] is None
        assert created["created_at"].endswith("Z")

        status, listed = await call(relay, "GET", f"/v1/tenants/{A}/keys")
        assert status == 200
        assert listed["data"] == [{k: v for k, v in created.items() if k != "key"}]

        relay.advance(5)
        status, answer = await call(relay, "GET", "/v1/webhooks", key=text)
        assert status == 200 and answer["data"] == []
        _, listed = await call(relay, "GET", f"/v1/tenants/{A}/keys")
        assert listed["data"][0]["last_used_at"] == "2025-06-15T15:06:45.000Z"  # T0 + 5

        later = [
            await call(relay, "GET", path) for path in ("/v1/tenants", f"/v1/tenants/{A}", f"/v1/tenants/{A}/keys")
        ]
        assert all(status == 200 for status, _ in later)
        assert text not in orjson.dumps(later).decode()

        status, _ = await call(relay, "DELETE", f"/v1/tenants/{A}/keys/{created['id']}")
        assert status == 204
        status, answer = await call(relay, "GET", "/v1/webhooks", key=text)
        assert status == 401 and answer["error"]["code"] == "unauthorized"
        status, _ = await call(relay, "DELETE", f"/v1/tenants/{A}/keys/{created['id']}")
        assert status == 404
        for garbage in ("rk_" + "x" * 43, "rk_", "nonsense", text[:-1]):
            status, answer = await call(relay, "GET", "/v1/webhooks", key=garbage)
            assert status == 401 and answer["error"]["code"] == "unauthorized", garbage
        status, _ = await ingest(relay, {"type": "t", "data": {}}, key=text)
        assert status == 401


# -- matching, and the tenant of events and webhooks ------------------------------------------------------------


async def test_events_go_to_their_tenants_webhooks_and_platform_wide_ones(tmp_path: Path, receiver: Receiver) -> None:
    async with relay_with(tmp_path, [webhook(receiver.url("/platform"), id="platform")]) as relay:
        key_a, key_b = (await new_key(relay, A))["key"], (await new_key(relay, B))["key"]
        hook_a = await new_webhook(relay, key_a, url=receiver.url("/a"))
        hook_b = await new_webhook(relay, url=receiver.url("/b"), tenant=B)  # an admin names the tenant
        assert (hook_a["tenant"], hook_b["tenant"]) == (A, B)

        status, answer = await ingest(relay, {"id": "of-a", "type": "t", "data": {}, "tenant": A})
        assert status == 202 and answer["data"]["deliveries"] == 2
        status, _ = await ingest(relay, {"id": "of-none", "type": "t", "data": {}})
        assert status == 202
        status, answer = await ingest(relay, {"id": "by-b", "type": "t", "data": {}}, key=key_b)
        assert status == 202 and answer["data"]["deliveries"] == 2

        of_a, of_none, by_b = [await relay.event(e) for e in ("of-a", "of-none", "by-b")]
        assert (of_a["tenant"], of_none["tenant"], by_b["tenant"]) == (A, None, B)
        assert delivered_to(of_a) == sorted([hook_a["id"], "platform"])
        assert delivered_to(of_none) == ["platform"]
        assert delivered_to(by_b) == sorted([hook_b["id"], "platform"])

        await receiver.wait_for(5)
        assert sorted(r.headers["x-event-id"] for r in receiver.requests_to("/platform")) == ["by-b", "of-a", "of-none"]
        assert [r.headers["x-event-id"] for r in receiver.requests_to("/a")] == ["of-a"]
        assert [r.headers["x-event-id"] for r in receiver.requests_to("/b")] == ["by-b"]


async def test_the_tenant_an_event_names_is_checked(tmp_path: Path) -> None:
    async with relay_with(tmp_path, []) as relay:
        key_b = (await new_key(relay, B))["key"]
        status, answer = await ingest(relay, {"type": "t", "data": {}, "tenant": A}, key=key_b)
        assert status == 400 and error_of(answer) == ("validation_error", ["tenant"])
        batch = [{"type": "t", "data": {}, "tenant": B}, {"type": "t", "data": {}, "tenant": A}]
        status, answer = await ingest(relay, batch, key=key_b)
        assert status == 400 and error_of(answer) == ("validation_error", ["[1].tenant"])
        for bad in ("has space", "", "x" * 65, 7):
            status, answer = await ingest(relay, {"type": "t", "data": {}, "tenant": bad})
            assert status == 400 and error_of(answer) == ("validation_error", ["tenant"]), bad
        status, answer = await ingest(relay, [{"type": "t", "data": {}}, {"type": "t", "data": {}, "tenant": "a/b"}])
        assert status == 400 and error_of(answer) == ("validation_error", ["[1].tenant"])
        status, answer = await call(relay, "GET", "/v1/events")
        assert answer["data"] == []  # all or nothing


async def test_an_event_id_of_another_tenant_is_a_conflict_that_stores_nothing(tmp_path: Path) -> None:
    async with relay_with(tmp_path, [webhook("http://127.0.0.1:9/p", id="platform")]) as relay:
        key_b = (await new_key(relay, B))["key"]
        status, _ = await ingest(relay, {"id": "shared", "type": "t", "data": {}, "tenant": A})
        assert status == 202
        status, answer = await ingest(relay, {"id": "shared", "type": "t", "data": {"n": 2}}, key=key_b)
        assert status == 409 and error_of(answer) == ("conflict", ["id"])
        batch = [{"id": "fresh", "type": "t", "data": {}}, {"id": "shared", "type": "t", "data": {}}]
        status, answer = await ingest(relay, batch, key=key_b)
        assert status == 409 and error_of(answer) == ("conflict", ["[1].id"])
        status, _ = await call(relay, "GET", "/v1/events/fresh")
        assert status == 404
        status, answer = await call(relay, "GET", "/v1/events")
        assert [e["id"] for e in answer["data"]] == ["shared"]
        shared = await relay.event("shared")
        assert shared["tenant"] == A and shared["data"] == {} and len(shared["deliveries"]) == 1
        # An event of no tenant is not a tenant key's either; its own re-post is the idempotent 202.
        await ingest(relay, {"id": "nobodys", "type": "t", "data": {}})
        status, _ = await ingest(relay, {"id": "nobodys", "type": "t", "data": {}}, key=key_b)
        assert status == 409
        status, answer = await ingest(relay, {"id": "mine", "type": "t", "data": {}}, key=key_b)
        again = await ingest(relay, {"id": "mine", "type": "t", "data": {}}, key=key_b)
        assert status == 202 and again == (202, answer)


async def test_a_tenant_keys_webhooks_are_its_tenants(tmp_path: Path) -> None:
    async with relay_with(tmp_path, []) as relay:
        key_a = (await new_key(relay, A))["key"]
        hook = await new_webhook(relay, key_a, url="http://127.0.0.1:9/a")
        assert hook["tenant"] == A
        assert (await new_webhook(relay, key_a, url="http://127.0.0.1:9/a", tenant=A))["tenant"] == A
        status, answer = await call(relay, "POST", "/v1/webhooks", {"url": "http://x.test/", "tenant": B}, key=key_a)
        assert status == 400 and error_of(answer) == ("validation_error", ["tenant"])
        status, answer = await call(relay, "POST", "/v1/webhooks", {"url": "http://x.test/", "tenant": "a b"})
        assert status == 400 and "tenant" in error_of(answer)[1]
        for who in (key_a, None):
            status, answer = await call(
                relay, "PATCH", f"/v1/webhooks/{hook['id']}", {"tenant": B}, **({"key": who} if who else {})
            )
            assert status == 400 and error_of(answer) == ("validation_error", ["tenant"])
        status, answer = await call(relay, "PATCH", f"/v1/webhooks/{hook['id']}", {"tenant": None})
        assert status == 400 and error_of(answer) == ("validation_error", ["tenant"])
        status, answer = await call(relay, "GET", f"/v1/webhooks/{hook['id']}")
        assert answer["data"]["tenant"] == A


async def test_a_tenant_gets_no_more_webhooks_than_its_quota(tmp_path: Path) -> None:
    declared = [webhook("http://127.0.0.1:9/c", id="declared", tenant=A)]
    async with relay_with(tmp_path, declared, tenants=TenantsConfig(max_webhooks=3)) as relay:
        key_a = (await new_key(relay, A))["key"]
        await new_webhook(relay, key_a, url="http://127.0.0.1:9/1")
        await new_webhook(relay, url="http://127.0.0.1:9/2", tenant=A)
        for who in (key_a, None):
            status, answer = await call(
                relay,
                "POST",
                "/v1/webhooks",
                {"url": "http://127.0.0.1:9/3", "tenant": A},
                **({"key": who} if who else {}),
            )
            assert status == 409 and answer["error"]["code"] == "conflict"
        await new_webhook(relay, url="http://127.0.0.1:9/b", tenant=B)  # another tenant's quota is its own
        await new_webhook(relay, url="http://127.0.0.1:9/p")  # platform-wide ones have none
        status, answer = await call(relay, "GET", f"/v1/tenants/{A}")
        assert answer["data"]["webhooks"] == 3


# -- the admin's views ------------------------------------------------------------------------------------------


async def test_tenants_are_counted_and_admin_lists_filter_by_tenant(tmp_path: Path, receiver: Receiver) -> None:
    async with relay_with(tmp_path, [webhook(receiver.url("/p"), id="platform")]) as relay:
        await new_key(relay, A)
        await new_key(relay, A)
        hook_a = await new_webhook(relay, url=receiver.url("/a"), tenant=A)
        hook_b = await new_webhook(relay, url=receiver.url("/b"), tenant=B)
        for event_id, tenant in (("ea", A), ("eb", B), ("e0", None)):
            await ingest(relay, {"id": event_id, "type": "t", "data": {}, **({"tenant": tenant} if tenant else {})})
        await receiver.wait_for(5)
        await poll_until(lambda: _all_succeeded(relay))

        status, answer = await call(relay, "GET", "/v1/tenants")
        assert status == 200
        assert answer["data"] == [
            {"id": A, "webhooks": 1, "keys": 2, "deliveries": {"succeeded": 1}},
            {"id": B, "webhooks": 1, "keys": 0, "deliveries": {"succeeded": 1}},
        ]
        status, answer = await call(relay, "GET", f"/v1/tenants/{B}")
        assert status == 200 and answer["data"]["id"] == B

        async def ids(path: str) -> list[str]:
            status, answer = await call(relay, "GET", path)
            assert status == 200, answer
            return sorted(item["id"] for item in answer["data"])

        assert await ids(f"/v1/webhooks?tenant={A}") == [hook_a["id"]]
        assert await ids(f"/v1/events?tenant={A}") == ["ea"]
        _, answer = await call(relay, "GET", f"/v1/deliveries?tenant={A}")
        assert [(d["event_id"], d["webhook_id"]) for d in answer["data"]] == [("ea", hook_a["id"])]
        _, answer = await call(relay, "GET", f"/v1/stats?tenant={A}")
        assert list(answer["data"]["webhooks"]) == [hook_a["id"]] and answer["data"]["deliveries"]["succeeded"] == 1
        assert len(await ids("/v1/webhooks")) == 3 and len(await ids("/v1/events")) == 3
        assert hook_b["id"] in await ids(f"/v1/webhooks?tenant={B}")

        for path in ("/v1/tenants/bad%20id", "/v1/tenants/bad%20id/keys", f"/v1/tenants/{'x' * 65}"):
            status, answer = await call(relay, "GET", path)
            assert status == 400 and error_of(answer) == ("validation_error", ["tenant"]), path
        for path in ("/v1/webhooks", "/v1/events", "/v1/deliveries", "/v1/stats"):
            status, answer = await call(relay, "GET", f"{path}?tenant=bad%20id")
            assert status == 400 and error_of(answer) == ("validation_error", ["tenant"]), path
        for method, path in (
            ("GET", "/v1/tenants/nobody"),
            ("DELETE", "/v1/tenants/nobody"),
            ("GET", "/v1/tenants/nobody/keys"),
            ("DELETE", "/v1/tenants/nobody/keys/key_x"),
            ("POST", "/v1/tenants/nobody/portal"),
        ):
            status, answer = await call(relay, method, path)
            assert status == 404 and answer["error"]["code"] == "not_found", path


async def _all_succeeded(relay: RunningRelay) -> bool:
    _, answer = await call(relay, "GET", "/v1/stats")
    totals = answer["data"]["deliveries"]
    return bool(totals["succeeded"] == sum(totals.values()))


async def test_deleting_a_tenant_offboards_it_alone(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script("/a", [500] * 5)
    receiver.script("/b", [500] * 5)
    declared = [webhook("http://127.0.0.1:9/c", id="declared-c", tenant="tenant-c")]
    async with relay_with(tmp_path, declared) as relay:
        key_a, key_b = (await new_key(relay, A))["key"], (await new_key(relay, B))["key"]
        hook_a = await new_webhook(relay, key_a, url=receiver.url("/a"), retry_schedule=["1h", "1h"])
        hook_b = await new_webhook(relay, key_b, url=receiver.url("/b"), retry_schedule=["1h", "1h"])
        link = await _portal(relay, A)
        await ingest(relay, {"id": "ea", "type": "t", "data": {}}, key=key_a)
        await ingest(relay, {"id": "eb", "type": "t", "data": {}}, key=key_b)
        await receiver.wait_for(2)
        await poll_until(lambda: _attempted(relay, ["ea", "eb"]))

        status, _ = await call(relay, "DELETE", f"/v1/tenants/{A}")
        assert status == 204
        assert [d["status"] for d in (await relay.event("ea"))["deliveries"]] == ["cancelled"]
        assert [d["status"] for d in (await relay.event("eb"))["deliveries"]] == ["pending"]
        status, _ = await call(relay, "GET", f"/v1/webhooks/{hook_a['id']}")
        assert status == 404
        status, _ = await call(relay, "GET", f"/v1/webhooks/{hook_b['id']}")
        assert status == 200
        status, _ = await call(relay, "GET", "/v1/webhooks", key=key_a)
        assert status == 401
        status, _ = await call(relay, "GET", "/v1/webhooks", key=key_b)
        assert status == 200
        status, _ = await call(relay, "GET", f"/v1/tenants/{A}")
        assert status == 404
        status, answer = await call(relay, "GET", "/v1/tenants")
        assert [t["id"] for t in answer["data"]] == [B, "tenant-c"]
        async with relay.http.get(link, allow_redirects=False) as response:
            assert response.status == 401

        status, answer = await call(relay, "DELETE", "/v1/tenants/tenant-c")
        assert status == 409 and answer["error"]["code"] == "conflict" and "declared-c" in answer["error"]["message"]
        status, _ = await call(relay, "GET", "/v1/webhooks/declared-c")
        assert status == 200


async def _attempted(relay: RunningRelay, event_ids: list[str]) -> bool:
    for event_id in event_ids:
        [delivery] = (await relay.event(event_id))["deliveries"]
        if delivery["attempt_count"] < 1 or delivery["status"] != "pending":
            return False
    return True


# -- portal links -------------------------------------------------------------------------------------------


async def _portal(relay: RunningRelay, tenant: str, **body: Any) -> str:
    status, answer = await call(relay, "POST", f"/v1/tenants/{tenant}/portal", body)
    assert status == 201, answer
    url: str = answer["data"]["url"]
    return url


async def _open(relay: RunningRelay, link: str) -> str:
    """Open a portal link: the session cookie it sets (checked), to send back as a Cookie header."""
    async with relay.http.get(link, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/ui/"
        set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/ui/" in set_cookie
    return set_cookie.split(";", 1)[0]


async def _page(relay: RunningRelay, cookie: str | None, path: str = "/ui/webhooks") -> tuple[int, str]:
    """A dashboard page with this session cookie; 401 for the sign-in page it redirects to without a good one."""
    headers = {"Cookie": cookie} if cookie else {}
    async with relay.http.get(f"{relay.url}{path}", headers=headers, allow_redirects=False) as response:
        if response.status == 303 and response.headers["Location"] == "/ui/sign-in":
            return 401, ""
        return response.status, await response.text()


async def test_a_portal_link_opens_the_tenants_page_and_only_its_webhooks(tmp_path: Path) -> None:
    async with relay_with(tmp_path, [webhook("http://127.0.0.1:9/p", id="platform")]) as relay:
        hostile = "http://127.0.0.1:9/<script>alert(1)</script>"
        hook_a = await new_webhook(relay, url=hostile, tenant=A, description="<script>alert(2)</script>")
        hook_b = await new_webhook(relay, url="http://127.0.0.1:9/bravo-only", tenant=B)
        status, answer = await call(relay, "POST", f"/v1/tenants/{A}/portal", {"ttl": "10m"})
        assert status == 201 and answer["data"]["expires_at"] == "2025-06-15T15:16:40.000Z"
        link = answer["data"]["url"]
        assert link.startswith(f"{relay.url}/ui/?token=")

        cookie = await _open(relay, link)
        status, html = await _page(relay, cookie)
        assert status == 200
        assert A in html and hook_a["id"] in html
        assert hook_b["id"] not in html and "bravo-only" not in html and "platform" not in html
        assert "<script>" not in html and "&lt;script&gt;" in html and "<script>alert" not in html

        status, html = await _page(relay, None)
        assert status == 401 and A not in html
        token = link.split("token=", 1)[1]
        body, mac = token.split(".")
        forged = orjson.loads(_unb64(body)) | {"tenant": B}
        for tampered in (
            token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
            f"{_b64(orjson.dumps(forged))}.{mac}",
            "x",
        ):
            async with relay.http.get(f"{relay.url}/ui/?token={quote(tampered)}", allow_redirects=False) as response:
                assert response.status == 401 and "Set-Cookie" not in response.headers
        status, _ = await _page(relay, cookie.replace("relay_session=", "relay_session=x"))
        assert status == 401

        relay.advance(600)  # the link ends; so does its session
        async with relay.http.get(link, allow_redirects=False) as response:
            assert response.status == 401 and "Set-Cookie" not in response.headers
        status, _ = await _page(relay, cookie)
        assert status == 401


async def test_the_dashboard_off_answers_404(tmp_path: Path) -> None:
    async with relay_with(tmp_path, [], ui=UiConfig(enabled=False)) as relay:
        await new_key(relay, A)
        status, _ = await _page(relay, None)
        assert status == 404
        status, answer = await call(relay, "POST", f"/v1/tenants/{A}/portal", {})
        assert status == 409 and answer["error"]["code"] == "conflict"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- the route walk -----------------------------------------------------------------------------------------

# A minimal valid body for each operation that takes one. An operation the document gains without a body here
# fails the walk: add it.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/events"): {"type": "t", "data": {}},
    ("POST", "/v1/events/{event_id}/replay"): {},
    ("POST", "/v1/webhooks"): {"url": "http://127.0.0.1:9/walk"},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {"is_active": False},
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): {"overlap": "0s"},
    ("POST", "/v1/failures/redrive"): {"include_dead": True},
    ("POST", "/v1/tenants/{tenant}/keys"): {},
    ("POST", "/v1/tenants/{tenant}/portal"): {},
}
ADMIN_ONLY = "/v1/tenants"
PLATFORM = "platform-hook"  # the walk's platform-wide webhook: no tenant key may see it


@dataclass
class Objects:
    """Tenant A's objects, which tenant B's key must neither see nor touch."""

    webhook_id: str
    event_id: str
    key_id: str
    key: str
    delivery_ids: list[str]

    def path_values(self) -> dict[str, str]:
        return {
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "key_id": self.key_id,
            "tenant": A,
            "delivery_id": self.delivery_ids[0],
        }

    def secrets(self) -> list[str]:
        return [self.webhook_id, self.event_id, self.key_id, self.key, A, *self.delivery_ids]


async def _state_of_a(relay: RunningRelay, a: Objects) -> Any:
    """What an admin sees of A's objects."""
    answers = [
        await call(relay, "GET", f"/v1/webhooks/{a.webhook_id}"),
        await call(relay, "GET", f"/v1/events/{a.event_id}"),
        await call(relay, "GET", f"/v1/tenants/{A}/keys"),
        await call(relay, "GET", f"/v1/tenants/{A}"),
    ]
    assert all(status == 200 for status, _ in answers), answers
    return [answer["data"] for _, answer in answers]


async def _walk(relay: RunningRelay, receiver: Receiver) -> None:
    receiver.script("/a", [Reply(500)] * 20)
    key_a = await new_key(relay, A)
    key_b = (await new_key(relay, B))["key"]
    hook_a = await new_webhook(relay, key_a["key"], url=receiver.url("/a"), retry_schedule=["0s"])
    await new_webhook(relay, key_b, url=receiver.url("/b"))
    await ingest(relay, {"id": "event-of-a", "type": "t", "data": {}}, key=key_a["key"])
    await receiver.wait_for(2)
    await poll_until(lambda: _parked(relay, "event-of-a", hook_a["id"]))  # a failure B's re-drive must not touch
    event_a = await relay.event("event-of-a")
    a = Objects(hook_a["id"], "event-of-a", key_a["id"], key_a["key"], [d["id"] for d in event_a["deliveries"]])
    before = await _state_of_a(relay, a)
    sent_to_a = len(receiver.requests_to("/a"))

    status, document = await call(relay, "GET", "/v1/openapi.json", key=None)
    assert status == 200
    operations = [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    routes = {
        (r.method, r.resource.canonical)
        for r in build_app(relay.daemon.services, with_health=False).router.routes()  # type: ignore[arg-type]
        if r.resource is not None and r.resource.canonical.startswith("/v1/") and r.method != "HEAD"
    }
    assert routes == {(method, path) for method, path, _ in operations}, "the document and the app disagree"

    unknown: list[str] = []
    for method, path, operation in operations:
        if operation.get("security") == []:  # public: the document itself
            status, _ = await call(relay, method, path, key=key_b)
            assert status == 200, (method, path)
            continue
        names = re.findall(r"{(\w+)}", path)
        if any(name not in a.path_values() for name in names):
            unknown.append(f"{method} {path}: path parameters {names}")
            continue
        body = NO_BODY
        if "requestBody" in operation:
            if (method, path) not in BODIES:
                unknown.append(f"{method} {path}: no body in BODIES")
                continue
            body = BODIES[(method, path)]
        concrete = path.format(**a.path_values())
        status, answer = await call(relay, method, concrete, body, key=key_b)
        where = f"{method} {concrete}: {status} {answer}"
        if path.startswith(ADMIN_ONLY):
            assert status == 403 and answer["error"]["code"] == "forbidden", where
        elif names:
            assert status == 404 and answer["error"]["code"] == "not_found", where
            if "webhook_id" in names:  # a platform-wide webhook is not the tenant's either
                platform = path.format(**{**a.path_values(), "webhook_id": PLATFORM})
                status, answer = await call(relay, method, platform, body, key=key_b)
                assert status == 404 and answer["error"]["code"] == "not_found", f"{method} {platform}: {answer}"
        else:
            assert 200 <= status < 300, where
            shown = orjson.dumps(answer).decode()
            assert not [s for s in [*a.secrets(), PLATFORM] if s in shown], where
            queries = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            if "webhook_id" in queries:  # a list filtered by A's webhook lists nothing of it
                status, answer = await call(relay, method, f"{concrete}?webhook_id={a.webhook_id}", key=key_b)
                assert status == 200 and answer["data"] == [], where
            if "tenant" in queries:  # naming A is a 400, whatever A holds
                status, answer = await call(relay, method, f"{concrete}?tenant={A}", key=key_b)
                assert status == 400 and error_of(answer) == ("validation_error", ["tenant"]), where
    assert not unknown, f"the walk does not know how to call: {unknown}"

    after = await _state_of_a(relay, a)
    assert after == before  # A's webhook there and active, its secret not rotated, no replay, no re-drive, keys
    assert after[0]["is_active"] is True and len(after[1]["deliveries"]) == 2  # A's webhook's and the platform's
    assert await _parked(relay, a.event_id, a.webhook_id)
    assert len(receiver.requests_to("/a")) == sent_to_a  # no test send, no re-drive reached A's endpoint
    status, _ = await call(relay, "GET", "/v1/webhooks", key=a.key)
    assert status == 200


async def _parked(relay: RunningRelay, event_id: str, webhook_id: str) -> bool:
    deliveries = (await relay.event(event_id))["deliveries"]
    return [d["status"] for d in deliveries if d["webhook_id"] == webhook_id] == ["failed"]


async def test_another_tenants_key_finds_nothing_of_a_tenant_on_any_route(tmp_path: Path, receiver: Receiver) -> None:
    async with relay_with(tmp_path, [webhook(receiver.url("/p"), id=PLATFORM)]) as relay:
        await _walk(relay, receiver)


async def test_the_route_walk_on_postgresql(tmp_path: Path, receiver: Receiver, postgres_url: str) -> None:
    async with relay_with(tmp_path, [webhook(receiver.url("/p"), id=PLATFORM)], postgres_url=postgres_url) as relay:
        await _walk(relay, receiver)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: a SQLite file; else the URL of a fresh PostgreSQL database."""
    return request.getfixturevalue("postgres_url") if request.param == "postgres" else None  # type: ignore[no-any-return]


async def test_a_tenant_key_sees_only_its_tenant(tmp_path: Path, receiver: Receiver, database_url: str | None) -> None:
    url = database_url
    async with relay_with(tmp_path, [webhook(receiver.url("/p"), id="platform")], postgres_url=url) as relay:
        key_a, key_b = (await new_key(relay, A))["key"], (await new_key(relay, B))["key"]
        hook_a = await new_webhook(relay, key_a, url=receiver.url("/a"))
        hook_b = await new_webhook(relay, key_b, url=receiver.url("/b"))
        await ingest(relay, {"id": "ea", "type": "t", "data": {}}, key=key_a)
        await ingest(relay, {"id": "eb", "type": "t", "data": {}}, key=key_b)
        await ingest(relay, {"id": "e0", "type": "t", "data": {}})
        await receiver.wait_for(5)
        await poll_until(lambda: _all_succeeded(relay))
        for key, own_hook, own_event in ((key_a, hook_a, "ea"), (key_b, hook_b, "eb")):
            _, answer = await call(relay, "GET", "/v1/webhooks", key=key)
            assert [w["id"] for w in answer["data"]] == [own_hook["id"]]
            _, answer = await call(relay, "GET", "/v1/events", key=key)
            assert [e["id"] for e in answer["data"]] == [own_event]
            _, answer = await call(relay, "GET", "/v1/deliveries", key=key)
            assert [(d["event_id"], d["webhook_id"]) for d in answer["data"]] == [(own_event, own_hook["id"])]
            status, answer = await call(relay, "GET", f"/v1/events/{own_event}", key=key)
            assert status == 200 and [d["webhook_id"] for d in answer["data"]["deliveries"]] == [own_hook["id"]]
            _, answer = await call(relay, "GET", "/v1/stats", key=key)
            assert answer["data"] == {
                "deliveries": {**dict.fromkeys(answer["data"]["deliveries"], 0), "succeeded": 1},
                "webhooks": {own_hook["id"]: {**dict.fromkeys(answer["data"]["deliveries"], 0), "succeeded": 1}},
            }
            for path in ("/v1/events/e0", "/v1/webhooks/platform"):
                status, _ = await call(relay, "GET", path, key=key)
                assert status == 404, path


async def test_an_admin_replay_sends_an_event_only_to_webhooks_it_could_match(tmp_path: Path) -> None:
    async with relay_with(tmp_path, [webhook("http://127.0.0.1:9/p", id="platform")]) as relay:
        hook_a = await new_webhook(relay, url="http://127.0.0.1:9/a", tenant=A)
        hook_b = await new_webhook(relay, url="http://127.0.0.1:9/b", tenant=B)
        await ingest(relay, {"id": "of-a", "type": "t", "data": {"secret": "of a"}, "tenant": A})
        await ingest(relay, {"id": "of-none", "type": "t", "data": {}})
        for event_id, hook in (("of-a", hook_b), ("of-none", hook_a)):  # another tenant's endpoint: never
            status, answer = await call(relay, "POST", f"/v1/events/{event_id}/replay", {"webhook_id": hook["id"]})
            assert status == 400 and error_of(answer) == ("validation_error", ["webhook_id"]), answer
        assert len((await relay.event("of-a"))["deliveries"]) == 2
        for event_id, hook_id in (("of-a", hook_a["id"]), ("of-a", "platform"), ("of-none", "platform")):
            status, _ = await call(relay, "POST", f"/v1/events/{event_id}/replay", {"webhook_id": hook_id})
            assert status == 202
