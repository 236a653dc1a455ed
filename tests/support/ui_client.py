"""A signed-in visitor of the dashboard over plain HTTP (no browser): its own cookie jar, the CSRF token read from
each page, form posts as a browser sends them (``Origin`` of the relay), redirects not followed."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.support.relay_harness import RunningRelay

CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Answer:
    status: int
    text: str
    headers: Any

    @property
    def location(self) -> str | None:
        location: str | None = self.headers.get("Location")
        return location

    @property
    def csrf(self) -> str:
        match = CSRF.search(self.text)
        assert match, "the page has no form with a CSRF token"
        return html.unescape(match.group(1))


class UiClient:
    def __init__(self, relay: RunningRelay) -> None:
        self.relay = relay
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(relay.url))
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # 127.0.0.1 keeps cookies
        self.csrf = ""

    async def __aenter__(self) -> UiClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.http.close()

    async def get(self, path: str, **headers: str) -> Answer:
        async with self.http.get(f"{self.relay.url}{path}", allow_redirects=False, headers=headers) as response:
            answer = Answer(response.status, await response.text(), response.headers)
        if match := CSRF.search(answer.text):
            self.csrf = html.unescape(match.group(1))
        return answer

    async def post(
        self, path: str, form: dict[str, str] | None = None, *, csrf: str | None = None, origin: str | None = None
    ) -> Answer:
        data = {"csrf": self.csrf if csrf is None else csrf, **(form or {})}
        headers = {"Origin": self.origin if origin is None else origin}
        if origin == "":
            headers = {}
        async with self.http.post(
            f"{self.relay.url}{path}", data=data, allow_redirects=False, headers=headers
        ) as response:
            return Answer(response.status, await response.text(), response.headers)

    async def sign_in(self, key: str) -> Answer:
        await self.get("/ui/sign-in")
        answer = await self.post("/ui/sign-in", {"key": key})
        if answer.status == 303:
            await self.get("/ui/")  # the CSRF token of the session
        return answer

    def cookie(self, name: str) -> str | None:
        for morsel in self.http.cookie_jar:
            if morsel.key == name:
                return morsel.value
        return None
