"""A small synchronous client of relay's HTTP API, for the management commands (standard library only).

``Client(url, key).call("GET", "/v1/webhooks")`` returns the parsed JSON answer of a 2xx, or raises
``ApiFailure`` with one line that says what went wrong: the daemon unreachable, the key refused, or the API's
own error (code and message, which names every wrong field). ``url`` is ``http://host:port``, ``https://…`` or
``unix:/path``.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from relay.config import Listen

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiFailure(Exception):
    """The call did not succeed; ``str()`` is one line for the user (a validation error's names each field).
    ``answer`` is the API's error envelope, when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, answer: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer


def url_for(listen: Listen) -> str:
    """The URL a client on this machine reaches ``listen`` at (a wildcard address becomes loopback)."""
    if listen.path is not None:
        return f"unix:{listen.path}"
    host = listen.host or "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{listen.port}" if ":" in host else f"http://{host}:{listen.port}"


def quoted(value: str) -> str:
    """A path segment: ids chosen by producers may hold characters a URL path cannot."""
    return quote(value, safe="")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, url: str, api_key: str | None, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str | int | None] | None = None,
    ) -> dict[str, Any] | None:
        """One request; the JSON answer of a 2xx (None when it has no body)."""
        target = path
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        if params:
            target += "?" + urlencode(params)
        headers = {"Accept": "application/json", "User-Agent": "relay-cli"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection, prefix = self._connection()
            try:
                connection.request(method, prefix + target, body=data, headers=headers)
                response = connection.getresponse()
                status, raw = response.status, response.read()
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiFailure(f"cannot reach the relay at {self.url}: {_reason(exc)}") from None
        return self._answer(status, raw)

    def _connection(self) -> tuple[http.client.HTTPConnection, str]:
        if self.url.startswith("unix:"):
            return _UnixConnection(self.url[5:], self.timeout), ""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiFailure(f"{self.url!r} is not a relay URL (http://host:port, https://… or unix:/path)")
        try:
            port = parts.port
        except ValueError:
            raise ApiFailure(f"{self.url!r} has an invalid port") from None
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.hostname, port, timeout=self.timeout), parts.path.rstrip("/")

    def _answer(self, status: int, raw: bytes) -> dict[str, Any] | None:
        answer: Any = None
        if raw:
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = None
        if 200 <= status < 300:
            if raw and not isinstance(answer, dict):
                raise ApiFailure(f"{self.url} did not answer like a relay (HTTP {status}, not a JSON object)")
            return answer if isinstance(answer, dict) else None
        error = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(error, dict):
            raise ApiFailure(f"{self.url} did not answer like a relay (HTTP {status})", status=status)
        if status == 401:
            raise ApiFailure(
                f"the relay at {self.url} refused the API key (401 unauthorized): "
                "pass --api-key, set RELAY_API_KEY, or point --config at the daemon's file",
                status=status,
                answer=answer,
            )
        code, message = error.get("code", "error"), error.get("message", "")
        raise ApiFailure(f"{status} {code}: {message}", status=status, answer=answer)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is `relay serve` running?)"
    if isinstance(exc, FileNotFoundError):
        return "no such socket (is `relay serve` running?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
