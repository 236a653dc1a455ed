"""Typed, problem-collecting reads of raw configuration tables, shared by ``relay.config`` and
``relay.config_webhooks``: ``Fields`` (one table), the value converters, and ``SecretResolver`` (the ``env:``,
``file:`` and ``cred:`` secret references).

A converter takes a raw value and returns a typed one, or raises ``ValueError`` naming what was expected;
``Fields`` turns that into a ``Problem`` at the key path and carries on, so every problem is reported.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from relay.errors import Problem
from relay.models import Secret
from relay.units import parse_duration

T = TypeVar("T")

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_path(path: str, key: str | int) -> str:
    """``webhooks[1]`` + ``auth`` -> ``webhooks[1].auth``; odd keys are quoted (``headers."X Y"``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    name = key if _SIMPLE_KEY.fullmatch(key) else json.dumps(key)
    return f"{path}.{name}" if path else name


def choices(values: Iterable[str]) -> str:
    quoted = [f'"{v}"' for v in values]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


def as_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def as_nonempty_str(value: object) -> str:
    if not as_str(value):
        raise ValueError("must not be empty")
    return as_str(value)


def as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def int_at_least(minimum: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return convert


def positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def one_of(*allowed: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if as_str(value) not in allowed:
            raise ValueError(f"must be {choices(allowed)}")
        return as_str(value)

    return convert


class SecretResolver:
    """Turns a secret string into a ``Secret``: ``env:NAME``, ``file:/path`` (its first line), ``cred:NAME``
    (``$CREDENTIALS_DIRECTORY/NAME``), anything else is the secret itself.

    ``environ=None`` takes every string literally: an API client must never read the server's environment.
    """

    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self._environ = environ

    def __call__(self, value: object) -> Secret:
        text = as_nonempty_str(value)
        kind, colon, name = text.partition(":")
        if self._environ is None or not colon or kind not in ("env", "file", "cred"):
            return Secret(text)
        if not name:
            raise ValueError(f"{kind}: needs a name after the colon")
        if kind == "env":
            found = self._environ.get(name)
            if found is None:
                raise ValueError(f"environment variable {name} is not set")
            if not found:
                raise ValueError(f"environment variable {name} is empty")
            return Secret(found)
        if kind == "file":
            return Secret(_first_line(Path(name)))
        directory = self._environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ValueError(f"cred:{name} needs $CREDENTIALS_DIRECTORY (set by systemd's LoadCredential=)")
        if "/" in name or name in (".", ".."):
            raise ValueError(f"cred:{name} must name a file in $CREDENTIALS_DIRECTORY")
        return Secret(_first_line(Path(directory) / name))


def _first_line(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise ValueError(f"the first line of {path} is empty")
    return line


class Fields:
    """Typed reads of one raw table. A wrong value records a ``Problem`` at its key path and reads as None; so
    does an absent one (with a problem only when ``required`` gives its message). Unknown keys are problems.
    """

    def __init__(
        self,
        raw: Mapping[str, object],
        path: str,
        problems: list[Problem],
        *,
        known: Iterable[str],
        unknown: str = "unknown key",
        table_noun: str = "a table",
    ) -> None:
        self.raw, self.path, self.problems, self.table_noun = raw, path, problems, table_noun
        known = sorted(known)
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                self.problem(key, f'{unknown} (did you mean "{close[0]}"?)' if close else unknown)

    def at(self, key: str | int) -> str:
        return key_path(self.path, key)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.at(key), message))

    def present(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def get(self, key: str, convert: Callable[[object], T], *, required: str | None = None) -> T | None:
        value = self.raw.get(key)
        if value is None:
            if required is not None:
                self.problem(key, required)
            return None
        try:
            return convert(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return None

    def items(
        self,
        key: str,
        convert: Callable[[object], T],
        *,
        required: str | None = None,
        non_empty: bool = False,
        max_items: int | None = None,
    ) -> list[T] | None:
        """A list whose every item converts; problems name the item (``events[2]``)."""
        value = self.get(key, _as_list, required=required)
        if value is None:
            return None
        if non_empty and not value:
            self.problem(key, "must not be empty")
            return None
        if max_items is not None and len(value) > max_items:
            self.problem(key, f"must have at most {max_items} items")
            return None
        result: list[T] = []
        ok = True
        for index, item in enumerate(value):
            try:
                result.append(convert(item))
            except ValueError as exc:
                self.problems.append(Problem(key_path(self.at(key), index), str(exc)))
                ok = False
        return result if ok else None

    def table(self, key: str) -> Mapping[str, object] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.problem(key, f"must be {self.table_noun}")
            return None
        return value

    def string_table(
        self, key: str, convert_key: Callable[[str], str], convert_value: Callable[[object], str]
    ) -> dict[str, str] | None:
        """A table of string -> string; problems name the entry (``headers.X-Tenant``)."""
        value = self.table(key)
        if value is None:
            return None
        result: dict[str, str] = {}
        ok = True
        for name, item in value.items():
            try:
                result[convert_key(name)] = convert_value(item)
            except ValueError as exc:
                self.problems.append(Problem(key_path(self.at(key), name), str(exc)))
                ok = False
        return result if ok else None


def _as_list(value: object) -> list[object]:
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list")
    return list(value)
