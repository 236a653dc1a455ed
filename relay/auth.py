"""Authentication to webhook endpoints: one authenticator per webhook, built from ``[webhooks.auth]``.

Static schemes (bearer, header, basic) compute their headers once. OAuth2 fetches an access token from the
token endpoint (RFC 6749 §4.4 client credentials, or §6 refresh token), caches it in memory until
``expires_in`` minus 10 % (at least 5 s early), and shares it with every concurrent delivery of the webhook:
one lock, one token request per round, and every waiter of a round gets that round's token or its failure.
A rotated refresh token is saved through a :class:`RefreshTokenStore` before the access token that came with
it is used. A token answer is read up to ``TOKEN_ANSWER_LIMIT`` and checked whole (RFC 6749 §5.1) before any of
it is saved or used: a value that could not go into a header or a form fails the fetch like an endpoint error.

No secret, token or refresh token ever appears in a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote_plus

import aiohttp
import orjson
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed

from relay.clock import Clock
from relay.errors import RelayError
from relay.models import Auth, BasicAuth, BearerAuth, HeaderAuth, OAuth2Auth
from relay.outbound import describe_client_error, read_capped
from relay.store.base import RefreshTokenSession
from relay.token_answer import UnusableAnswer, check_answer

log = structlog.get_logger()

TOKEN_ANSWER_LIMIT = 64 * 1024  # a larger token answer is refused, and the rest of it is never read
_MIN_EARLY = 5.0  # refresh at least this many seconds before the token expires
_EARLY_FRACTION = 0.1
_LOCAL_RETRY_WAIT = 0.1  # one quick retry of a transient token-endpoint failure; the schedule does the rest
_MAX_DESCRIPTION = 300
_MIN_SCRUB = 4  # shorter secrets are not searched for in server text (they would mangle it, and guess easily)


class OAuthError(RelayError):
    """The token endpoint could not give a usable token; the attempt fails with error kind ``oauth_error``.

    ``error``/``description`` are the endpoint's ``error``/``error_description`` (RFC 6749 §5.2), or
    ``None`` and what went wrong for a transport failure (``"timeout"``, ``"HTTP 502 Bad Gateway"``,
    ``"connect error: …"``). ``status_code`` is the token endpoint's HTTP status when it answered.
    """

    def __init__(
        self,
        error: str | None,
        description: str | None,
        *,
        status_code: int | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(error, description)
        self.error = error
        self.description = description
        self.status_code = status_code
        self.transient = transient  # worth one quick local retry (5xx, timeout, connection failure)

    def __str__(self) -> str:
        if self.error and self.description:
            return f"{self.error}: {self.description}"
        return self.error or self.description or "token request failed"

    def __repr__(self) -> str:
        return f"OAuthError({self.error!r}, {self.description!r}, status_code={self.status_code!r})"

    def copy(self) -> OAuthError:
        """A fresh instance for another waiter, so tracebacks of concurrent raisers do not pile up on one."""
        return OAuthError(self.error, self.description, status_code=self.status_code, transient=self.transient)


class RefreshTokenStore(Protocol):
    async def load_refresh_token(self, webhook_id: str) -> str | None: ...

    async def save_refresh_token(self, webhook_id: str, token: str) -> None:
        """Durable when it returns."""
        ...

    def refresh_token_session(self, webhook_id: str) -> AbstractAsyncContextManager[RefreshTokenSession]:
        """See ``relay.store.base.RefreshTokens``."""
        ...


class Authenticator(Protocol):
    retry_on_401: bool

    async def headers(self) -> dict[str, str]:
        """The headers that authenticate one attempt; may raise :class:`OAuthError`."""
        ...

    def invalidate(self, headers: dict[str, str]) -> None:
        """Drop the cached credential if it is still the one in ``headers`` (the endpoint answered 401)."""
        ...


OnTokenRequest = Callable[[str], None]  # a token request's result ("success", "error"); the caller binds the webhook


def build_authenticator(
    webhook_id: str,
    auth: Auth | None,
    *,
    session: aiohttp.ClientSession,
    timeout: float,
    clock: Clock,
    tokens: RefreshTokenStore,
    on_token_request: OnTokenRequest | None = None,
) -> Authenticator:
    if auth is None:
        return StaticAuthenticator(webhook_id, "none", {})
    if isinstance(auth, BearerAuth):
        return StaticAuthenticator(webhook_id, "bearer", {"Authorization": f"Bearer {auth.token.reveal()}"})
    if isinstance(auth, HeaderAuth):
        return StaticAuthenticator(webhook_id, "header", {auth.name: auth.value.reveal()})
    if isinstance(auth, BasicAuth):
        return StaticAuthenticator(
            webhook_id, "basic", {"Authorization": basic_authorization(auth.username, auth.password.reveal())}
        )
    return OAuth2Authenticator(
        webhook_id,
        auth,
        session=session,
        timeout=timeout,
        clock=clock,
        tokens=tokens,
        on_token_request=on_token_request,
    )


def basic_authorization(username: str, password: str) -> str:
    """RFC 7617 ``Basic`` credentials, UTF-8."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def client_secret_basic(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined and base64-encoded."""
    return basic_authorization(quote_plus(client_id), quote_plus(client_secret))


