"""Ordering keys (CONTRACT §11), as every backend keeps them: which of a webhook's deliveries of one ordering key
may be attempted, and what a newer event of the key does to the older ones. Pure logic over the rows a backend reads
and writes; ``sqlite_outbox``, ``postgres_outbox`` and the memory store apply it.

A delivery of an ordered webhook (``ordering`` "fifo" or "latest") and a keyed event is, within its
``(webhook, ordering key)``, either

- **the head**: the one the key waits on. It is ``pending`` with a due time, ``delivering`` (in flight), or
  ``failed`` (parked: the key stays blocked until it is re-driven and succeeds, ends ``dead``, or is cancelled); or
- **waiting**: ``pending`` with no due time (``due_at`` NULL), so no claim ever takes it.

At most one delivery of a key is the head. When the head ends (``succeeded``, ``dead``, ``cancelled``,
``superseded``), the oldest waiting one (lowest seq: ingest order) becomes the head, due at once (``move_on``). A
claim hands out only due rows, so it never hands out a second delivery of a key while one is in flight.

``latest``: a new delivery of a key supersedes the key's head when it is not in flight, and every waiting one
(they are older); behind a head in flight it waits (one at a time, in order), and when that attempt fails, the
newer one supersedes it instead of a retry (``supersedes_on_failure``). An older event is never delivered after a
newer one of its key succeeded.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

FIFO = "fifo"
LATEST = "latest"
ORDERED = (FIFO, LATEST)
ENDED = ("succeeded", "dead", "cancelled", "superseded")  # a head with one of these lets the key move on


@dataclass(slots=True)
class KeyQueue:
    """One ``(webhook, ordering key)``'s unfinished deliveries, each named by a ref of the backend's (its seq)."""

    mode: str
    in_flight: Hashable | None = None  # the head, while it is being attempted
    head: Hashable | None = None  # the head, while it is not (pending with a due time, or parked)
    waiting: list[Hashable] = field(default_factory=list)  # oldest first

    def load(self, ref: Hashable, status: str, due: bool) -> None:
        """Take in one stored delivery of the key (in seq order): its status and whether it has a due time."""
        if status == "delivering":
            self.in_flight = ref
        elif status == "failed" or due:
            self.head = ref
        else:
            self.waiting.append(ref)

    def arrive(self, ref: Hashable) -> tuple[bool, list[Hashable]]:
        """A new delivery of the key: whether it is the head (due at once; the caller may start it: ``started``),
        and the deliveries it supersedes (``latest``: the head not in flight and every waiting one)."""
        superseded: list[Hashable] = []
        if self.mode == LATEST:
            superseded = [*([self.head] if self.head is not None else []), *self.waiting]
            self.head, self.waiting = None, []
        if self.in_flight is not None or self.head is not None or self.waiting:
            self.waiting.append(ref)
            return False, superseded
        self.head = ref
        return True, superseded

    def started(self, ref: Hashable) -> None:
        """The head ``ref`` was leased at once (committed ``delivering``)."""
        self.head, self.in_flight = None, ref


def superseded_on_replay(mode: str, newer_event: bool) -> bool:
    """Whether a replayed event's new delivery ends ``superseded`` at once: a ``latest`` key that has a delivery
    of a newer event (ingested later), so that the replay neither follows its success nor replaces it."""
    return mode == LATEST and newer_event


def superseded_on_redrive(mode: str, newer: bool) -> bool:
    """Whether a dead delivery of a key, re-driven, ends ``superseded`` instead: a ``latest`` key with a newer
    delivery (whatever became of it), so that an older event never follows a newer one of its key."""
    return mode == LATEST and newer


def supersedes_on_failure(mode: str, waiting: bool) -> bool:
    """Whether a head whose attempt failed (a retry or a park decided) ends ``superseded`` instead: a ``latest``
    key with a newer delivery waiting behind it."""
    return mode == LATEST and waiting


def move_on(queue: KeyQueue, ref: Hashable, status: str) -> tuple[Hashable | None, Hashable | None]:
    """After a result (or a cancellation) of ``ref``, the head of ``queue`` (loaded after it was written, so an ended
    ``ref`` is no longer in it): the head it supersedes (``ref`` itself: a ``latest`` head whose attempt failed with
    a newer delivery waiting), and the waiting delivery that becomes the head (due at once), each None when none."""
    superseded: Hashable | None = None
    if status in ("pending", "failed"):
        if queue.head != ref or not supersedes_on_failure(queue.mode, bool(queue.waiting)):
            return None, None
        superseded, queue.head = ref, None
    elif status not in ENDED:
        return None, None
    if queue.in_flight is not None or queue.head is not None or not queue.waiting:
        return superseded, None
    queue.head = queue.waiting.pop(0)
    return superseded, queue.head
