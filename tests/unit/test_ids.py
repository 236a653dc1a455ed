"""Generated ids: canonical ULID text, ordered by time, unique."""

from __future__ import annotations

import random

from relay import models
from relay.models import new_id, new_ulid

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def reference_ulid(millis: int, bits: int) -> str:
    """The ULID spec's encoding, one 5-bit group at a time, most significant first."""
    value = (millis << 80) | bits
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -5, -5))


def test_the_encoding_is_the_canonical_ulid_one() -> None:
    for now in (0.0, 1_700_000_000.0, 1_700_000_000.001, 123_456.789, (2**48 - 1) / 1000):
        twin = random.Random()
        twin.setstate(models._RANDOM.getstate())  # the bits new_ulid is about to draw
        got = new_ulid(now)
        assert got == reference_ulid(int(now * 1000) & (2**48 - 1), twin.getrandbits(80))


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    times = [1_700_000_000 + i / 997 for i in range(5000)]
    ids = [new_id("dlv", t) for t in times]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 4 + 26 and set(i[4:]) <= set(CROCKFORD) for i in ids)
    by_time = [i[4:14] for i in ids]  # the first 10 characters are the milliseconds
    assert by_time == sorted(by_time)
