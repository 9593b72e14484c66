"""The maintenance jobs: the daily cleanup and the hourly audit with its repair.

Invariants:
- every write batch runs inside ``RunFence.transaction``: it starts only while this replica
  holds the maintenance lease (as far as its lease timing knows) and commits only while the
  run's row still names this holder (``store.maintenance.fenced_run``), so a former holder's
  late batch fails instead of landing;
- the cleanup deletes events that lie wholly before the start of the window the sync would
  follow now (``sync_window``), finished outbox items past the retention and conflicts resolved
  longer ago than the retention, and replaced channels past their grace; it records no
  change-feed rows (docs/maintenance.md);
- the audit reads, decides (``maintenance_audit.audit``, pure), and repairs by appending
  stream entries for the owning actors; it never touches an actor or a channel itself;
- each job returns counts for the run's ``details``; none carries a secret.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from actors.account.policy import sync_window
from cluster.streams import append
from config.settings import Settings
from kinds import default_registry
from store.audit import read_audit_snapshot
from store.channels import delete_retired
from store.db import PgPool, PgPoolConnection
from store.maintenance import (
    delete_events_before,
    delete_resolved_conflicts,
    fenced_run,
)
from store.outbox import cleanup_done
from supervisor.maintenance_audit import (
    AuditPolicy,
    Finding,
    audit,
    count_findings,
    repair_entries,
)

JobAction = Callable[["RunFence", datetime], Awaitable[dict[str, Any]]]


class LeaseLost(Exception):
    """The maintenance lease is no longer held: the run must stop writing."""


@dataclass(frozen=True, slots=True)
class RunFence:
    """The write fence of one run: the lease held, and the run's row still this holder's."""

    pool: PgPool
    job: str
    period_start: datetime
    holder: str
    holding: Callable[[], bool]

    def check_nowait(self) -> None:
        """Raise ``LeaseLost`` unless the lease is held."""
        if not self.holding():
            raise LeaseLost(f"maintenance lease lost during {self.job}")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgPoolConnection]:
        """A transaction for one write batch (``LeaseLost`` / ``RunTakenOver`` refuse it)."""
        self.check_nowait()
        async with fenced_run(self.pool, self.job, self.period_start, self.holder) as conn:
            yield conn


@dataclass(frozen=True, slots=True)
class CleanupPolicy:
    """What the daily cleanup removes."""

    window_back: timedelta  # the sync window reaches this far back (IW_SYNC_WINDOW_BACK_DAYS)
    window_ahead: timedelta
    outbox_retention: timedelta  # done/skipped items and resolved conflicts are kept this long
    batch: int = 1000  # rows per statement (and per fenced transaction)


def configured_providers(settings: Settings) -> frozenset[str]:
    """The kinds whose OAuth client is configured (the accounts replicas run)."""
    return default_registry().configured(settings)


def audit_policy(settings: Settings, providers: frozenset[str] | None = None) -> AuditPolicy:
    """The audit's thresholds from the settings."""
    return AuditPolicy(
        stale_after=timedelta(seconds=settings.sync_poll_s * settings.maintenance_stale_factor),
        push=settings.public_base_url is not None,
        renewal_margin=timedelta(seconds=settings.maintenance_channel_margin_s),
        providers=configured_providers(settings) if providers is None else providers,
    )


def cleanup_policy(settings: Settings) -> CleanupPolicy:
    """The cleanup's cut-offs from the settings."""
    return CleanupPolicy(
        window_back=timedelta(days=settings.sync_window_back_days),
        window_ahead=timedelta(days=settings.sync_window_ahead_days),
        outbox_retention=timedelta(days=settings.outbox_retention_days),
    )


async def run_cleanup(fence: RunFence, now: datetime, policy: CleanupPolicy) -> dict[str, Any]:
    """Delete what left the window or the retention, batch by batch; the counts."""
    cutoff = sync_window(now, policy.window_back, policy.window_ahead).start
    events = 0
    while True:
        async with fence.transaction() as conn:
            deleted = await delete_events_before(conn, cutoff, batch=policy.batch)
        events += deleted
        if deleted < policy.batch:
            break
    async with fence.transaction() as conn:
        outbox = await cleanup_done(conn, older_than=policy.outbox_retention, batch=policy.batch)
    conflicts = 0
    while True:
        async with fence.transaction() as conn:
            deleted = await delete_resolved_conflicts(
                conn, policy.outbox_retention, batch=policy.batch
            )
        conflicts += deleted
        if deleted < policy.batch:
            break
    async with fence.transaction() as conn:
        channels = await delete_retired(conn, now)
    return {
        "events_deleted": events,
        "events_cutoff": cutoff.isoformat(),
        "outbox_deleted": outbox,
        "conflicts_deleted": conflicts,
        "retired_channels_deleted": channels,
    }


async def find_problems(pool: PgPool, policy: AuditPolicy, now: datetime) -> list[Finding]:
    """The audit's findings over the stored state at ``now``."""
    async with pool.acquire() as conn:
        snapshot = await read_audit_snapshot(conn)
    return audit(snapshot, policy, now)


async def request_repairs(redis: Redis, findings: list[Finding], now: datetime) -> int:
    """Ask each owning actor to repair its findings (stream entries); how many were appended."""
    entries = repair_entries(findings, now)
    await append(redis, entries)
    return len(entries)


async def run_audit(
    fence: RunFence, now: datetime, pool: PgPool, redis: Redis, policy: AuditPolicy
) -> dict[str, Any]:
    """Audit every active account and request the repairs; the counts."""
    findings = await find_problems(pool, policy, now)
    repairs = 0
    if findings:
        # Held FOR SHARE while appending: a holder taking the run over waits for this append.
        async with fence.transaction():
            repairs = await request_repairs(redis, findings, now)
    return {
        "findings": len(findings),
        "accounts": len({f.account_id for f in findings}),
        "by_kind": count_findings(findings),
        "repairs_requested": repairs,
    }
