"""The retry decision, with fixed times: the ConsentProof schedule, Retry-After, parking, re-drive, death."""

from __future__ import annotations

import pytest

from relay.models import DeliveryStatus
from relay.retry import Decision, Outcome, RetryPolicy, decide, jittered

MIN, HOUR, DAY = 60.0, 3600.0, 86400.0
T0 = 1_700_000_000.0
POLICY = RetryPolicy(
    schedule=(0.0, 1 * MIN, 5 * MIN, 30 * MIN, 2 * HOUR),
    jitter=0.0,
    redrive_interval=HOUR,
    redrive_max_age=7 * DAY,
)
FAIL = Outcome(succeeded=False)


def test_success_ends_the_delivery() -> None:
    decision = decide(POLICY, attempt_number=3, outcome=Outcome(True), now=T0, created_at=T0, rand=0.5)
    assert decision == Decision(DeliveryStatus.SUCCEEDED, None)


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(1, 1 * MIN), (2, 5 * MIN), (3, 30 * MIN), (4, 2 * HOUR)],
)
def test_each_failure_waits_for_the_next_step(attempt: int, delay: float) -> None:
    now = T0 + 1000
    decision = decide(POLICY, attempt_number=attempt, outcome=FAIL, now=now, created_at=T0, rand=0.5)
    assert decision == Decision(DeliveryStatus.PENDING, now + delay)


def test_after_the_last_step_the_delivery_is_parked_for_the_redrive_interval() -> None:
    now = T0 + 3 * HOUR
    decision = decide(POLICY, attempt_number=5, outcome=FAIL, now=now, created_at=T0, rand=0.5)
    assert decision == Decision(DeliveryStatus.FAILED, now + HOUR)


def test_each_redrive_failure_parks_again_until_the_max_age_then_dead() -> None:
    created = T0
    now = created + 6 * DAY
    assert decide(POLICY, attempt_number=40, outcome=FAIL, now=now, created_at=created, rand=0.5).status == (
        DeliveryStatus.FAILED
    )
    late = created + 7 * DAY - 30 * MIN  # the next re-drive would fall past seven days
    assert decide(POLICY, attempt_number=41, outcome=FAIL, now=late, created_at=created, rand=0.5) == Decision(
        DeliveryStatus.DEAD, None
    )


def test_retry_after_delays_the_next_attempt_capped_at_the_longest_step() -> None:
    asked = Outcome(succeeded=False, retry_after=10 * MIN)
    decision = decide(POLICY, attempt_number=1, outcome=asked, now=T0, created_at=T0, rand=0.5)
    assert decision.next_attempt_at == T0 + 10 * MIN
    greedy = Outcome(succeeded=False, retry_after=DAY)
    decision = decide(POLICY, attempt_number=1, outcome=greedy, now=T0, created_at=T0, rand=0.5)
    assert decision.next_attempt_at == T0 + 2 * HOUR
    short = Outcome(succeeded=False, retry_after=1.0)
    decision = decide(POLICY, attempt_number=2, outcome=short, now=T0, created_at=T0, rand=0.5)
    assert decision.next_attempt_at == T0 + 5 * MIN  # never earlier than the schedule


def test_a_one_step_schedule_parks_after_the_first_failure() -> None:
    policy = RetryPolicy((0.0,), 0.0, HOUR, DAY)
    assert decide(policy, attempt_number=1, outcome=FAIL, now=T0, created_at=T0, rand=0.0).status == (
        DeliveryStatus.FAILED
    )


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 54.0), (0.5, 60.0), (0.999999, 66.0)])
def test_jitter_moves_a_delay_by_at_most_its_fraction(rand: float, expected: float) -> None:
    assert jittered(60.0, 0.1, rand) == pytest.approx(expected, abs=1e-3)


def test_jitter_applies_to_schedule_steps() -> None:
    policy = RetryPolicy((0.0, 100.0), 0.2, HOUR, DAY)
    low = decide(policy, attempt_number=1, outcome=FAIL, now=T0, created_at=T0, rand=0.0)
    high = decide(policy, attempt_number=1, outcome=FAIL, now=T0, created_at=T0, rand=0.999999)
    assert low.next_attempt_at == pytest.approx(T0 + 80.0)
    assert high.next_attempt_at == pytest.approx(T0 + 120.0, abs=1e-3)
