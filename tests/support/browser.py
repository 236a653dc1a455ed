"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright's async API (CONTRACT §10).

Playwright's own browser download needs its CDN, so the browser is the distribution's ``chromium`` package
(``make tools`` installs it), or the binary ``RELAY_CHROMIUM`` names. One browser per test module, one fresh
context (no cookies, no storage) per test::

    pytestmark = pytest.mark.asyncio(loop_scope="module")  # the browser's loop: see ``browser``

    async def test_it(tab: Tab, tmp_path: Path) -> None:
        await tab.page.goto(url)
        await screenshot(tab.page, "name", width=390)
        tab.watch.assert_clean()

Every page may only reach 127.0.0.1: any other request is aborted and counted (``Watch.blocked``). Console
errors, uncaught page errors and Content-Security-Policy violations are recorded, for ``Watch.assert_clean``.
Register the fixtures with ``pytest_plugins = ["tests.support.browser"]`` in the root ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Route, async_playwright
from playwright.async_api import Error as PlaywrightError

__all__ = ["ARGS", "ROOT", "Tab", "Watch", "browser", "chromium_path", "screenshot", "tab"]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
WIDTHS = (1280, 390)  # a desktop and a phone
HEIGHT = 800

# Chromium's own background traffic (component updates, sync, safe browsing lists, QUIC probes) goes nowhere on a
# closed network and only adds noise and delay; the page's own requests are kept to 127.0.0.1 by ``_only_local``.
# --no-sandbox: the tests run as root in containers, where Chromium's sandbox cannot start. --disable-dev-shm-usage:
# a container's small /dev/shm crashes the renderer (Debian's launcher adds it below 3.8 GB too).
ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
LOCAL = "127.0.0.1"


def chromium_path() -> Path:
    """The Chromium to drive: ``RELAY_CHROMIUM`` or Debian's; missing is a failure, never a skip."""
    path = Path(os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium"))
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path}: `make test` installs Debian's chromium package (through `make tools`), "
            "or point RELAY_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module, on the module's event loop.

    ``launch`` gives the browser a fresh temporary profile (``--user-data-dir`` is Playwright's to set: it refuses
    one in ``args``) and deletes it on close. Playwright's connection belongs to the loop it was started on, so the
    module's tests must run on that loop too: ``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
    """
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True, args=list(ARGS))
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Watch:
    """What went wrong in a context's pages, as it happened."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # requests to anywhere but 127.0.0.1, aborted

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":  # a failed load's message names no URL: its location does
            self.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    def on_page_error(self, error: PlaywrightError) -> None:
        self.page_errors.append(str(error))

    def on_csp_violation(self, source: Any, violation: dict[str, Any]) -> None:
        self.csp_violations.append(f"{violation.get('directive')} blocked {violation.get('blocked')}")

    def assert_clean(self) -> None:
        assert not self.console_errors, f"console errors: {self.console_errors}"
        assert not self.page_errors, f"page errors: {self.page_errors}"
        assert not self.csp_violations, f"Content-Security-Policy violations: {self.csp_violations}"
        assert not self.blocked, f"requests beyond 127.0.0.1: {self.blocked}"


# Runs before any of the page's own code, through the DevTools protocol: the page's CSP does not apply to it.
_REPORT_CSP = """
document.addEventListener("securitypolicyviolation", (event) => {
    window.__relayCspViolation({directive: event.effectiveDirective, blocked: event.blockedURI});
});
"""


@dataclass
class Tab:
    context: BrowserContext
    page: Page
    watch: Watch


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Tab]:
    """A fresh context (no cookies) with one page, kept to 127.0.0.1 and watched for errors."""
    marker = request.node.get_closest_marker("asyncio")
    if marker is None or marker.kwargs.get("loop_scope") != "module":
        # Otherwise Playwright's first call fails with "... attached to a different loop".
        pytest.fail(
            'a browser test runs on the browser\'s loop: pytestmark = pytest.mark.asyncio(loop_scope="module")',
            pytrace=False,
        )
    watch = Watch()
    context = await browser.new_context(viewport={"width": WIDTHS[0], "height": HEIGHT})
    try:
        await context.route("**/*", _only_local(watch))
        await context.expose_binding("__relayCspViolation", watch.on_csp_violation)
        await context.add_init_script(_REPORT_CSP)
        page = await context.new_page()
        page.on("console", watch.on_console)
        page.on("pageerror", watch.on_page_error)
        yield Tab(context, page, watch)
    finally:
        await context.close()


def _only_local(watch: Watch) -> Any:
    async def handle(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == LOCAL:
            await route.continue_()
        else:
            watch.blocked.append(url)
            await route.abort("blockedbyclient")

    return handle


async def screenshot(page: Page, name: str, *, width: int) -> Path:
    """The whole page at ``width`` CSS pixels wide, saved as ``var/screenshots/<name>.png`` (git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.set_viewport_size({"width": width, "height": HEIGHT})
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path, full_page=True)
    return path
