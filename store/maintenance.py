"""Maintenance runs (``maintenance_runs``) and the cleanup's deletions.

Invariants:
- a (job, period) row is claimed by one holder at a time: ``claim_run`` inserts it, or takes
  over an unfinished one (its holder died or failed mid-way); a finished row is never claimed
  again, so a period completes at most once;
- ``fenced_run`` is the write fence: its transaction holds the run's row FOR SHARE and proceeds
  only while the row names this holder, so once another holder took the row over (an UPDATE,
  which waits for in-flight fenced transactions) no write of the former one can commit;
- event deletions lock their calendars' rows (FOR UPDATE SKIP LOCKED), as every event writer
  does, so a batch never races a sync page; a calendar busy now is cleaned at the next run;
- nothing here records a change-feed row: events that left the window were not deleted by
  anyone, and consumers must not read them as deletions (docs/maintenance.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson

from store.db import PgPool, PgPoolConnection, Queryable

Claim = Literal["claimed", "finished"]


class RunTakenOver(Exception):
    """The run's row names another holder now: this holder must write nothing more."""

    def __init__(self, job: str, period_start: datetime, holder: str | None) -> None:
        super().__init__(f"maintenance run {job}@{period_start.isoformat()} is held by {holder}")
        self.job = job
        self.period_start = period_start


@dataclass(frozen=True, slots=True)
class RunRow:
    """A row of ``maintenance_runs``."""

    job: str
    period_start: datetime
    holder: str
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    details: dict[str, Any]


async def claim_run(conn: Queryable, job: str, period_start: datetime, holder: str) -> Claim:
    """Claim ``job``'s run for the period: a new row, or an unfinished one taken over;
    ``finished`` when the period's run already completed (nothing to do)."""
    inserted = await conn.fetchval(
        "INSERT INTO maintenance_runs (job, period_start, holder) VALUES ($1, $2, $3)"
        " ON CONFLICT (job, period_start) DO NOTHING RETURNING 1",
        job,
        period_start,
        holder,
    )
    if inserted is not None:
        return "claimed"
    taken = await conn.fetchval(
        "UPDATE maintenance_runs SET holder = $3, attempts = attempts + 1, started_at = now(),"
        " outcome = NULL WHERE job = $1 AND period_start = $2 AND finished_at IS NULL"
        " RETURNING 1",
        job,
        period_start,
        holder,
    )
    return "finished" if taken is None else "claimed"


@asynccontextmanager
async def fenced_run(
    pool: PgPool, job: str, period_start: datetime, holder: str
) -> AsyncIterator[PgPoolConnection]:
    """A transaction that proceeds only while the run's row names ``holder`` (held FOR SHARE)."""
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchval(
            "SELECT holder FROM maintenance_runs WHERE job = $1 AND period_start = $2"
            " AND finished_at IS NULL FOR SHARE",
            job,
            period_start,
        )
        if current != holder:
            raise RunTakenOver(job, period_start, current)
        yield conn


async def finish_run(
    conn: Queryable,
    job: str,
    period_start: datetime,
    holder: str,
    *,
    outcome: Literal["done", "failed"],
    details: Mapping[str, Any],
) -> bool:
    """Record the attempt's outcome (``done`` also finishes the run); False if taken over."""
    status = await conn.execute(
        "UPDATE maintenance_runs SET outcome = $4, details = $5::jsonb,"
        " finished_at = CASE WHEN $4 = 'done' THEN now() END"
        " WHERE job = $1 AND period_start = $2 AND holder = $3 AND finished_at IS NULL",
        job,
        period_start,
        holder,
        outcome,
        orjson.dumps(dict(details)).decode(),
    )
    return status != "UPDATE 0"


async def last_finished(conn: Queryable) -> dict[str, datetime]:
    """The latest finished period of each job that ever finished one."""
    rows = await conn.fetch(
        "SELECT job, max(period_start) AS period_start FROM maintenance_runs"
        " WHERE finished_at IS NOT NULL GROUP BY job"
    )
    return {row["job"]: row["period_start"] for row in rows}


async def list_runs(conn: Queryable, job: str | None = None) -> list[RunRow]:
    """The recorded runs (of ``job``, or all), oldest period first."""
    rows = await conn.fetch(
        "SELECT job, period_start, holder, attempts, started_at, finished_at, outcome, details"
        " FROM maintenance_runs WHERE $1::text IS NULL OR job = $1 ORDER BY period_start, job",
        job,
    )
    return [
        RunRow(**{**dict(row.items()), "details": orjson.loads(row["details"])}) for row in rows
    ]


def all_day_cutoff(cutoff: datetime) -> date:
    """The latest all-day end date lying wholly before ``cutoff`` in every time zone: an
    all-day event ends at midnight of its end date in its calendar's zone (UTC-12 to UTC+14),
    so a day of margin keeps the rule exact without resolving each calendar's zone in SQL."""
    if cutoff.utcoffset() is None:
        raise ValueError("cutoff must be timezone-aware")
    return cutoff.astimezone(UTC).date() - timedelta(days=1)


async def delete_events_before(conn: Queryable, cutoff: datetime, *, batch: int) -> int:
    """Delete up to ``batch`` events lying wholly before ``cutoff`` (the sync's overlap rule:
    ended by then and started before it), of calendars with a window; how many."""
    status = await conn.execute(
        "WITH doomed AS (SELECT e.account_id, e.calendar_id, e.id FROM events e"
        " JOIN calendars c ON c.account_id = e.account_id AND c.id = e.calendar_id"
        " WHERE c.window_start IS NOT NULL AND ("
        " NOT e.all_day AND e.end_at <= $1 AND e.start_at < $1"
        " OR e.all_day AND e.end_date <= $2)"
        " LIMIT $3 FOR UPDATE OF c SKIP LOCKED)"
        " DELETE FROM events e USING doomed d WHERE e.account_id = d.account_id"
        " AND e.calendar_id = d.calendar_id AND e.id = d.id",
        cutoff,
        all_day_cutoff(cutoff),
        batch,
    )
    return int(status.split()[-1])


async def delete_resolved_conflicts(conn: Queryable, older_than: timedelta, *, batch: int) -> int:
    """Delete up to ``batch`` conflicts resolved more than ``older_than`` ago; how many."""
    status = await conn.execute(
        "DELETE FROM outbox_conflicts WHERE id IN (SELECT id FROM outbox_conflicts"
        " WHERE resolved_at < now() - $1::interval LIMIT $2)",
        older_than,
        batch,
    )
    return int(status.split()[-1])
