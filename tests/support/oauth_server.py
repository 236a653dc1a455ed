"""A real OAuth 2.0 authorization server for integration tests: Authlib's Flask ``AuthorizationServer``.

It issues tokens through Authlib's own ``ClientCredentialsGrant`` and ``RefreshTokenGrant`` (with rotation:
each refresh issues a new refresh token and revokes the old one), authenticates clients by
``client_secret_basic`` or ``client_secret_post`` exactly as Authlib does, and protects ``POST /resource``
with Authlib's ``ResourceProtector`` (the bearer token must exist, not be expired and not be revoked: 200,
else 401).

Werkzeug serves it from a background thread on 127.0.0.1 (an ephemeral port). Tests can script it: shorten
``expires_in``, seed refresh tokens, make the next token requests fail or hang, revoke issued access tokens,
and read what it received (a counter by grant type, the last form and headers).

Use the ``oauth_server`` fixture (``pytest_plugins = ["tests.support.oauth_server"]``) or
``run_oauth_server()``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from authlib.integrations.flask_oauth2 import (  # type: ignore[import-untyped]
    AuthorizationServer,
    ResourceProtector,
)
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants  # type: ignore[import-untyped]
from authlib.oauth2.rfc6750 import (  # type: ignore[import-untyped]
    BearerTokenGenerator,
    BearerTokenValidator,
)
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

# Registered on every server.
BASIC_CLIENT_ID, BASIC_CLIENT_SECRET = "relay-basic", "basic-secret-0123"  # client_secret_basic only
POST_CLIENT_ID, POST_CLIENT_SECRET = "relay-post", "post-secret-4567"  # client_secret_post only
ODD_CLIENT_ID, ODD_CLIENT_SECRET = "relay-odd", "s3cr+t%2F:with/odd=chars"  # both methods
ALLOWED_SCOPE = "webhooks:write webhooks:read"
BOTH_METHODS = frozenset({"client_secret_basic", "client_secret_post"})


@dataclass
class OAuthClient(ClientMixin):  # type: ignore[misc]  # Authlib is untyped
    client_id: str
    client_secret: str
    auth_methods: frozenset[str] = BOTH_METHODS
    grant_types: frozenset[str] = frozenset({"client_credentials", "refresh_token"})
    scope: str = ALLOWED_SCOPE

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint != "token" or method in self.auth_methods

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scope when all of it is allowed; ``None`` makes Authlib answer invalid_scope."""
        if not scope:
            return ""
        return scope if set(scope.split()) <= set(self.scope.split()) else None


@dataclass
class AccessToken(TokenMixin):  # type: ignore[misc]
    access_token: str
    client_id: str
    grant_type: str
    scope: str
    issued_at: float
    expires_in: int  # 0: never expires
    revoked: bool = False

    def check_client(self, client: OAuthClient) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return self.expires_in > 0 and time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked


@dataclass
class RefreshToken(TokenMixin):  # type: ignore[misc]
    refresh_token: str
    client_id: str
    scope: str
    revoked: bool = False

    def check_client(self, client: OAuthClient) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class ReceivedRequest:
    form: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class _Script:
    status: int = 500
    error: str | None = None
    description: str | None = None
    body: str | None = None
    payload: dict[str, Any] | None = None
    hang: float = 0.0


@dataclass
class _State:
    expires_in: int | None = 3600
    rotate_refresh_tokens: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    clients: dict[str, OAuthClient] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    token_requests: Counter[str] = field(default_factory=Counter)
    issued: Counter[str] = field(default_factory=Counter)
    received: list[ReceivedRequest] = field(default_factory=list)
    resource_answers: Counter[int] = field(default_factory=Counter)
    scripts: deque[_Script] = field(default_factory=deque)


class _ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]


