"""``rate_limit`` as a sliding window: no window of one second ever holds more attempts than the rate allows."""

from __future__ import annotations

import math
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from relay.ratelimit import RateWindow

T0 = 1_700_000_000.0


def busiest_second(starts: list[float]) -> int:
    """The most starts in any half-open window [t, t + 1s)."""
    ordered = sorted(starts)
    return max((sum(1 for s in ordered if t <= s < t + 1.0) for t in ordered), default=0)


def test_a_full_window_opens_one_second_after_its_oldest_start() -> None:
    window = RateWindow(5.0)
    assert window.available(T0) == 5
    window.take(3, T0)
    window.take(2, T0 + 0.5)
    assert window.available(T0 + 0.999) == 0 and window.next_free_at(T0 + 0.2) == T0 + 1.0
    assert window.available(T0 + 1.0) == 3  # the three of T0 left the window
    assert window.next_free_at(T0 + 1.0) == T0 + 1.0
    assert window.available(T0 + 1.5) == 5


def test_room_given_back_is_free_again() -> None:
    window = RateWindow(2.0)
    window.take(2, T0)
    window.give_back(1)
    assert window.available(T0) == 1
    window.give_back(5)  # never more than was taken
    assert window.available(T0) == 2


def test_below_one_a_second_the_window_is_one_over_the_rate() -> None:
    window = RateWindow(1 / 60)  # "1/m"
    window.take(1, T0)
    assert window.available(T0 + 59.9) == 0 and window.next_free_at(T0) == T0 + 60.0
    assert window.available(T0 + 60.0) == 1


def test_a_rate_that_is_not_whole_rounds_down_per_second() -> None:
    window = RateWindow(2.5)  # "150/m"
    assert window.limit == 2 and window.window == 1.0


def test_a_lower_rate_counts_the_starts_already_in_the_window() -> None:
    window = RateWindow(10.0)
    window.take(6, T0)
    lower = RateWindow(4.0)
    lower.starts = window.starts
    assert lower.available(T0 + 0.5) == -2 and lower.next_free_at(T0 + 0.5) == T0 + 1.0


@given(
    rate=st.sampled_from([0.5, 1.0, 1.5, 2.0, 5.0, 7.5, 50.0]),
    steps=st.lists(st.tuples(st.floats(0.0, 0.7), st.integers(0, 60)), min_size=1, max_size=80),
)
def test_no_second_ever_holds_more_than_the_rate(rate: float, steps: list[tuple[float, int]]) -> None:
    window = RateWindow(rate)
    now, started = T0, []
    for advance, wanted in steps:
        now += advance
        count = min(wanted, window.available(now))
        if count > 0:
            window.take(count, now)
            started += [now] * count
    assert busiest_second(started) <= max(1, math.floor(rate))
    if rate < 1.0:
        assert all(b - a >= 1 / rate for a, b in pairwise(started))
