"""The retry decision: a pure function of the attempt's outcome, the policy and the time.

After a failed attempt a delivery either waits for its next scheduled step (``pending``), is parked
(``failed``: attempted again every ``redrive_interval``), or, once a further re-drive would fall past
``redrive_max_age`` counted from its creation, becomes ``dead`` (kept, re-driven only by hand).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.models import DeliveryStatus


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class RetryPolicy:
    schedule: tuple[float, ...]  # delay before each attempt; schedule[0] is the first (usually 0)
    jitter: float  # ± fraction applied to every delay
    redrive_interval: float
    redrive_max_age: float


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Outcome:
    succeeded: bool
    retry_after: float | None = None  # seconds asked for by a 429/503 answer


@dataclass(slots=True)  # a hot-path record: not frozen (see relay/models.py)
class Decision:
    status: DeliveryStatus
    next_attempt_at: float | None


def jittered(delay: float, jitter: float, rand: float) -> float:
    """``delay`` moved by up to ± ``jitter`` of itself; ``rand`` is uniform in [0, 1)."""
    return max(0.0, delay * (1.0 + jitter * (2.0 * rand - 1.0)))


def decide(
    policy: RetryPolicy,
    *,
    attempt_number: int,
    outcome: Outcome,
    now: float,
    created_at: float,
    rand: float,
) -> Decision:
    """What happens after attempt ``attempt_number`` (1-based) ended with ``outcome`` at ``now``."""
    if outcome.succeeded:
        return Decision(DeliveryStatus.SUCCEEDED, None)
    if attempt_number < len(policy.schedule):
        delay = jittered(policy.schedule[attempt_number], policy.jitter, rand)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, max(policy.schedule)))
        return Decision(DeliveryStatus.PENDING, now + delay)
    next_redrive = now + jittered(policy.redrive_interval, policy.jitter, rand)
    if next_redrive - created_at > policy.redrive_max_age:
        return Decision(DeliveryStatus.DEAD, None)
    return Decision(DeliveryStatus.FAILED, next_redrive)
