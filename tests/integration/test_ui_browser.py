"""The dashboard's portal-link door in a real browser (CONTRACT §10): headless Chromium through Playwright
(``tests/support/browser.py``), against an in-process relay whose time is a FakeClock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.clock import FakeClock
from tests.support.browser import Tab, screenshot
from tests.support.management import call, create_webhook
from tests.support.relay_harness import RunningRelay, make_config, running_relay

# One browser for the module, so the tests run on the module's loop (the browser's).
pytestmark = pytest.mark.asyncio(loop_scope="module")

T0 = 1_750_000_000.0
TENANT = "tenant-alpha"


@contextlib.asynccontextmanager
async def relay(tmp_path: Path) -> AsyncIterator[RunningRelay]:
    """A relay with the [tenants] and [ui] defaults."""
    async with running_relay(tmp_path, [], config=make_config(tmp_path, []), clock=FakeClock(T0)) as running:
        yield running


async def portal_link(relay: RunningRelay, tenant: str, **body: Any) -> str:
    status, answer = await call(relay, "POST", f"/v1/tenants/{tenant}/portal", body)
    assert status == 201, answer
    url: str = answer["data"]["url"]
    assert url.startswith(f"{relay.url}/ui/?token=")
    return url


async def test_a_portal_link_signs_the_tenant_in_and_lists_its_webhooks(tmp_path: Path, tab: Tab) -> None:
    async with relay(tmp_path) as running:
        hook = await create_webhook(running, url="http://127.0.0.1:9/<script>alert(1)</script>", tenant=TENANT)
        link = await portal_link(running, TENANT, ttl="10m")

        response = await tab.page.goto(link)
        assert response is not None and response.status == 200
        assert tab.page.url == f"{running.url}/ui/"  # the token has left the address bar
        assert await tab.page.inner_text("#tenant") == TENANT
        rows = await tab.page.locator("#webhooks tbody tr").all_inner_texts()
        assert len(rows) == 1 and hook["id"] in rows[0]
        assert "<script>alert(1)</script>" in rows[0]  # shown as text, never run (the CSP would report it)

        (cookie,) = await tab.context.cookies()
        assert cookie["name"] == "relay_session" and cookie["path"] == "/ui/"
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert await tab.page.evaluate("document.cookie") == ""  # HttpOnly: out of the page's reach

        for width in (1280, 390):
            path = await screenshot(tab.page, f"portal-tenant-{width}", width=width)
            assert path.stat().st_size > 0
        tab.watch.assert_clean()


async def test_an_expired_portal_link_shows_the_refusal(tmp_path: Path, tab: Tab) -> None:
    async with relay(tmp_path) as running:
        await create_webhook(running, url="http://127.0.0.1:9/alpha", tenant=TENANT)  # a tenant exists by its webhooks
        link = await portal_link(running, TENANT, ttl="10m")
        running.advance(600)

        response = await tab.page.goto(link)
        assert response is not None and response.status == 401
        assert await tab.page.inner_text("h1") == "This link does not open"
        assert await tab.context.cookies() == []
        await screenshot(tab.page, "portal-expired-390", width=390)
        # Chromium's own report of the refusal's status is the only console error.
        refused = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        assert tab.watch.console_errors == [f"{refused} ({link})"]
        tab.watch.console_errors.clear()
        tab.watch.assert_clean()
