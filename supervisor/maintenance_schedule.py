"""When maintenance jobs run: periods, what is due, the next wake-up. Pure: no I/O, no clock.

Invariants:
- a period is a UTC-aligned interval: an hour, or a day from midnight UTC; every instant lies
  in exactly one period of each length, named by its start;
- a job is due when its last finished period is older than the period ``now`` lies in (or it
  never finished one); only the current period is ever run: periods missed while no replica
  held the lease are skipped, not caught up (each run covers everything older anyway);
- ``next_wake`` is ``now`` while a job is due, else the earliest next period start.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


class Period(enum.Enum):
    """How often a job runs, as the length of its period."""

    HOURLY = timedelta(hours=1)
    DAILY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Job:
    """A maintenance job: its name (the key of its runs) and its period."""

    name: str
    period: Period


CLEANUP = Job("cleanup", Period.DAILY)
AUDIT = Job("audit", Period.HOURLY)
JOBS: tuple[Job, ...] = (CLEANUP, AUDIT)

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # a midnight UTC: periods are counted from it


def _aware(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError("instants must be timezone-aware")
    return now.astimezone(UTC)


def period_start(period: Period, now: datetime) -> datetime:
    """The start of the period ``now`` lies in."""
    elapsed = _aware(now) - _EPOCH
    return _EPOCH + (elapsed // period.value) * period.value


def next_period_start(period: Period, now: datetime) -> datetime:
    """The start of the period after the one ``now`` lies in."""
    return period_start(period, now) + period.value


def is_due(job: Job, now: datetime, last_finished: datetime | None) -> bool:
    """Whether ``job`` should run now, given the start of its last finished period."""
    return last_finished is None or _aware(last_finished) < period_start(job.period, now)


def due_jobs(
    jobs: Sequence[Job], now: datetime, last_finished: Mapping[str, datetime]
) -> list[tuple[Job, datetime]]:
    """The jobs due now, each with the period (start) to run, in ``jobs`` order."""
    return [
        (job, period_start(job.period, now))
        for job in jobs
        if is_due(job, now, last_finished.get(job.name))
    ]


def next_wake(
    jobs: Sequence[Job], now: datetime, last_finished: Mapping[str, datetime]
) -> datetime:
    """When a job is next due: ``now`` if one is, else the earliest next period start."""
    if not jobs:
        raise ValueError("no jobs")
    if due_jobs(jobs, now, last_finished):
        return _aware(now)
    return min(next_period_start(job.period, now) for job in jobs)
