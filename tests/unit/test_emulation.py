"""The rule mechanics every emulator shares (pure): matching, counting, firing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sandbox.emulators.shared.clock import Clock
from sandbox.emulators.shared.faults import FaultBook


def book() -> FaultBook:
    return FaultBook.for_errors({"unavailable", "throttled"})


def test_a_rule_fires_count_times_then_is_gone() -> None:
    faults = book()
    faults.add("unavailable", method="get", path="/v1/*", count=2)
    assert faults.fire("POST", "/v1/x").error is None  # other method
    assert faults.fire("GET", "/v2/x").error is None  # other path
    assert [faults.fire("GET", "/v1/x").error is not None for _ in range(3)] == [True, True, False]
    assert faults.faults == []


def test_only_the_first_matching_error_fires_but_every_shaping_rule_applies() -> None:
    faults = book()
    first = faults.add("throttled", count=1, retry_after="2.128")
    faults.add("unavailable", count=1)
    faults.add("latency", delay_s=0.5, count=None)
    faults.add("latency", delay_s=0.25, count=None)
    faults.add("page_size", page_size=3)
    fired = faults.fire("GET", "/any")
    assert fired.error is first and fired.error.retry_after == "2.128"
    assert fired.delay_s == 0.75 and fired.page_size == 3
    second = faults.fire("GET", "/any")
    assert second.error is not None and second.error.kind == "unavailable"  # not spent before
    assert second.page_size is None and second.delay_s == 0.75  # unlimited rules stay


def test_unknown_kinds_and_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        book().add("rate_limit")
    with pytest.raises(ValueError, match="count"):
        book().add("unavailable", count=0)


def test_clock_freezes_and_advances() -> None:
    moment = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    clock = Clock(moment)
    assert clock.now() == moment
    clock.advance(timedelta(hours=1))
    assert clock.now() == moment + timedelta(hours=1)
    clock.set_now(None)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)
