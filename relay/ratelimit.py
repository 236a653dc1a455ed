"""A webhook's ``rate_limit`` as a sliding window: no window of one second holds more attempts than the rate.

A token bucket lets a full bucket and its refill out in the first second of a backlog (``5/s`` gave 9–10 attempts);
a window that remembers when the last attempts started cannot. For a rate of at least one a second the window is
one second and holds ``floor(rate)`` starts; below that, it is ``1/rate`` seconds and holds one.
"""

from __future__ import annotations

import math
from collections import deque


class RateWindow:
    __slots__ = ("limit", "rate", "starts", "window")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.limit = max(1, math.floor(rate))
        self.window = 1.0 if rate >= 1.0 else 1.0 / rate
        self.starts: deque[float] = deque()  # when the attempts in the current window started, oldest first

    def available(self, now: float) -> int:
        """How many attempts may start at ``now``."""
        starts = self.starts
        while starts and starts[0] <= now - self.window:
            starts.popleft()
        return self.limit - len(starts)

    def take(self, count: int, now: float) -> None:
        self.starts.extend([now] * count)

    def give_back(self, count: int) -> None:
        """Forget the last ``count`` starts taken: room reserved that no attempt used."""
        for _ in range(min(count, len(self.starts))):
            self.starts.pop()

    def next_free_at(self, now: float) -> float:
        """When the next attempt may start (``now`` if one may already)."""
        if self.available(now) > 0:
            return now
        return self.starts[len(self.starts) - self.limit] + self.window