class _RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]

    @property
    def _state(self) -> _State:
        state: _State = self.server.relay_state
        return state

    @property
    def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:  # Authlib's class attribute, made switchable
        return self._state.rotate_refresh_tokens

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        with self._state.lock:
            record = self._state.refresh_tokens.get(refresh_token)
        return record if record is not None and not record.revoked else None

    def authenticate_user(self, refresh_token: RefreshToken) -> str:
        return f"owner-of-{refresh_token.client_id}"  # any truthy user: the grant only needs one

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        if self._state.rotate_refresh_tokens:
            with self._state.lock:
                refresh_token.revoked = True


class _BearerValidator(BearerTokenValidator):  # type: ignore[misc]
    def __init__(self, state: _State) -> None:
        super().__init__()
        self._state = state

    def authenticate_token(self, token_string: str) -> AccessToken | None:
        with self._state.lock:
            return self._state.access_tokens.get(token_string)


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class OAuthServer:
    """The server and its test controls. ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, *, expires_in: int | None = 3600) -> None:
        self._state = _State(expires_in=expires_in)
        for client in (
            OAuthClient(BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, frozenset({"client_secret_basic"})),
            OAuthClient(POST_CLIENT_ID, POST_CLIENT_SECRET, frozenset({"client_secret_post"})),
            OAuthClient(ODD_CLIENT_ID, ODD_CLIENT_SECRET),
        ):
            self.register_client(client)
        self._app = self._build_app()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="oauth-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._state.release.set()  # wake any hanging handler
        if self._server is not None:
            self._server.shutdown()  # serve_forever returns, then closes the listening socket
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def resource_url(self) -> str:
        return f"{self.url}/resource"

    # -- configuration ---------------------------------------------------------------------------------------

    @property
    def expires_in(self) -> int | None:
        """``expires_in`` of the next tokens issued; ``None`` leaves it out of the answer."""
        return self._state.expires_in

    @expires_in.setter
    def expires_in(self, value: int | None) -> None:
        self._state.expires_in = value

    @property
    def rotate_refresh_tokens(self) -> bool:
        return self._state.rotate_refresh_tokens

    @rotate_refresh_tokens.setter
    def rotate_refresh_tokens(self, value: bool) -> None:
        self._state.rotate_refresh_tokens = value

    def register_client(self, client: OAuthClient) -> None:
        with self._state.lock:
            self._state.clients[client.client_id] = client

    def seed_refresh_token(self, client_id: str, *, scope: str = "webhooks:write") -> str:
        """A live refresh token for the client, as if an earlier authorization had issued it."""
        token = secrets.token_urlsafe(32)
        with self._state.lock:
            self._state.refresh_tokens[token] = RefreshToken(token, client_id, scope)
        return token

    def refresh_token_active(self, token: str) -> bool:
        with self._state.lock:
            record = self._state.refresh_tokens.get(token)
            return record is not None and not record.revoked

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token this server has issued or seeded (to grep logs for)."""
        with self._state.lock:
            return [*self._state.access_tokens, *self._state.refresh_tokens]

    def revoke_access_tokens(self) -> int:
        """Revoke every access token issued so far (``/resource`` answers 401 to them); returns how many."""
        with self._state.lock:
            live = [t for t in self._state.access_tokens.values() if not t.revoked]
            for token in live:
                token.revoked = True
            return len(live)

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        error: str | None = "server_error",
        description: str | None = None,
        body: str | None = None,
    ) -> None:
        """The next ``n`` token requests answer ``status``: an RFC 6749 §5.2 JSON error, or with
        ``error=None`` a non-JSON body (``body``, default an HTML page)."""
        with self._state.lock:
            self._state.scripts.extend([_Script(status, error, description, body)] * n)

    def respond_next(self, payload: dict[str, Any], *, status: int = 200, n: int = 1) -> None:
        """The next ``n`` token requests answer this JSON object as is (an unusual or malformed answer)."""
        with self._state.lock:
            self._state.scripts.extend([_Script(status, payload=payload)] * n)

    def hang_next(self, n: int = 1, *, seconds: float = 10.0) -> None:
        """The next ``n`` token requests wait ``seconds`` (or until the server stops), then are served."""
        with self._state.lock:
            self._state.scripts.extend([_Script(hang=seconds)] * n)

    # -- observations ----------------------------------------------------------------------------------------

    @property
    def token_requests(self) -> Counter[str]:
        """Token requests received, by ``grant_type`` (failed and scripted ones included)."""
        with self._state.lock:
            return Counter(self._state.token_requests)

    @property
    def total_token_requests(self) -> int:
        return sum(self.token_requests.values())

    @property
    def issued(self) -> Counter[str]:
        """Access tokens issued, by grant type."""
        with self._state.lock:
            return Counter(self._state.issued)

    @property
    def received(self) -> list[ReceivedRequest]:
        with self._state.lock:
            return list(self._state.received)

    @property
    def last_form(self) -> dict[str, str]:
        return self.received[-1].form

    @property
    def last_headers(self) -> dict[str, str]:
        return self.received[-1].headers

    @property
    def resource_answers(self) -> Counter[int]:
        """``POST /resource`` answers, by status."""
        with self._state.lock:
            return Counter(self._state.resource_answers)

    def access_token_active(self, token: str) -> bool:
        with self._state.lock:
            record = self._state.access_tokens.get(token)
        return record is not None and not record.revoked and not record.is_expired()

    # -- the Flask app ---------------------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        state = self._state
        app = Flask("oauth_server")

        def query_client(client_id: str) -> OAuthClient | None:
            with state.lock:
                return state.clients.get(client_id)

        def save_token(token: dict[str, Any], req: Any) -> None:
            with state.lock:
                access = AccessToken(
                    access_token=token["access_token"],
                    client_id=req.client.client_id,
                    grant_type=req.payload.grant_type,
                    scope=token.get("scope", ""),
                    issued_at=time.time(),
                    expires_in=int(token.get("expires_in", 0)),
                )
                state.access_tokens[access.access_token] = access
                state.issued[access.grant_type] += 1
                if "refresh_token" in token:
                    refresh = RefreshToken(token["refresh_token"], access.client_id, access.scope)
                    state.refresh_tokens[refresh.refresh_token] = refresh

        authorization = AuthorizationServer(app, query_client=query_client, save_token=save_token)
        authorization.relay_state = state
        authorization.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: secrets.token_urlsafe(24),
                refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: state.expires_in or 0,
            ),
        )
        authorization.register_grant(_ClientCredentialsGrant)
        authorization.register_grant(_RefreshTokenGrant)

        require_oauth = ResourceProtector()
        require_oauth.register_token_validator(_BearerValidator(state))

        @app.post("/token")
        def token() -> Response:
            with state.lock:
                state.token_requests[request.form.get("grant_type", "")] += 1
                state.received.append(ReceivedRequest(dict(request.form), dict(request.headers)))
                script = state.scripts.popleft() if state.scripts else None
            if script is not None and script.hang:
                state.release.wait(script.hang)
            elif script is not None:
                return _scripted(script)
            response: Response = authorization.create_token_response()
            return response

        @app.post("/resource")
        def resource() -> tuple[Response, int]:
            try:
                with require_oauth.acquire() as token:
                    with state.lock:
                        state.resource_answers[200] += 1
                    return jsonify(ok=True, client_id=token.client_id), 200
            except HTTPException:  # Authlib's 401 (missing, unknown, expired or revoked token)
                with state.lock:
                    state.resource_answers[401] += 1
                raise

        return app


def _scripted(script: _Script) -> Response:
    if script.payload is not None:
        answer: Response = jsonify(script.payload)
        answer.status_code = script.status
        return answer
    if script.error is None:
        body = script.body if script.body is not None else f"<html><body>{script.status} error</body></html>"
        return Response(body, status=script.status, content_type="text/html")
    payload = {"error": script.error}
    if script.description is not None:
        payload["error_description"] = script.description
    response: Response = jsonify(payload)
    response.status_code = script.status
    return response


@contextmanager
def run_oauth_server(*, expires_in: int | None = 3600) -> Iterator[OAuthServer]:
    server = OAuthServer(expires_in=expires_in)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def oauth_server() -> Iterator[OAuthServer]:
    with run_oauth_server() as server:
        yield server
