"""``format_time`` caches the last millisecond's text: it must still say exactly what datetime says."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from relay.models import format_time


def _reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False), st.integers(min_value=-3, max_value=3))
def test_format_time_matches_datetime_including_near_millisecond_edges(ts: float, nudge: int) -> None:
    # The same and neighbouring moments one after the other: the cache is hit and missed on either side of an edge.
    for moment in (ts, ts + nudge * 1e-7, round(ts, 3) + nudge * 5e-7, ts):
        assert format_time(moment) == _reference(moment)


def test_edges() -> None:
    for moment in (0.0, 0.0005, 0.0004999, 0.9995, 0.9999995, -0.0005, 1700000000.0009995, 1700000000.9999996):
        assert format_time(moment) == _reference(moment)
    assert format_time(None) is None
