"""Generated ids: canonical ULID text, ordered by time, unique."""

from __future__ import annotations

import itertools
import random

import pytest

from relay import models
from relay.models import new_id, new_ulid

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def reference_ulid(millis: int, bits: int) -> str:
    """The ULID spec's encoding, one 5-bit group at a time, most significant first."""
    value = (millis << 80) | bits
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -5, -5))


def random_part(ulid: str) -> int:
    return int("".join(f"{CROCKFORD.index(c):05b}" for c in ulid[10:]), 2)


def test_the_encoding_is_the_canonical_ulid_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Counters near the points where the cached top characters change, and where the 80 bits wrap around.
    for start in (0, 1021, 2**40 - 2, 2**80 - 2, random.getrandbits(80)):
        monkeypatch.setattr(models, "_COUNTER", itertools.count(start))
        for step, now in enumerate((0.0, 1_700_000_000.0, 1_700_000_000.001, 123_456.789, (2**48 - 1) / 1000)):
            got = new_ulid(now)
            assert got == reference_ulid(int(now * 1000) & (2**48 - 1), (start + step) % 2**80)


def test_ids_of_one_millisecond_count_up_from_a_random_start() -> None:
    ids = [new_ulid(1_700_000_000.0) for _ in range(3000)]
    parts = [random_part(i) for i in ids]
    assert parts == [(parts[0] + n) % 2**80 for n in range(3000)]
    assert ids == sorted(ids) or parts[0] > 2**80 - 3000  # sorted unless the 80 bits wrapped around


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    times = [1_700_000_000 + i / 997 for i in range(5000)]
    ids = [new_id("dlv", t) for t in times]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 4 + 26 and set(i[4:]) <= set(CROCKFORD) for i in ids)
    by_time = [i[4:14] for i in ids]  # the first 10 characters are the milliseconds
    assert by_time == sorted(by_time)
