"""A token endpoint's successful answer, checked whole against RFC 6749 §5.1 before any of it is saved or used.

A value that could not go into a header or a form (CR, LF, NUL, a space, a non-ASCII character) and a lifetime
that is not a sane number of seconds fail the fetch like an endpoint error. What is wrong is named; a value never
is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_EXPIRES_IN = 3600.0  # when the token endpoint does not say
MAX_EXPIRES_IN = 365 * 86400.0  # a longer lifetime is refused: no token is trusted for more than a year
_NUMERIC = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")  # expires_in sent as a string, as some servers do


class UnusableAnswer(ValueError):
    """The answer cannot be used; the message names what is wrong, never a value."""


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    access_token: str = field(repr=False)
    expires_in: float
    refresh_token: str | None = field(repr=False)


def check_answer(data: dict[str, object]) -> TokenAnswer:
    """A successful token answer checked against RFC 6749 §5.1. What is wrong is named; a value never is."""
    access_token = data.get("access_token")
    if access_token is None or access_token == "":
        raise UnusableAnswer("no access_token")
    if not isinstance(access_token, str):
        raise UnusableAnswer("access_token must be a string")
    _check_chars("access_token", access_token)
    token_type = data.get("token_type")
    if token_type is not None and not isinstance(token_type, str):
        raise UnusableAnswer("token_type must be a string")
    if token_type is not None and token_type.lower() != "bearer":
        raise UnusableAnswer(f"unsupported token_type {token_type[:40]!r}")
    refresh_token = data.get("refresh_token")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise UnusableAnswer("refresh_token must be a string")
    if refresh_token:
        _check_chars("refresh_token", refresh_token)
    return TokenAnswer(access_token, _expires_in(data.get("expires_in")), refresh_token or None)


def _check_chars(name: str, value: str) -> None:
    """Visible ASCII only (RFC 6749 Appendix A's VSCHAR less the space): the value goes into a header or a form."""
    if value.isascii() and value.isprintable() and " " not in value:
        return
    for char in value:
        if not char.isascii():
            raise UnusableAnswer(f"{name} holds a non-ASCII character")
        if not char.isprintable():
            raise UnusableAnswer(f"{name} holds a control character")
        if char == " ":
            raise UnusableAnswer(f"{name} holds a space")


def _expires_in(value: object) -> float:
    """Seconds from the answer's ``expires_in`` (a number, or a numeric string); the default when it is absent."""
    if value is None:
        return DEFAULT_EXPIRES_IN
    if isinstance(value, str) and _NUMERIC.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_EXPIRES_IN:
        raise UnusableAnswer(f"expires_in must be a positive number of seconds, at most {MAX_EXPIRES_IN:.0f} (a year)")
    return float(value)
