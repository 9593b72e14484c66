"""Pure restart logic: backoff, budgets, the restart circuit and the deadline heap (no loop)."""

from __future__ import annotations

import random

import pytest

from actors.circuit import Circuit, CircuitPolicy, CircuitState
from actors.deadlines import DeadlineHeap
from actors.policy import RestartBudget, RestartPolicy, RestartType


def test_backoff_grows_exponentially_within_jitter_and_is_capped() -> None:
    policy = RestartPolicy(backoff_initial_s=1.0, backoff_max_s=8.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (60, 8.0)]:
        delays = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # really jittered


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        RestartPolicy().backoff_s(0, random.Random())


@pytest.mark.parametrize(
    ("restart", "crashed", "expected"),
    [
        (RestartType.PERMANENT, True, True),
        (RestartType.PERMANENT, False, True),
        (RestartType.TRANSIENT, True, True),
        (RestartType.TRANSIENT, False, False),
        (RestartType.TEMPORARY, True, False),
        (RestartType.TEMPORARY, False, False),
    ],
)
def test_restart_types(restart: RestartType, crashed: bool, expected: bool) -> None:
    assert RestartPolicy().should_restart(restart, crashed=crashed) is expected


def test_budget_exhausts_only_inside_the_period() -> None:
    policy = RestartPolicy(max_restarts=3, period_s=60.0)
    budget = RestartBudget()
    assert budget.failures is None  # nothing allocated before the first failure
    assert [budget.record_failure(t, policy) for t in (0.0, 1.0, 2.0)] == [1, 2, 3]
    assert budget.record_failure(3.0, policy) is None

    spaced = RestartBudget()
    # One crash every 61 s forever: never more than one inside the period.
    assert all(spaced.record_failure(t * 61.0, policy) == 1 for t in range(100))


def test_budget_forgets_old_failures() -> None:
    policy = RestartPolicy(max_restarts=2, period_s=10.0)
    budget = RestartBudget()
    assert budget.record_failure(0.0, policy) == 1
    assert budget.record_failure(1.0, policy) == 2
    assert budget.record_failure(10.5, policy) == 2  # the failure at 0.0 left the period
    budget.reset()
    assert budget.record_failure(11.0, policy) == 1


def test_circuit_opens_on_a_share_of_the_population() -> None:
    circuit = Circuit(CircuitPolicy(window_s=10, min_failures=5, failure_ratio=0.5))
    population = 20  # threshold = max(5, 10) = 10
    opened = [circuit.record_failure(float(i) * 0.1, population) for i in range(10)]
    assert opened == [False] * 9 + [True]
    assert circuit.state is CircuitState.OPEN and circuit.holding


def test_circuit_ignores_failures_spread_beyond_the_window() -> None:
    circuit = Circuit(CircuitPolicy(window_s=10, min_failures=3, failure_ratio=0.01))
    for i in range(100):
        assert not circuit.record_failure(i * 6.0, population=10)
    assert circuit.state is CircuitState.CLOSED


def test_circuit_half_opens_after_cooldown_and_closes_on_probe_success() -> None:
    circuit = Circuit(CircuitPolicy(min_failures=1, cooldown_s=5, max_cooldown_s=15))
    assert circuit.record_failure(100.0, population=1)
    assert not circuit.half_open(104.9)
    assert circuit.half_open(105.0)
    assert circuit.state is CircuitState.HALF_OPEN and circuit.holding
    circuit.probe_failed(106.0)
    assert circuit.state.value == "open"
    assert circuit.cooldown_s == 10 and circuit.half_open_at == 116.0
    assert circuit.half_open(116.0)
    circuit.probe_failed(117.0)
    assert circuit.cooldown_s == 15  # capped
    assert circuit.half_open(132.0)
    assert circuit.probe_succeeded()
    assert circuit.state.value == "closed" and not circuit.holding
    assert circuit.times_opened == 3


def test_deadline_heap_pops_due_entries_earliest_first() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    assert heap.push(10.0, "a")
    assert heap.push(5.0, "b")  # the new earliest: the caller re-arms its timer
    assert not heap.push(7.0, "c")
    assert heap.push(5.0, "a")  # ties the earliest; equal times order by item
    assert heap.earliest() == 5.0
    assert heap.pop_due(4.9) == []
    assert heap.pop_due(7.0) == [(5.0, "a"), (5.0, "b"), (7.0, "c")]
    assert heap.earliest() == 10.0
    assert heap.pop_due(100.0) == [(10.0, "a")]
    assert len(heap) == 0 and heap.earliest() is None