class StaticAuthenticator:
    """Headers fixed by the configuration: none, bearer, a named header, or basic."""

    retry_on_401: bool = False

    def __init__(self, webhook_id: str, scheme: str, headers: dict[str, str]) -> None:
        self.webhook_id = webhook_id
        self.scheme = scheme
        self._headers = headers

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)

    def invalidate(self, headers: dict[str, str]) -> None:
        pass

    def __repr__(self) -> str:
        return f"StaticAuthenticator(webhook_id={self.webhook_id!r}, scheme={self.scheme!r})"


@dataclass(frozen=True, slots=True)
class _Token:
    access_token: str = field(repr=False)
    refresh_at: float  # clock time after which a new token is fetched


class OAuth2Authenticator:
    """An OAuth2 client for one webhook: fetches, caches and shares its access token."""

    retry_on_401: bool = True

    def __init__(
        self,
        webhook_id: str,
        auth: OAuth2Auth,
        *,
        session: aiohttp.ClientSession,
        timeout: float,
        clock: Clock,
        tokens: RefreshTokenStore,
        on_token_request: OnTokenRequest | None = None,
    ) -> None:
        self.webhook_id = webhook_id
        self._auth = auth
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._tokens = tokens
        self._on_token_request = on_token_request
        self._lock = asyncio.Lock()
        self._token: _Token | None = None
        self._round = 0  # fetch rounds completed (or abandoned)
        self._round_error: OAuthError | None = None
        self._rotated: str | None = None  # the newest refresh token this process was given
        self._unsaved: str | None = None  # one it was given and could not store: the only live one
        self._held: RefreshTokenSession | None = None  # the store's session while a refresh is under way

    def __repr__(self) -> str:
        return (
            f"OAuth2Authenticator(webhook_id={self.webhook_id!r}, grant={self._auth.grant!r}, "
            f"token_url={self._auth.token_url!r})"
        )

    async def headers(self) -> dict[str, str]:
        token = self._token
        if token is not None and self._clock.now() < token.refresh_at:
            return _bearer(token)
        seen = self._round
        async with self._lock:
            if self._round != seen:
                # A fetch finished while this call waited for the lock: share its result, even a token whose
                # cache life is short, so a burst of callers makes one request per round.
                if self._round_error is not None:
                    raise self._round_error.copy()
                if self._token is not None:
                    return _bearer(self._token)
            elif self._token is not None and self._clock.now() < self._token.refresh_at:
                return _bearer(self._token)
            self._round_error = None
            self._token = None  # stale or rejected: nobody may use it once this round ends, whatever happens
            try:
                self._token = await self._fetch()
            except OAuthError as exc:
                self._round_error = exc
                log.warning("oauth_token_failed", webhook_id=self.webhook_id, error=str(exc))
                raise
            finally:
                self._round += 1
            return _bearer(self._token)

    def invalidate(self, headers: dict[str, str]) -> None:
        token = self._token
        if token is not None and headers.get("Authorization") == f"Bearer {token.access_token}":
            self._token = None

    async def _fetch(self) -> _Token:
        auth = self._auth
        if auth.grant != "refresh_token":
            return await self._request_token({"grant_type": "client_credentials"}, refresh_token=None)
        # Held from before the token endpoint is called until a rotated token is stored: relays that share a
        # store refresh one at a time, each with the token the last one stored (never one token twice).
        try:
            async with self._tokens.refresh_token_session(self.webhook_id) as held:
                self._held = held
                token = await self._refresh(held.current)
        except RelayError as exc:
            if isinstance(exc, OAuthError):
                raise
            raise OAuthError(None, f"could not keep the refresh token: {type(exc).__name__}") from exc
        finally:
            self._held = None
        self._unsaved = None  # the session ended without an error: what it saved is durable
        return token

    async def _refresh(self, stored: str | None) -> _Token:
        auth = self._auth
        current = self._refresh_token(stored)
        try:
            return await self._request_token({"grant_type": "refresh_token"}, refresh_token=current)
        except OAuthError as exc:
            # The persisted token wins over the configured one; but when the server has rejected it and the
            # operator has since configured a different one, that one is worth a single try.
            configured = auth.refresh_token.reveal() if auth.refresh_token is not None else None
            if exc.error != "invalid_grant" or configured is None or configured == current:
                raise
            log.info("oauth_refresh_token_fallback", webhook_id=self.webhook_id)
            rotated = self._rotated
            token = await self._request_token({"grant_type": "refresh_token"}, refresh_token=configured)
            if self._rotated == rotated:
                # The server kept the configured token: it is the live one now, so it replaces the dead one.
                await self._persist(configured)
            return token

    def _refresh_token(self, stored: str | None) -> str:
        if self._unsaved is not None:
            return self._unsaved
        if stored:
            return stored
        if self._auth.refresh_token is None:
            raise OAuthError(None, "no refresh token configured or stored")
        return self._auth.refresh_token.reveal()

    async def _request_token(self, form: dict[str, str], *, refresh_token: str | None) -> _Token:
        auth = self._auth
        body = dict(auth.extra_params)
        if auth.scope:
            body["scope"] = auth.scope
        if auth.audience:
            body["audience"] = auth.audience
        body.update(form)
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        headers = {"Accept": "application/json"}
        secret = auth.client_secret.reveal() if auth.client_secret is not None else None
        if secret is not None and auth.client_auth == "basic":
            headers["Authorization"] = client_secret_basic(auth.client_id, secret)
        else:
            body["client_id"] = auth.client_id
            if secret is not None:
                body["client_secret"] = secret
        scrub = [s for s in (secret, refresh_token) if s]

        retrying = AsyncRetrying(
            stop=stop_after_attempt(2),
            wait=wait_fixed(_LOCAL_RETRY_WAIT),
            retry=retry_if_exception(lambda exc: isinstance(exc, OAuthError) and exc.transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                answer = await self._post(body, headers, scrub)
        return await self._accept(answer, used_refresh_token=refresh_token)

    async def _post(self, body: dict[str, str], headers: dict[str, str], scrub: list[str]) -> dict[str, object]:
        """One HTTP token request; every outcome is counted once through ``on_token_request``."""
        try:
            answer = await self._post_once(body, headers, scrub)
        except OAuthError:
            self._count("error")
            raise
        self._count("success")
        return answer

    async def _post_once(self, body: dict[str, str], headers: dict[str, str], scrub: list[str]) -> dict[str, object]:
        try:
            async with self._session.post(
                self._auth.token_url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status, reason = resp.status, resp.reason or ""
                raw, too_large = await read_capped(resp, TOKEN_ANSWER_LIMIT)
        except TimeoutError as exc:
            raise OAuthError(None, "timeout", transient=True) from exc
        except aiohttp.ClientSSLError as exc:
            raise OAuthError(None, _clean(f"tls error: {describe_client_error(exc)}", scrub)) from exc
        except aiohttp.ClientConnectorError as exc:
            raise OAuthError(
                None, _clean(f"connect error: {describe_client_error(exc)}", scrub), transient=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise OAuthError(
                None, _clean(f"connection error: {describe_client_error(exc)}", scrub), transient=True
            ) from exc

        if too_large:
            what = f"token answer: too large (over {TOKEN_ANSWER_LIMIT // 1024} KiB), not read further"
            if not 200 <= status < 300:
                what = f"HTTP {status} {reason}".strip() + f"; {what}"
            raise OAuthError(None, what, status_code=status, transient=status >= 500)
        try:
            parsed: object = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        data = parsed if isinstance(parsed, dict) else None
        if data is not None and isinstance(data.get("error"), str):
            description = data.get("error_description")
            raise OAuthError(
                _clean(data["error"], scrub),
                _clean(description, scrub) if isinstance(description, str) else None,
                status_code=status,
                transient=status >= 500,
            )
        if status >= 300 or status < 200:
            what = f"HTTP {status} {reason}".strip()
            if 300 <= status < 400:
                what += " (redirects are not followed)"
            raise OAuthError(None, what, status_code=status, transient=status >= 500)
        if data is None:
            raise OAuthError(None, "the token endpoint did not answer a JSON object", status_code=status)
        return data

    async def _accept(self, data: dict[str, object], *, used_refresh_token: str | None) -> _Token:
        try:
            answer = check_answer(data)  # all of it, before anything is saved or used
        except UnusableAnswer as exc:
            raise OAuthError(None, f"token answer: {exc}") from None
        new_refresh = answer.refresh_token
        if new_refresh is not None and new_refresh != used_refresh_token:
            # Not used before the new refresh token is durable: the server may have revoked the old one.
            await self._persist(new_refresh)
            log.info("oauth_refresh_token_rotated", webhook_id=self.webhook_id)

        expires_in = answer.expires_in
        early = max(expires_in * _EARLY_FRACTION, _MIN_EARLY)
        shown = int(expires_in) if expires_in.is_integer() else expires_in
        log.info("oauth_token_fetched", webhook_id=self.webhook_id, expires_in=shown)
        return _Token(answer.access_token, self._clock.now() + max(expires_in - early, 0.0))

    async def _persist(self, refresh_token: str) -> None:
        # Kept in memory until it is stored, for this process's next fetch if the store fails.
        self._rotated = self._unsaved = refresh_token
        try:
            if self._held is not None:
                await self._held.save(refresh_token)  # durable when the session ends (``_fetch``)
            else:
                await self._tokens.save_refresh_token(self.webhook_id, refresh_token)
                self._unsaved = None
        except RelayError as exc:
            raise OAuthError(None, f"could not save the refresh token: {type(exc).__name__}") from exc

    def _count(self, result: str) -> None:
        if self._on_token_request is not None:
            self._on_token_request(result)


def _bearer(token: _Token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.access_token}"}


def _clean(text: str, scrub: list[str]) -> str:
    """Server-provided or transport text made safe for an attempt record: no secret echoed back, bounded."""
    for secret in scrub:
        if len(secret) >= _MIN_SCRUB:
            text = text.replace(secret, "***")
    return text[:_MAX_DESCRIPTION]
