"""The errors of relay's client (``relay.client``): one root, ``RelayClientError``, and a class for each way a
request can end badly. ``Transient`` is the client's own signal to tenacity that a try may be worth repeating."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from relay.errors import RelayError

if TYPE_CHECKING:
    from relay.client_core import Accepted


class RelayClientError(RelayError):
    """Root of every error the client raises; ``str()`` is one line for a person.

    From ``send``/``send_batch``, ``event_ids`` holds the ids of the events the relay has not confirmed: sending
    those events again with the same ids is safe (an id the relay already has is a no-op).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.event_ids: tuple[str, ...] = ()


class RejectedError(RelayClientError):
    """The relay answered 4xx: it refused the request, and would refuse it again unchanged.

    ``code`` and ``message`` are the API's (``validation_error``, …); ``details`` lists each wrong field as
    ``{"path": "[3].type", "message": …}`` (paths count from the start of the whole batch).
    """

    def __init__(self, status: int, code: str, message: str, details: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(f"{status} {code}: {message}", status=status)
        self.code = code
        self.message = message
        self.details = [dict(item) for item in details]


class UnavailableError(RelayClientError):
    """The relay could not be reached or could not take the request (a refused connection, a timeout, a 502, 503
    or 504), and the client gave up: after its retry budget for sends, at once for ``call``.

    After a timeout the relay may have stored the events anyway: send them again with the same ids.
    """

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message, status=status)
        self.attempts = attempts


class ServerError(RelayClientError):
    """The relay failed (a 5xx that retrying does not help) or answered in a way a relay does not."""


class PartialBatchError(RelayClientError):
    """A batch sent in several requests failed after some of them were accepted.

    ``accepted`` are the events the relay stored (in order); ``event_ids`` are the others, whose request failed or
    was never sent; ``error`` is why (``RejectedError``, ``UnavailableError``, …, also the ``__cause__``).
    """

    def __init__(self, accepted: Sequence[Accepted], remaining_ids: Sequence[str], error: RelayClientError) -> None:
        total = len(accepted) + len(remaining_ids)
        first, last = accepted[0].id, accepted[-1].id
        span = first if first == last else f"{first} … {last}"
        super().__init__(
            f"{len(accepted)} of {total} events were accepted ({span}), then a request failed: {error}",
            status=error.status,
        )
        self.accepted = tuple(accepted)
        self.error = error
        self.event_ids = tuple(remaining_ids)

    @property
    def accepted_ids(self) -> tuple[str, ...]:
        return tuple(item.id for item in self.accepted)


class Transient(Exception):
    """One try failed in a way another may not (the client's own signal to tenacity, never raised to callers)."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
