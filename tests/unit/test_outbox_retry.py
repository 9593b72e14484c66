"""Outbox retries: equal-jittered backoff, Retry-After, dead letters, account holds (pure)."""

from __future__ import annotations

import random

import pytest

from outbox.retry import (
    DeadLetter,
    ErrorClass,
    Failure,
    HoldAccount,
    Resolve,
    RetryItem,
    RetryPolicy,
    classify,
    decide,
)
from providers.errors import (
    AuthRevoked,
    Conflict,
    NotFound,
    Permanent,
    ProviderError,
    SyncStateExpired,
    Throttled,
    Transient,
    Unauthorized,
)

POLICY = RetryPolicy()  # 1 s doubling to 1 h, 10 attempts


def transient(message: str = "503") -> Failure:
    return Failure(ErrorClass.TRANSIENT, message)


def test_the_ceiling_doubles_from_one_second_and_caps_at_one_hour() -> None:
    ceilings = [POLICY.ceiling_s(n) for n in range(1, 15)]
    assert ceilings[:5] == [1, 2, 4, 8, 16]
    assert ceilings[11] == 2048
    assert ceilings[12:] == [3600, 3600]
    assert POLICY.ceiling_s(10_000) == 3600  # no overflow however long it failed


def test_equal_jitter_keeps_half_of_each_step_fixed() -> None:
    rng = random.Random(11)
    for failures in range(1, 20):
        ceiling = POLICY.ceiling_s(failures)
        delays = [POLICY.backoff_s(failures, rng) for _ in range(300)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        # Spread over the random half, not bunched at one end.
        assert max(delays) - min(delays) > ceiling / 2 * 0.9


def test_the_schedule_keeps_its_shape_despite_jitter() -> None:
    # Each jittered delay is at least the previous ceiling: retries never come sooner than the
    # un-jittered schedule one step earlier would have, so the backoff still grows; past the
    # cap, never sooner than half an hour.
    rng = random.Random(5)
    for failures in range(2, 13):
        assert POLICY.backoff_s(failures, rng) >= POLICY.ceiling_s(failures - 1)
    assert all(1800 <= POLICY.backoff_s(failures, rng) <= 3600 for failures in range(13, 40))


def test_the_same_seed_gives_the_same_delays() -> None:
    first = [POLICY.backoff_s(n, random.Random(42)) for n in range(1, 10)]
    again = [POLICY.backoff_s(n, random.Random(42)) for n in range(1, 10)]
    assert first == again


def test_a_transient_error_backs_off_the_item_alone() -> None:
    decision = decide(transient(), 0, POLICY, random.Random(1))
    assert isinstance(decision, RetryItem)
    assert decision.attempts == 1 and decision.error == "503"
    assert 0.5 <= decision.delay_s <= 1.0
    later = decide(transient(), 4, POLICY, random.Random(1))
    assert isinstance(later, RetryItem) and 8 <= later.delay_s <= 16


def test_the_last_allowed_attempt_dead_letters_with_the_last_error() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert isinstance(decide(transient("a"), 1, policy, random.Random(1)), RetryItem)
    assert decide(transient("b"), 2, policy, random.Random(1)) == DeadLetter(3, "b")


def test_a_failing_item_goes_through_its_budget_then_stops() -> None:
    rng = random.Random(9)
    attempts, waited = 0, 0.0
    while True:
        decision = decide(transient(), attempts, POLICY, rng)
        if isinstance(decision, DeadLetter):
            break
        assert isinstance(decision, RetryItem)
        attempts, waited = decision.attempts, waited + decision.delay_s
    assert decision.attempts == POLICY.max_attempts == 10
    assert (1 + 2 + 4 + 8 + 16 + 32 + 64 + 128 + 256) / 2 <= waited <= 511


def test_throttling_holds_the_account_and_honours_retry_after() -> None:
    decision = decide(Failure(ErrorClass.THROTTLED, "429", 30.0), 0, POLICY, random.Random(1))
    assert decision == HoldAccount(30.0, RetryItem(1, 30.0, "429"))
    # A short Retry-After does not shorten the backoff.
    short = decide(Failure(ErrorClass.THROTTLED, "429", 0.1), 5, POLICY, random.Random(1))
    assert isinstance(short, HoldAccount) and isinstance(short.item, RetryItem)
    assert short.delay_s is not None and 16 <= short.delay_s <= 32
    assert short.item.delay_s == short.delay_s


def test_retry_after_is_a_floor_for_transient_errors_too_even_beyond_the_cap() -> None:
    failure = Failure(ErrorClass.TRANSIENT, "503", 7200.0)
    decision = decide(failure, 20, RetryPolicy(max_attempts=50), random.Random(1))
    assert decision == RetryItem(21, 7200.0, "503")


def test_throttling_past_the_budget_dead_letters_but_still_holds_the_account() -> None:
    decision = decide(Failure(ErrorClass.THROTTLED, "429", 600.0), 9, POLICY, random.Random(1))
    assert decision == HoldAccount(600.0, DeadLetter(10, "429"))


def test_an_auth_failure_holds_the_account_until_reauthorized_without_charging_the_item() -> None:
    assert decide(Failure(ErrorClass.AUTH, "invalid_grant"), 3, POLICY, random.Random(1)) == (
        HoldAccount(None, None)
    )


def test_a_permanent_error_dead_letters_at_once() -> None:
    assert decide(Failure(ErrorClass.PERMANENT, "400"), 0, POLICY, random.Random(1)) == (
        DeadLetter(1, "400")
    )


@pytest.mark.parametrize("error", [ErrorClass.CONFLICT, ErrorClass.GONE])
def test_conflicts_and_gone_events_go_to_the_rules(error: ErrorClass) -> None:
    assert decide(Failure(error, "x"), 0, POLICY, random.Random(1)) == Resolve(error)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (AuthRevoked("x", provider="google"), ErrorClass.AUTH),
        (Unauthorized("x", provider="google"), ErrorClass.AUTH),
        (Throttled("x", provider="microsoft", retry_after_s=12.0), ErrorClass.THROTTLED),
        (SyncStateExpired("x", provider="google"), ErrorClass.TRANSIENT),
        (NotFound("x", provider="google", status=410), ErrorClass.GONE),
        (Conflict("x", provider="google", status=412), ErrorClass.CONFLICT),
        (Transient("x", provider="microsoft", status=503), ErrorClass.TRANSIENT),
        (Permanent("x", provider="google", status=400), ErrorClass.PERMANENT),
    ],
)
def test_classify_provider_errors(error: ProviderError, expected: ErrorClass) -> None:
    failure = classify(error)
    assert failure.error is expected
    assert failure.message == str(error)
    assert failure.retry_after_s == error.retry_after_s


@pytest.mark.parametrize(
    "kwargs",
    [{"initial_s": 0}, {"initial_s": 10, "max_s": 5}, {"max_attempts": 0}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempts_are_counted_from_zero_and_failures_from_one() -> None:
    with pytest.raises(ValueError):
        decide(transient(), -1, POLICY, random.Random(1))
    with pytest.raises(ValueError):
        POLICY.ceiling_s(0)
