"""The one error root of the project and its few flat subclasses."""

from __future__ import annotations

from dataclasses import dataclass

# The command line's exit statuses: success, a failure, a usage or configuration error.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class RelayError(Exception):
    """Root of every error relay raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located by a key path (``webhooks[1].url``, ``[3].type``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(RelayError):
    """The configuration file is invalid; ``problems`` names each key path."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class ValidationError(RelayError):
    """Client input is invalid (API), with one problem per field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class StoreError(RelayError):
    """The store failed in a way the caller cannot fix."""


class StoreUnavailable(StoreError):
    """The store cannot write right now (disk full, locked, read-only); nothing was committed."""


class NotFound(RelayError):
    """A named object does not exist."""


class Conflict(RelayError):
    """The request conflicts with the object's state (e.g. a config-declared webhook)."""


class BlockedDestination(RelayError):
    """The destination is refused by the policy; raised before any socket opens."""
