"""The demo's fault schedule (pure): deterministic per seed, every kind in every round, bounded
gaps, and nothing at all when the rate is zero."""

from __future__ import annotations

from itertools import islice, pairwise

import pytest

from sandbox.demo.schedule import FAULT_KINDS, fault_schedule


def test_same_seed_same_schedule_and_another_seed_another() -> None:
    first = list(islice(fault_schedule(7, 2.0), 50))
    assert first == list(islice(fault_schedule(7, 2.0), 50))
    assert first != list(islice(fault_schedule(8, 2.0), 50))


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_every_round_holds_each_kind_once(seed: int) -> None:
    planned = list(islice(fault_schedule(seed, 1.0), len(FAULT_KINDS) * 20))
    for start in range(0, len(planned), len(FAULT_KINDS)):
        round_ = planned[start : start + len(FAULT_KINDS)]
        assert sorted(p.kind for p in round_) == sorted(FAULT_KINDS)


def test_times_grow_with_bounded_gaps_at_the_rate() -> None:
    per_s = 4.0
    planned = list(islice(fault_schedule(3, per_s), 400))
    times = [0.0] + [p.at_s for p in planned]
    gaps = [b - a for a, b in pairwise(times)]
    assert all(0.5 / per_s <= gap <= 1.5 / per_s for gap in gaps)
    assert planned[-1].at_s == pytest.approx(len(planned) / per_s, rel=0.1)  # mean rate
    assert all(p.pick >= 0 for p in planned)


def test_a_zero_rate_or_no_kinds_is_an_empty_schedule() -> None:
    assert list(fault_schedule(1, 0.0)) == []
    assert list(fault_schedule(1, -1.0)) == []
    assert list(fault_schedule(1, 1.0, kinds=())) == []


def test_only_the_kinds_asked_for() -> None:
    planned = list(islice(fault_schedule(5, 1.0, kinds=("crash",)), 10))
    assert {p.kind for p in planned} == {"crash"}
