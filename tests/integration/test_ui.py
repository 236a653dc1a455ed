"""The dashboard (CONTRACT §10) over plain HTTP against a running relay on a real SQLite file with real receivers:
sign-in and its refusals, sessions and their end, CSRF and same-origin checks on every post, a tenant's view of
every page and button (another tenant's ids are "not found", their data never shown), escaping, the flash that
shows a rotated secret once, bad input shown next to its field, unknown ids as 404 pages. The browser flows are in
test_ui_browser.py."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relay.api import build_app
from relay.clock import FakeClock
from relay.config import StorageConfig, UiConfig
from relay.errors import StoreUnavailable
from relay.models import Secret
from tests.support.management import call
from tests.support.receiver import Receiver
from tests.support.relay_harness import API_KEY, RunningRelay, make_config, poll_until, running_relay
from tests.support.ui_client import UiClient
from tests.support.ui_world import T0, A, B, World, world

# -- sign-in, sessions, sign-out ----------------------------------------------------------------------------------


async def test_sign_in_with_an_admin_key_and_out_again(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        answer = await ui.get("/ui/")
        assert answer.status == 303 and answer.location == "/ui/sign-in"
        page = await ui.get("/ui/sign-in")
        assert page.status == 200 and 'type="password"' in page.text

        refused = await ui.post("/ui/sign-in", {"key": "not-a-key"})
        assert refused.status == 401 and "not a key this relay knows" in refused.text
        assert ui.cookie("relay_session") is None

        answer = await ui.sign_in(API_KEY)
        assert answer.status == 303 and answer.location == "/ui/"
        set_cookie = answer.headers["Set-Cookie"]
        for flag in ("HttpOnly", "SameSite=Strict", "Path=/ui/"):
            assert flag in set_cookie
        assert "Secure" not in set_cookie  # plain http here: a Secure cookie would never come back
        overview = await ui.get("/ui/")
        assert overview.status == 200 and "Overview" in overview.text
        assert A in overview.text and B in overview.text  # the tenant picker lists both
        # An admin sees every tenant's webhooks.
        listed = await ui.get("/ui/webhooks")
        assert w.hooks[A]["id"] in listed.text and w.hooks[B]["id"] in listed.text

        out = await ui.post("/ui/sign-out")
        assert out.status == 303 and out.location == "/ui/sign-in"
        assert ui.cookie("relay_session") is None
        assert (await ui.get("/ui/webhooks")).location == "/ui/sign-in"


async def test_sign_out_ends_the_session_on_the_server_too(tmp_path: Path) -> None:
    """A copy of the cookie taken before sign-out no longer opens a page; another session of the same key does."""
    async with world(tmp_path) as w, UiClient(w.relay) as ui, UiClient(w.relay) as other:
        assert (await ui.sign_in(w.keys[A])).status == 303 and (await other.sign_in(w.keys[A])).status == 303
        copied = ui.cookie("relay_session")
        assert copied is not None
        assert (await ui.post("/ui/sign-out")).location == "/ui/sign-in"
        async with UiClient(w.relay) as thief:
            answer = await thief.get("/ui/webhooks", Cookie=f"relay_session={copied}")
            assert answer.status == 303 and answer.location == "/ui/sign-in"
            assert (await thief.get("/ui/", Cookie=f"relay_session={copied}")).location == "/ui/sign-in"
        mine = await other.get("/ui/webhooks")
        assert mine.status == 200 and w.hooks[A]["id"] in mine.text


async def test_the_sign_in_form_needs_its_own_token_and_our_origin(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.get("/ui/sign-in")
        assert (await ui.post("/ui/sign-in", {"key": API_KEY}, csrf="")).status == 403
        assert (await ui.post("/ui/sign-in", {"key": API_KEY}, csrf="0" * 64)).status == 403
        assert (await ui.post("/ui/sign-in", {"key": API_KEY}, csrf="é" * 64)).status == 403
        assert (await ui.post("/ui/sign-in", {"key": API_KEY}, origin="http://evil.example")).status == 403
        assert ui.cookie("relay_session") is None
        assert (await ui.post("/ui/sign-in", {"key": API_KEY})).status == 303


async def test_a_session_ends_at_its_ttl_and_when_its_tenant_key_is_revoked(tmp_path: Path) -> None:
    async with world(tmp_path, ui=UiConfig(session_ttl=3600.0)) as w:
        async with UiClient(w.relay) as ui:
            assert (await ui.sign_in(w.keys[A])).status == 303
            assert (await ui.get("/ui/webhooks")).status == 200
            w.relay.advance(3600)
            assert (await ui.get("/ui/webhooks")).location == "/ui/sign-in"
        async with UiClient(w.relay) as ui:
            assert (await ui.sign_in(w.keys[A])).status == 303
            [key] = (await call(w.relay, "GET", f"/v1/tenants/{A}/keys"))[1]["data"]
            status, _ = await call(w.relay, "DELETE", f"/v1/tenants/{A}/keys/{key['id']}")
            assert status == 204
            assert (await ui.get("/ui/webhooks")).location == "/ui/sign-in"


async def test_an_admin_session_ends_when_its_key_leaves_the_config(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        assert (await ui.sign_in(API_KEY)).status == 303
        services = w.relay.daemon.services
        assert services is not None
        other = replace(services.config.server, api_keys=(Secret("another-key-0123456789"),))
        services.config = replace(services.config, server=other)
        assert (await ui.get("/ui/")).location == "/ui/sign-in"


async def test_behind_https_the_cookies_are_secure(tmp_path: Path) -> None:
    async with world(tmp_path, ui=UiConfig(public_url="https://relay.example.com")) as w, UiClient(w.relay) as ui:
        form = await ui.get("/ui/sign-in")
        assert "Secure" in form.headers["Set-Cookie"]
        _, answer = await call(w.relay, "POST", f"/v1/tenants/{A}/portal", {})
        link = answer["data"]["url"]
        assert link.startswith("https://relay.example.com/ui/?token=")
        opened = await ui.get(link.removeprefix("https://relay.example.com"))
        assert opened.status == 303 and "Secure" in opened.headers["Set-Cookie"]


async def test_the_dashboard_off_answers_404(tmp_path: Path) -> None:
    async with world(tmp_path, ui=UiConfig(enabled=False)) as w, UiClient(w.relay) as ui:
        for path in ("/ui/", "/ui/sign-in", "/ui/webhooks", "/ui/static/relay.css"):
            assert (await ui.get(path)).status == 404


# -- CSRF and origin on every post ----------------------------------------------------------------------------


async def test_every_post_needs_the_sessions_token_and_our_origin(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        assert (await ui.sign_in(w.keys[A])).status == 303
        hook = w.hooks[A]["id"]
        for path in _posts(w, A):
            assert (await ui.post(path, csrf="")).status == 403, path
            assert (await ui.post(path, csrf="f" * 64)).status == 403, path
            assert (await ui.post(path, csrf="ü" * 64)).status == 403, path
            assert (await ui.post(path, origin="http://evil.example")).status == 403, path
            cross = await ui.http.post(
                f"{w.relay.url}{path}",
                data={"csrf": ui.csrf},
                headers={"Sec-Fetch-Site": "cross-site"},
                allow_redirects=False,
            )
            assert cross.status == 403, path
        _, answer = await call(w.relay, "GET", f"/v1/webhooks/{hook}")
        assert answer["data"]["is_active"] is True  # nothing was paused
        assert len(w.receiver.requests_to("/a")) == 1  # no test sent, nothing replayed or re-driven
        # The token of another session does not do either.
        async with UiClient(w.relay) as other:
            await other.sign_in(w.keys[A])
            assert (await ui.post(f"/ui/webhooks/{hook}/pause", csrf=other.csrf)).status == 403


def _posts(w: World, tenant: str) -> list[str]:
    """Every post route of the dashboard but sign-in, with ``tenant``'s ids filled in."""
    paths = [p for p in _ui_routes(w, "POST", tenant) if p != "/ui/sign-in"]
    assert len(paths) >= 9, paths
    return paths


