"""The outbox's daily cleanup: finished items past the retention period are deleted.

Invariants:
- only done and skipped items whose ``done_at`` is older than the retention go
  (``store.outbox.cleanup_done``); pending items and dead letters are never touched;
- idempotent: several replicas running it at once delete each row once and otherwise find
  nothing, so no coordination is needed;
- the first run comes shortly after start (``first_after_s``), then one a day; each run is
  jittered so replicas started together spread their runs; a run that failed for a dependency
  is tried again after ``retry_after_s`` instead of a day later;
- ``next_delay_s`` is pure; the loop only sleeps, runs and logs.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import structlog

from store.db import PgPool
from store.outbox import cleanup_done
from supervisor.resilient import DEPENDENCY_ERRORS

log = structlog.get_logger("supervisor.outbox_maintenance")

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class CleanupSchedule:
    """When cleanups run, in seconds."""

    first_after_s: float = 60.0  # after start: let the replica settle first
    every_s: float = DAY_S
    jitter_s: float = 300.0  # added, uniformly drawn, to every delay
    retry_after_s: float = 300.0  # after a run that failed for a dependency

    def __post_init__(self) -> None:
        if min(self.first_after_s, self.jitter_s) < 0:
            raise ValueError("first_after_s and jitter_s must be >= 0")
        if min(self.every_s, self.retry_after_s) <= 0:
            raise ValueError("every_s and retry_after_s must be positive")

    def next_delay_s(self, *, runs: int, failed: bool, rng: random.Random) -> float:
        """The wait before the next run, after ``runs`` attempts, the last of which ``failed``."""
        if runs < 0:
            raise ValueError("runs is >= 0")
        if runs == 0:
            base = self.first_after_s
        elif failed:
            base = self.retry_after_s
        else:
            base = self.every_s
        return base + rng.uniform(0, self.jitter_s)


async def cleanup_once(pool: PgPool, retention: timedelta) -> int:
    """Delete the finished items older than ``retention``, log how many; that count."""
    removed = await cleanup_done(pool, older_than=retention)
    log.info("outbox cleanup", removed=removed, retention_days=retention / timedelta(days=1))
    return removed


async def run_outbox_maintenance(
    pool: PgPool,
    retention: timedelta,
    *,
    schedule: CleanupSchedule | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``cleanup_once`` on ``schedule`` until cancelled."""
    if retention <= timedelta(0):
        raise ValueError("retention must be positive")
    schedule = schedule or CleanupSchedule()
    rng = rng or random.Random()
    runs, failed = 0, False
    while True:
        await sleep(schedule.next_delay_s(runs=runs, failed=failed, rng=rng))
        runs += 1
        try:
            await cleanup_once(pool, retention)
        except DEPENDENCY_ERRORS as error:
            failed = True
            log.warning(
                "outbox cleanup failed; trying again later",
                error=f"{type(error).__name__}: {error}",
                retry_in_s=schedule.retry_after_s,
            )
        else:
            failed = False
