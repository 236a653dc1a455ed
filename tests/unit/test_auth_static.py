"""Static authentication (none, bearer, header, basic), the RFC 6749 §2.3.1 client encoding, and no secret in
any repr or message."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import aiohttp
import pytest

from relay.auth import (
    Authenticator,
    OAuthError,
    basic_authorization,
    build_authenticator,
    client_secret_basic,
)
from relay.clock import FakeClock
from relay.models import Auth, BasicAuth, BearerAuth, HeaderAuth, OAuth2Auth, Secret
from relay.store.base import RefreshTokenSession


class NoStore:
    async def load_refresh_token(self, webhook_id: str) -> str | None:
        return None

    async def save_refresh_token(self, webhook_id: str, token: str) -> None:
        raise AssertionError("static authenticators never save a refresh token")

    def refresh_token_session(self, webhook_id: str) -> AbstractAsyncContextManager[RefreshTokenSession]:
        raise AssertionError("static authenticators never refresh a token")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as session:  # never used for I/O here
        yield session


def build(auth: Auth | None, session: aiohttp.ClientSession) -> Authenticator:
    return build_authenticator("crm", auth, session=session, timeout=1.0, clock=FakeClock(0), tokens=NoStore())


def decode_basic(header: str) -> str:
    scheme, _, encoded = header.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded, validate=True).decode()


async def test_no_auth_sends_no_headers(session: aiohttp.ClientSession) -> None:
    authenticator = build(None, session)
    assert await authenticator.headers() == {}
    assert authenticator.retry_on_401 is False


async def test_bearer(session: aiohttp.ClientSession) -> None:
    authenticator = build(BearerAuth(Secret("tok-123")), session)
    assert await authenticator.headers() == {"Authorization": "Bearer tok-123"}
    assert authenticator.retry_on_401 is False


async def test_header(session: aiohttp.ClientSession) -> None:
    authenticator = build(HeaderAuth("X-Api-Key", Secret("k-456")), session)
    assert await authenticator.headers() == {"X-Api-Key": "k-456"}


async def test_basic(session: aiohttp.ClientSession) -> None:
    authenticator = build(BasicAuth("relay", Secret("pa:ss+word%")), session)
    headers = await authenticator.headers()
    assert headers == {"Authorization": "Basic cmVsYXk6cGE6c3Mrd29yZCU="}
    assert decode_basic(headers["Authorization"]) == "relay:pa:ss+word%"  # RFC 7617: not urlencoded


async def test_basic_with_non_ascii_password_is_utf8(session: aiohttp.ClientSession) -> None:
    authenticator = build(BasicAuth("jürgen", Secret("pässwörd-密码")), session)
    header = (await authenticator.headers())["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")) == "jürgen:pässwörd-密码".encode()
    assert header.isascii()


async def test_headers_are_a_fresh_dict_each_time(session: aiohttp.ClientSession) -> None:
    authenticator = build(BearerAuth(Secret("tok-123")), session)
    first = await authenticator.headers()
    first["Authorization"] = "tampered"
    assert await authenticator.headers() == {"Authorization": "Bearer tok-123"}


async def test_invalidate_is_a_no_op_for_static_auth(session: aiohttp.ClientSession) -> None:
    authenticator = build(BearerAuth(Secret("tok-123")), session)
    authenticator.invalidate(await authenticator.headers())
    assert await authenticator.headers() == {"Authorization": "Bearer tok-123"}


@pytest.mark.parametrize(
    "auth",
    [
        BearerAuth(Secret("super-secret-token")),
        HeaderAuth("X-Api-Key", Secret("super-secret-token")),
        BasicAuth("relay", Secret("super-secret-token")),
        OAuth2Auth(
            "refresh_token",
            "https://auth.example.com/token",
            "relay",
            client_secret=Secret("super-secret-token"),
            refresh_token=Secret("super-secret-token"),
        ),
    ],
    ids=["bearer", "header", "basic", "oauth2"],
)
async def test_repr_never_shows_a_secret(auth: Auth, session: aiohttp.ClientSession) -> None:
    authenticator = build(auth, session)
    encoded = base64.b64encode(b"relay:super-secret-token").decode()
    for text in (repr(authenticator), str(authenticator), repr(auth)):
        assert "super-secret-token" not in text
        assert encoded not in text
    assert "crm" in repr(authenticator)


def test_client_secret_basic_form_urlencodes_before_base64() -> None:
    header = client_secret_basic("my client", "s3cr+t%2F:with/odd=chars")
    assert decode_basic(header) == "my+client:s3cr%2Bt%252F%3Awith%2Fodd%3Dchars"


def test_basic_authorization_does_not_urlencode() -> None:
    assert decode_basic(basic_authorization("a b", "c+d")) == "a b:c+d"


def test_oauth_error_text() -> None:
    assert str(OAuthError("invalid_client", "bad secret")) == "invalid_client: bad secret"
    assert str(OAuthError("invalid_client", None)) == "invalid_client"
    assert str(OAuthError(None, "timeout")) == "timeout"
    error = OAuthError("invalid_grant", "expired", status_code=400)
    assert (error.error, error.description, error.status_code) == ("invalid_grant", "expired", 400)
    assert repr(error) == "OAuthError('invalid_grant', 'expired', status_code=400)"