def _ui_routes(w: World, method: str, tenant: str) -> list[str]:
    """The dashboard's routes of ``method`` as the router has them (a route added later is walked too), with
    ``tenant``'s webhook, event and delivery ids filled in; the static files and the catch-all 404 left out."""
    services = w.relay.daemon.services
    assert services is not None
    ids = {"{webhook_id}": w.hook(tenant), "{event_id}": w.events[tenant], "{delivery_id}": w.deliveries[tenant]}
    paths = []
    for route in build_app(services, with_health=False).router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path") or ""
        if route.method != method or not path.startswith("/ui/") or "{name}" in path or "{tail}" in path:
            continue
        for name, value in ids.items():
            path = path.replace(name, value)
        assert "{" not in path, f"a route with an id the walk does not fill: {path}"
        paths.append(path)
    return paths


# -- a tenant sees only its own ------------------------------------------------------------------------------


@pytest.mark.parametrize("door", ["key", "portal"])
async def test_a_tenant_sees_and_changes_only_its_own_on_every_page(tmp_path: Path, door: str) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await _tenant_walk(w, ui, door)


async def test_a_tenant_sees_and_changes_only_its_own_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    storage = StorageConfig(url=Secret(postgres_url), pool_size=4)
    async with world(tmp_path, storage=storage) as w, UiClient(w.relay) as ui:
        await _tenant_walk(w, ui, "key")


