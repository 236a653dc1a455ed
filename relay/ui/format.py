"""What the dashboard's templates show beyond the data: times in UTC and relative ("3 min ago"), the success rate,
and the overview's chart drawn as inline SVG on the server (no script, no library)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from relay.models import format_time
from relay.store.base import HourCount


def utc(at: float | None) -> str:
    """``2026-12-02 05:41:09 UTC``; ``""`` for no time."""
    if at is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def iso(at: float | None) -> str:
    return format_time(at) or ""


def ago(at: float | None, now: float) -> str:
    """How long before (or after) ``now``: "just now", "3 min ago", "in 2 h", "5 days ago"."""
    if at is None:
        return ""
    delta = now - at
    span = abs(delta)
    if span < 45:
        return "just now" if delta >= 0 else "in a moment"
    for size, unit in ((86400, "days"), (3600, "h"), (60, "min")):
        if span >= size or unit == "min":
            count = max(1, round(span / size))
            label = "day" if unit == "days" and count == 1 else unit
            return f"{count} {label} ago" if delta >= 0 else f"in {count} {label}"
    raise AssertionError("unreachable")


def rate(attempts: int, failures: int) -> str:
    """The success rate as a percentage, ``"—"`` with no attempts."""
    if attempts <= 0:
        return "—"
    share = 100 * (attempts - failures) / attempts
    return f"{share:.1f} %" if share < 100 else "100 %"


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    attempts_y: float
    attempts_height: float
    failures_y: float
    failures_height: float
    label: str  # what the bar says to a screen reader and on hover


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    peak: int
    first: str  # the first hour's label, under the chart
    last: str


CHART_WIDTH, CHART_HEIGHT = 720, 160


def hourly_chart(hours: list[HourCount]) -> Chart:
    """One bar per hour: its attempts, with its failures drawn over them from the baseline."""
    peak = max((h.attempts for h in hours), default=0)
    scale = (CHART_HEIGHT - 4) / peak if peak else 0.0
    slot = CHART_WIDTH / max(1, len(hours))
    bars = []
    for index, hour in enumerate(hours):
        attempts_height = hour.attempts * scale
        failures_height = hour.failures * scale
        bars.append(
            Bar(
                x=round(index * slot + 1, 2),
                width=round(max(1.0, slot - 2), 2),
                attempts_y=round(CHART_HEIGHT - attempts_height, 2),
                attempts_height=round(attempts_height, 2),
                failures_y=round(CHART_HEIGHT - failures_height, 2),
                failures_height=round(failures_height, 2),
                label=f"{time.strftime('%H:00', time.gmtime(hour.start))} UTC: {hour.attempts} attempts, "
                f"{hour.failures} failed",
            )
        )
    first = utc(hours[0].start)[:-7] if hours else ""
    last = utc(hours[-1].start)[:-7] if hours else ""
    return Chart(CHART_WIDTH, CHART_HEIGHT, bars, peak, first, last)
