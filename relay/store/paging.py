"""What every backend's lists share: a cursor is the last position (seq) a page showed, and an event's
``created_at`` is compared as microseconds since the epoch (its normalised text does not sort as time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relay.errors import Problem, ValidationError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def position(cursor: str | None) -> int | None:
    """The seq a list's cursor names; ``ValidationError`` naming ``cursor`` for anything a list did not give."""
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise ValidationError([Problem("cursor", "is not a cursor this list gave")])
    return int(cursor)


def micros(moment: datetime) -> int:
    """A moment as ``events.created_us`` holds one: microseconds since the epoch, exactly."""
    return (moment - _EPOCH) // timedelta(microseconds=1)