async def _tenant_walk(w: World, ui: UiClient, door: str) -> None:
    """Signed in as tenant A (by its key or a portal link): every page shows A's and nothing of B's; every page and
    button naming one of B's ids is "not found", and changes nothing."""
    if door == "key":
        assert (await ui.sign_in(w.keys[A])).status == 303
    else:
        status, answer = await call(w.relay, "POST", f"/v1/tenants/{A}/portal", {})
        assert status == 201, answer
        link = answer["data"]["url"].removeprefix(w.relay.url)
        assert (await ui.get(link)).location == "/ui/"
    theirs = [w.hooks[B]["id"], w.events[B], w.receiver.url("/b"), f"{B} "]
    pages = [p for p in _ui_routes(w, "GET", A) if p != "/ui/sign-in"]
    assert len(pages) >= 5, pages
    for path in pages:
        page = await ui.get(path)
        assert page.status == 200, path
        for text in theirs:
            assert text not in page.text, (path, text)
    assert w.hooks[A]["id"] in (await ui.get("/ui/webhooks")).text
    assert w.events[A] in (await ui.get("/ui/events")).text
    # Another tenant's ids: not found on every page that takes one and every button, and nothing happens.
    for path in _ui_routes(w, "GET", B):
        if path not in pages and path != "/ui/sign-in":
            page = await ui.get(path)
            assert page.status == 404 and "Not found" in page.text, path
    assert (await ui.get(f"/ui/events?id={w.events[B]}")).status == 400
    before = len(w.receiver.requests_to("/b"))
    for path in _posts(w, B):
        if path in ("/ui/sign-out", "/ui/view"):
            continue
        answer = await ui.post(path)
        assert answer.status == 404, (path, answer.status)
    _, hook = await call(w.relay, "GET", f"/v1/webhooks/{w.hooks[B]['id']}")
    assert hook["data"]["is_active"] is True
    assert len(w.receiver.requests_to("/b")) == before
    assert len((await w.relay.event(w.events[B]))["deliveries"]) == 1  # not replayed
    # A tenant has no tenant picker, and cannot post to it.
    assert 'id="tenant-picker"' not in (await ui.get("/ui/")).text
    assert (await ui.post("/ui/view", {"tenant": B})).status == 404


