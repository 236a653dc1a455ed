"""One HTTP attempt: render, sign, authenticate, POST, classify the outcome. No retry decision is taken here."""

from __future__ import annotations

import email.utils
import functools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from relay import __version__
from relay.auth import Authenticator, OAuthError
from relay.clock import Clock
from relay.errors import BlockedDestination
from relay.models import Attempt, Claim, ErrorKind, Webhook, format_time
from relay.outbound import describe_client_error, read_capped
from relay.render import render_body, stamp_sent_at
from relay.signing import signature_headers

RESPONSE_BODY_LIMIT = 1024
_DRAIN_LIMIT = 64 * 1024


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class AttemptReport:
    started_at: float
    duration_ms: float
    status_code: int | None
    error: ErrorKind | None
    error_detail: str | None
    response_body: str | None
    retry_after: float | None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    def to_attempt(self, number: int, next_attempt_at: float | None) -> Attempt:
        """The attempt record, with the decision taken after it."""
        return Attempt(
            number=number,
            started_at=self.started_at,
            duration_ms=self.duration_ms,
            status_code=self.status_code,
            error=self.error,
            error_detail=self.error_detail,
            response_body=self.response_body,
            next_attempt_at=next_attempt_at,
        )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class Deliverer:
    """Sends attempts over one shared ``ClientSession`` (keep-alive per endpoint, no proxies, no redirects)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        user_agent: str,
        default_timeout: float,
        authenticator_for: Callable[[Webhook], Authenticator],
    ) -> None:
        self.session = session
        self.clock = clock
        self.user_agent = user_agent.replace("{version}", __version__)
        self.default_timeout = default_timeout
        self.authenticator_for = authenticator_for

    async def attempt(self, webhook: Webhook, claim: Claim) -> AttemptReport:
        started_at = self.clock.now()
        began = time.perf_counter()

        def report(
            status: int | None,
            error: ErrorKind | None,
            detail: str | None,
            body: str | None = None,
            retry_after: float | None = None,
        ) -> AttemptReport:
            return AttemptReport(
                started_at, (time.perf_counter() - began) * 1000, status, error, detail, body, retry_after
            )

        body = render_body(claim.event, webhook.format)
        if webhook.sent_at_field:
            body = stamp_sent_at(body, webhook.sent_at_field, format_time(started_at) or "")
        timeout = webhook.timeout or self.default_timeout
        authenticator = self.authenticator_for(webhook)
        try:
            # The token endpoint has its own timeout inside the authenticator, so a hung one is an oauth_error.
            auth_headers = await authenticator.headers()
            headers = self._headers(webhook, claim, body, started_at, auth_headers)
            status, text, retry_after = await self._post(webhook.url, headers, body, timeout)
            if status == 401 and authenticator.retry_on_401:
                authenticator.invalidate(auth_headers)
                auth_headers = await authenticator.headers()
                headers = self._headers(webhook, claim, body, self.clock.now(), auth_headers)
                status, text, retry_after = await self._post(webhook.url, headers, body, timeout)
        except OAuthError as exc:
            return report(None, ErrorKind.OAUTH_ERROR, str(exc))
        except BlockedDestination as exc:
            return report(None, ErrorKind.BLOCKED_DESTINATION, str(exc))
        except TimeoutError:
            return report(None, ErrorKind.TIMEOUT, f"no complete answer within {timeout:g}s")
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            return report(None, ErrorKind.TLS_ERROR, describe_client_error(exc))
        except (aiohttp.ClientError, OSError) as exc:
            return report(None, ErrorKind.CONNECT_ERROR, describe_client_error(exc))
        if 200 <= status < 300:
            return report(status, None, None, text)
        detail = f"HTTP {status}"
        return report(status, ErrorKind.HTTP_ERROR, detail, text, retry_after if status in (429, 503) else None)

    def _headers(
        self, webhook: Webhook, claim: Claim, body: bytes, now: float, auth_headers: dict[str, str]
    ) -> dict[str, str]:
        event = claim.event
        headers = {
            **webhook.headers,
            "Content-Type": "application/json",
            "User-Agent": self.user_agent,
            "X-Event-ID": event.id,
            "X-Event-Type": event.type,
            "X-Delivery-Attempt": str(claim.attempt_number),
        }
        secrets = [s.reveal() for s in webhook.signing_secrets(now)]
        headers.update(
            signature_headers(
                webhook.signature,
                secrets,
                event_id=event.id,
                webhook_id=webhook.id,
                timestamp=int(now),
                body=body,
            )
        )
        headers.update(auth_headers)
        return headers

    async def _post(
        self, url: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> tuple[int, str, float | None]:
        # aiohttp's own total timeout (it covers reading the answer too): an ``asyncio.timeout`` on top would be
        # a second timer per attempt.
        async with self.session.post(
            url, data=body, headers=headers, allow_redirects=False, timeout=_client_timeout(timeout)
        ) as response:
            # A little more is drained so the connection can be reused; a large answer closes it instead.
            head, _ = await read_capped(response, RESPONSE_BODY_LIMIT, drain=_DRAIN_LIMIT)
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock.now())
            return response.status, head.decode("utf-8", errors="replace"), retry_after


@functools.lru_cache(maxsize=64)
def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)
