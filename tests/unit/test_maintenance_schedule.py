"""Maintenance periods, due jobs and wake-ups: pure, no loop and no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from supervisor.maintenance_schedule import (
    AUDIT,
    CLEANUP,
    JOBS,
    Period,
    due_jobs,
    is_due,
    next_period_start,
    next_wake,
    period_start,
)

T0 = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC)
NINE = datetime(2026, 3, 2, 9, tzinfo=UTC)


def test_periods_are_utc_aligned_hours_and_days() -> None:
    assert period_start(Period.HOURLY, T0) == NINE
    assert period_start(Period.DAILY, T0) == MIDNIGHT
    assert next_period_start(Period.HOURLY, T0) == NINE + timedelta(hours=1)
    assert next_period_start(Period.DAILY, T0) == MIDNIGHT + timedelta(days=1)
    # A boundary belongs to the period it starts; the instant before, to the previous one.
    assert period_start(Period.HOURLY, NINE) == NINE
    assert period_start(Period.HOURLY, NINE - timedelta(microseconds=1)) == NINE - timedelta(
        hours=1
    )
    # Another zone names the same instant: the same period, in UTC.
    tokyo = T0.astimezone(timezone(timedelta(hours=9)))
    assert period_start(Period.DAILY, tokyo) == MIDNIGHT
    assert period_start(Period.DAILY, tokyo).utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="aware"):
        period_start(Period.DAILY, datetime(2026, 3, 2, 9))


def test_a_job_is_due_until_its_current_period_finished() -> None:
    assert is_due(AUDIT, T0, None)  # never ran
    assert is_due(AUDIT, T0, NINE - timedelta(hours=1))  # the last hour's run is not this one
    assert not is_due(AUDIT, T0, NINE)
    assert not is_due(CLEANUP, T0, MIDNIGHT)
    assert is_due(CLEANUP, T0, MIDNIGHT - timedelta(days=3))  # missed days are not caught up
    assert due_jobs(JOBS, T0, {}) == [(CLEANUP, MIDNIGHT), (AUDIT, NINE)]
    assert due_jobs(JOBS, T0, {"cleanup": MIDNIGHT}) == [(AUDIT, NINE)]
    assert due_jobs(JOBS, T0, {"cleanup": MIDNIGHT, "audit": NINE}) == []


def test_next_wake_is_now_while_due_else_the_next_period_start() -> None:
    assert next_wake(JOBS, T0, {"cleanup": MIDNIGHT}) == T0
    assert next_wake(JOBS, T0, {"cleanup": MIDNIGHT, "audit": NINE}) == NINE + timedelta(hours=1)
    late = datetime(2026, 3, 2, 23, 40, tzinfo=UTC)
    done = {"cleanup": MIDNIGHT, "audit": datetime(2026, 3, 2, 23, tzinfo=UTC)}
    assert next_wake(JOBS, late, done) == MIDNIGHT + timedelta(days=1)  # both fall due then
    assert next_wake([CLEANUP], T0, {"cleanup": MIDNIGHT}) == MIDNIGHT + timedelta(days=1)
    with pytest.raises(ValueError, match="no jobs"):
        next_wake([], T0, {})
