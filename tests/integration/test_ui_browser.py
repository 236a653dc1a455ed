"""The dashboard in a real browser (CONTRACT §10): headless Chromium through Playwright (``tests/support/browser.py``)
against an in-process relay on a real SQLite file, a FakeClock for its time, and real receivers. The flows an
operator and a customer go through: sign in by keyboard, find a failed delivery, re-drive it, see it succeed; send
a test; rotate the secret (shown once, gone on reload); a tenant key and a portal link see only their tenant; a
payload and a receiver's answer holding ``<script>`` run nothing; a cross-site form post is refused; an expired
session goes back to sign-in. Each page is saved as a screenshot under ``var/screenshots/`` (1280 px wide, and
390 px for a phone)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Dialog, Page

from relay.config import UiConfig
from tests.support.browser import Tab, screenshot
from tests.support.management import call
from tests.support.receiver import serve_locally
from tests.support.relay_harness import API_KEY, RunningRelay, poll_until
from tests.support.ui_world import A, B, settled, world

# One browser for the module, so the tests run on the module's loop (the browser's).
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def sign_in_by_keyboard(page: Page, relay: RunningRelay, key: str) -> None:
    await page.goto(f"{relay.url}/ui/")
    assert page.url == f"{relay.url}/ui/sign-in"
    assert await page.evaluate("document.activeElement.id") == "key"  # autofocus
    await page.keyboard.type(key)
    await page.keyboard.press("Tab")  # to the button, and press it
    assert await page.evaluate("document.activeElement.textContent") == "Sign in"
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{relay.url}/ui/")


def accept_dialogs(page: Page) -> None:
    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)


async def shots(page: Page, name: str, *, phone: bool = False) -> None:
    await screenshot(page, f"{name}-1280", width=1280)
    if phone:
        await screenshot(page, f"{name}-390", width=390)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"{name} is {width} px wide at 390: it scrolls sideways"
        await page.set_viewport_size({"width": 1280, "height": 800})


async def test_an_operator_finds_a_failed_delivery_redrives_it_and_sees_it_succeed(tmp_path: Path, tab: Tab) -> None:
    page = tab.page
    async with world(tmp_path) as w:
        await sign_in_by_keyboard(page, w.relay, API_KEY)
        assert await page.inner_text("[data-status=failed]") == "1"
        assert await page.locator("#chart rect.bar-attempts").count() == 24
        await shots(page, "overview", phone=True)

        await page.click("#failing-most a")  # the webhook failing most
        assert page.url == f"{w.relay.url}/ui/webhooks/{w.hook(A)}"
        await page.select_option("#status", "failed")
        await page.click("form.filter button")
        rows = page.locator("#deliveries tbody tr")
        assert await rows.count() == 1 and "503" in await rows.first.inner_text()
        await shots(page, "webhook", phone=True)

        await page.click("#deliveries tbody tr a")  # its event
        assert page.url == f"{w.relay.url}/ui/events/{w.events[A]}"
        assert await page.get_attribute(".delivery", "data-status") == "failed"
        await shots(page, "event", phone=True)

        await page.go_back()
        await page.click("#redrive")
        assert "1 delivery is due again now." in await page.inner_text("#flash")
        await poll_until(lambda: len(w.receiver.requests_to("/a")) == 2)
        await poll_until(lambda: settled(w.relay, [w.events[A]]))
        await page.goto(f"{w.relay.url}/ui/events/{w.events[A]}")
        assert await page.get_attribute(".delivery", "data-status") == "succeeded"
        assert await page.locator(".attempts tbody tr").count() == 2

        await page.goto(f"{w.relay.url}/ui/webhooks")
        assert await page.locator("#webhooks tbody tr").count() == 2  # an admin sees both tenants'
        await shots(page, "webhooks", phone=True)
        await page.goto(f"{w.relay.url}/ui/events?type=consent.created")
        assert await page.locator("#events tbody tr").count() == 2
        await shots(page, "events", phone=True)
        assert await page.evaluate("window.__pwned === undefined")
        tab.watch.assert_clean()


async def test_send_test_and_a_rotated_secret_shown_once(tmp_path: Path, tab: Tab) -> None:
    page = tab.page
    accept_dialogs(page)  # "Rotate the signing secret?"
    async with world(tmp_path) as w:
        await sign_in_by_keyboard(page, w.relay, w.keys[A])
        await page.goto(f"{w.relay.url}/ui/webhooks/{w.hook(A)}")
        await page.click("#send-test")
        assert "answered 200" in await page.inner_text("#flash")
        assert w.receiver.requests_to("/a")[-1].json["type"] == "webhook.test"

        await page.click("#rotate-secret")
        secret = await page.inner_text("#new-secret")
        assert secret.startswith("whsec_")
        await shots(page, "rotated-secret")
        await page.reload()
        assert await page.locator("#new-secret").count() == 0
        assert secret not in await page.content()

        await page.click("#pause")
        assert await page.locator("#resume").count() == 1
        await page.click("#resume")
        assert await page.locator("#pause").count() == 1
        tab.watch.assert_clean()


@pytest.mark.parametrize("door", ["tenant key", "portal link"])
async def test_a_tenant_sees_only_its_own(tmp_path: Path, tab: Tab, door: str) -> None:
    page = tab.page
    async with world(tmp_path) as w:
        if door == "tenant key":
            await sign_in_by_keyboard(page, w.relay, w.keys[A])
        else:
            _, answer = await call(w.relay, "POST", f"/v1/tenants/{A}/portal", {"ttl": "10m"})
            await page.goto(answer["data"]["url"])
            assert page.url == f"{w.relay.url}/ui/"  # the token has left the address bar
        assert await page.inner_text("#tenant") == A
        assert await page.locator("#tenant-picker").count() == 0
        for path in ("/ui/", "/ui/webhooks", "/ui/events", f"/ui/webhooks/{w.hook(A)}", f"/ui/events/{w.events[A]}"):
            await page.goto(f"{w.relay.url}{path}")
            text = await page.content()
            assert w.hook(B) not in text and w.events[B] not in text and B not in text, path
        await page.goto(f"{w.relay.url}/ui/webhooks")
        assert await page.locator("#webhooks tbody tr").count() == 1
        response = await page.goto(f"{w.relay.url}/ui/events/{w.events[B]}")
        assert response is not None and response.status == 404
        assert await page.inner_text("h1") == "Not found"
        tab.watch.console_errors.clear()  # Chromium's report of the 404
        if door == "portal link":
            await shots(page, "portal-tenant", phone=True)
        tab.watch.assert_clean()


async def test_a_cross_site_form_post_is_refused(tmp_path: Path, tab: Tab) -> None:
    page = tab.page
    async with world(tmp_path) as w:
        await sign_in_by_keyboard(page, w.relay, API_KEY)
        target = f"{w.relay.url}/ui/webhooks/{w.hook(A)}/pause"
        attacker = web.Application()

        async def lure(request: web.Request) -> web.Response:
            body = (
                f'<form method="post" action="{target}"><input name="csrf" value="guessed"></form>'
                "<script>document.forms[0].submit()</script>"
            )
            return web.Response(text=body, content_type="text/html")

        attacker.router.add_get("/", lure)
        runner, port = await serve_locally(attacker)
        try:
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.wait_for_url(target)
            assert await page.inner_text("h1") == "Refused"
        finally:
            await runner.cleanup()
        _, answer = await call(w.relay, "GET", f"/v1/webhooks/{w.hook(A)}")
        assert answer["data"]["is_active"] is True
        tab.watch.console_errors.clear()  # Chromium's report of the 403


async def test_an_expired_session_goes_back_to_sign_in(tmp_path: Path, tab: Tab) -> None:
    page = tab.page
    async with world(tmp_path, ui=UiConfig(session_ttl=3600.0)) as w:
        await sign_in_by_keyboard(page, w.relay, API_KEY)
        await shots(page, "signed-in")
        w.relay.advance(3600)
        await page.goto(f"{w.relay.url}/ui/webhooks")
        assert page.url == f"{w.relay.url}/ui/sign-in"
        assert await page.locator("#key").count() == 1
        await shots(page, "sign-in", phone=True)
        tab.watch.assert_clean()