async def test_an_admin_narrows_the_pages_to_one_tenant(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(API_KEY)
        picked = await ui.post("/ui/view", {"tenant": B})
        assert picked.status == 303
        page = await ui.get("/ui/webhooks")
        assert w.hooks[B]["id"] in page.text and w.hooks[A]["id"] not in page.text
        assert "Showing tenant-bravo" in page.text
        bad = await ui.post("/ui/view", {"tenant": "not a tenant id"})
        assert bad.status == 303
        assert 'class="flash error"' in (await ui.get("/ui/")).text
        await ui.post("/ui/view", {"tenant": ""})
        page = await ui.get("/ui/webhooks")
        assert w.hooks[A]["id"] in page.text and w.hooks[B]["id"] in page.text


# -- what the pages show ----------------------------------------------------------------------------------------


async def test_pages_show_hostile_data_as_text_with_a_strict_policy(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(API_KEY)
        for path in ("/ui/", "/ui/webhooks", f"/ui/webhooks/{w.hooks[A]['id']}", f"/ui/events/{w.events[A]}"):
            page = await ui.get(path)
            assert page.status == 200, path
            assert "<script>window" not in page.text, path
            policy = page.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
            assert "unsafe-inline" not in policy
            assert page.headers["X-Frame-Options"] == "DENY"
        event = (await ui.get(f"/ui/events/{w.events[A]}")).text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in event  # the payload and the receiver's answer
        assert event.count("&lt;script&gt;") >= 2
        assert "503" in event


async def test_the_overview_counts_and_charts_the_last_day(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(API_KEY)
        page = (await ui.get("/ui/")).text
        assert re.search(r'data-status="succeeded">1<', page) and re.search(r'data-status="failed">1<', page)
        assert "2 attempts, 1 failed." in page
        assert page.count('class="bar-attempts"') == 24
        assert re.search(r"<title>[0-9]{2}:00 UTC: 2 attempts, 1 failed</title>", page)
        assert 'id="failing-most"' in page and w.hooks[A]["id"] in page
        listed = (await ui.get("/ui/webhooks")).text
        assert "0.0 %" in listed and "100 %" in listed


async def test_unknown_ids_and_bad_filters_answer_with_pages(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(API_KEY)
        for path in ("/ui/webhooks/whk_nope", "/ui/events/evt_nope", "/ui/nowhere", "/ui/static/nope.js"):
            page = await ui.get(path)
            assert page.status == 404 and page.headers["Content-Type"].startswith("text/html"), path
        page = await ui.get("/ui/events?since=yesterday&type=bad%20type")
        assert page.status == 400
        assert 'id="since-error"' in page.text and 'id="type-error"' in page.text
        assert 'aria-invalid="true"' in page.text
        page = await ui.get("/ui/events?since=2025-06-15T14:00&until=2025-06-15T13:00")
        assert page.status == 400 and 'id="until-error"' in page.text
        page = await ui.get(f"/ui/webhooks/{w.hooks[A]['id']}?status=exploded")
        assert page.status == 400 and 'id="status-error"' in page.text
        page = await ui.get(f"/ui/webhooks/{w.hooks[A]['id']}?after=garbage")
        assert page.status == 400 and 'id="after-error"' in page.text
        page = await ui.get("/ui/events?id=evt_nope")
        assert page.status == 400 and 'id="id-error"' in page.text


async def test_a_store_outage_answers_with_a_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(API_KEY)
        assert w.relay.daemon.services is not None
        store = w.relay.daemon.services.store

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("database is locked")

        monkeypatch.setattr(store, "status_totals", down)  # a page's own read
        page = await ui.get("/ui/")
        assert (
            page.status == 503 and "Unavailable" in page.text and page.headers["Content-Type"].startswith("text/html")
        )
        monkeypatch.setattr(store, "session_ended", down)  # the session's, before any page
        for answer in (await ui.get("/ui/webhooks"), await ui.post(f"/ui/webhooks/{w.hook(A)}/pause")):
            assert answer.status == 503 and "Unavailable" in answer.text
            assert "database is locked" not in answer.text and "Traceback" not in answer.text


async def test_hostile_query_values_answer_pages_never_a_fault(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(API_KEY)
        values = ["é", "\x00", "%", "'", "<x>", "9" * 400, "１２", "-1", " ", "2025-13-45T99:99"]
        for value in values:
            for path, name in (
                (f"/ui/webhooks/{w.hook(A)}", "status"),
                (f"/ui/webhooks/{w.hook(A)}", "after"),
                ("/ui/events", "id"),
                ("/ui/events", "type"),
                ("/ui/events", "since"),
                ("/ui/events", "until"),
                ("/ui/events", "after"),
            ):
                async with ui.http.get(f"{w.relay.url}{path}", params={name: value}, allow_redirects=False) as got:
                    assert got.status in (200, 303, 400), (path, name, value, got.status)
                    assert got.headers["Content-Type"].startswith("text/html"), (path, name, value)


async def test_the_event_search_finds_by_id_type_and_time(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(API_KEY)
        found = await ui.get(f"/ui/events?id={w.events[A]}")
        assert found.status == 303 and found.location == f"/ui/events/{w.events[A]}"
        listed = (await ui.get("/ui/events?type=consent.created")).text
        assert w.events[A] in listed and w.events[B] in listed
        assert w.events[A] not in (await ui.get("/ui/events?type=consent.withdrawn")).text
        assert w.events[A] in (await ui.get("/ui/events?since=2025-06-15T00:00&until=2025-06-16T00:00")).text
        assert w.events[A] not in (await ui.get("/ui/events?since=2025-06-16T00:00:00Z")).text


async def test_the_filtered_deliveries_page_by_page(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        hook = w.hooks[B]["id"]
        for _ in range(30):
            await call(w.relay, "POST", "/v1/events", {"type": "consent.created", "data": {}}, key=w.keys[B])
        await poll_until(lambda: len(w.receiver.requests_to("/b")) >= 31)
        await ui.sign_in(API_KEY)
        await poll_until(lambda: _count_status(w.relay, hook, "succeeded", 31))
        first = await ui.get(f"/ui/webhooks/{hook}?status=succeeded")
        assert first.text.count('data-status="succeeded"') == 25
        more = re.search(r'href="([^"]+)" id="next-page"', first.text)
        assert more
        second = await ui.get(more.group(1).replace("&amp;", "&"))
        assert second.text.count('data-status="succeeded"') == 6 and 'id="next-page"' not in second.text
        none = await ui.get(f"/ui/webhooks/{hook}?status=dead")
        assert 'id="no-deliveries"' in none.text


async def _count_status(relay: RunningRelay, hook: str, status: str, count: int) -> bool:
    _, answer = await call(relay, "GET", f"/v1/deliveries?webhook_id={hook}&status={status}&limit=100")
    return len(answer["data"]) >= count


# -- the buttons -------------------------------------------------------------------------------------------------


async def test_rotate_secret_shows_the_new_one_once(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(w.keys[A])
        hook = w.hooks[A]["id"]
        await ui.get(f"/ui/webhooks/{hook}")
        answer = await ui.post(f"/ui/webhooks/{hook}/rotate-secret")
        assert answer.status == 303 and answer.location == f"/ui/webhooks/{hook}"
        assert "whsec_" not in answer.headers.get("Set-Cookie", "")  # sealed, not readable in the cookie
        shown = await ui.get(f"/ui/webhooks/{hook}")
        secret = re.search(r'id="new-secret">([^<]+)<', shown.text)
        assert secret and secret.group(1) != w.hooks[A]["secret"]
        again = await ui.get(f"/ui/webhooks/{hook}")
        assert 'id="new-secret"' not in again.text and secret.group(1) not in again.text
        # The new secret is the one the webhook signs with: the API's next rotation keeps it as the previous one.
        assert "previous secret" in again.text


async def test_pause_resume_test_redrive_and_replay(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(w.keys[A])
        hook, base = w.hooks[A]["id"], f"/ui/webhooks/{w.hooks[A]['id']}"
        await ui.get(base)
        assert (await ui.post(f"{base}/pause")).status == 303
        page = await ui.get(base)
        assert "Paused" in page.text and 'id="resume"' in page.text
        assert (await call(w.relay, "GET", f"/v1/webhooks/{hook}"))[1]["data"]["is_active"] is False
        await ui.post(f"{base}/resume")
        assert (await call(w.relay, "GET", f"/v1/webhooks/{hook}"))[1]["data"]["is_active"] is True

        await ui.get(base)
        await ui.post(f"{base}/test")
        page = await ui.get(base)
        assert "Test event" in page.text and "answered 200" in page.text
        assert w.receiver.requests_to("/a")[-1].json["type"] == "webhook.test"

        # The first delivery failed (503) and, with no retry left, is parked: re-drive makes it due; it succeeds.
        await ui.get(base)
        await ui.post(f"{base}/redrive")
        assert "1 delivery is due again now." in (await ui.get(base)).text
        await poll_until(lambda: _status_is(w.relay, w.events[A], "succeeded"))

        await ui.get(f"/ui/events/{w.events[A]}")
        answer = await ui.post(f"/ui/events/{w.events[A]}/replay")
        assert answer.location == f"/ui/events/{w.events[A]}"
        assert "Replayed: 1 new delivery." in (await ui.get(f"/ui/events/{w.events[A]}")).text
        assert len((await w.relay.event(w.events[A]))["deliveries"]) == 2


async def test_cancel_a_parked_delivery_and_not_one_that_ended(tmp_path: Path) -> None:
    async with world(tmp_path) as w, UiClient(w.relay) as ui:
        await ui.sign_in(w.keys[A])
        page = await ui.get(f"/ui/events/{w.events[A]}")
        assert "Cancel delivery" in page.text  # A's delivery is parked (failed)
        answer = await ui.post(f"/ui/deliveries/{w.deliveries[A]}/cancel", {"event_id": w.events[A]})
        assert answer.status == 303 and answer.location == f"/ui/events/{w.events[A]}"
        page = await ui.get(f"/ui/events/{w.events[A]}")
        assert f"Delivery {w.deliveries[A]} cancelled." in page.text and "Cancel delivery" not in page.text
        assert await w.relay.statuses(w.events[A]) == ["cancelled"]
        again = await ui.post(f"/ui/deliveries/{w.deliveries[A]}/cancel", {"event_id": w.events[A]})
        assert again.location == f"/ui/events/{w.events[A]}"
        assert 'class="flash error"' in (await ui.get(f"/ui/events/{w.events[A]}")).text
        assert (await ui.post("/ui/deliveries/dlv_nope/cancel", {"event_id": w.events[A]})).status == 404


async def _status_is(relay: RunningRelay, event_id: str, status: str) -> bool:
    return (await relay.statuses(event_id)) == [status]


async def test_a_config_declared_webhook_has_no_change_buttons_and_refuses_them(tmp_path: Path) -> None:
    async with Receiver() as receiver:
        from tests.support.relay_harness import webhook

        config = make_config(tmp_path, [webhook(receiver.url("/c"), id="declared")])
        async with running_relay(tmp_path, [], config=config, clock=FakeClock(T0)) as relay, UiClient(relay) as ui:
            await ui.sign_in(API_KEY)
            page = await ui.get("/ui/webhooks/declared")
            assert 'id="pause"' not in page.text and 'id="rotate-secret"' not in page.text
            answer = await ui.post("/ui/webhooks/declared/pause")
            assert answer.status == 303 and answer.location == "/ui/webhooks/declared"
            assert "declared in the configuration file" in (await ui.get("/ui/webhooks/declared")).text
