"""The cluster-wide maintenance scheduler: every replica runs one; the lease holder runs jobs.

The exactly-once rule (docs/maintenance.md):
- who may run: the holder of ``iw:maintenance:lease`` (``MaintenanceLease``; timing by
  ``ShardLease``: renewed at a third of the TTL, considered lost a third before it can expire);
- what it runs: each job's current period (``maintenance_schedule``) whose row in
  ``maintenance_runs`` is not finished. Before running, the holder claims the row (insert, or
  take over an unfinished one); ``done`` finishes it, and a finished row is never run again,
  by anyone. So each (job, period) completes at most once, whoever holds the lease when;
- a holder that died (or lost the lease, or failed) mid-run leaves its row unfinished: the next
  holder takes it over and runs the job again from the start. Jobs are idempotent (deletions
  by age; repair entries that only ask for a sync), so a partial run repeated is harmless;
- fencing: every write batch runs in ``RunFence.transaction``, refused once the lease is not
  held or the row names another holder (a takeover waits for in-flight batches, then every
  later batch of the former holder fails), so two holders never both write;
- a failed attempt (a dependency down, a bug) is recorded as ``failed`` and retried after
  ``retry_after_s`` while its period lasts.

Invariants of the loop: two named tasks (``maintenance.lease``, ``maintenance.work``) owned by
``run``'s task group and cancelled with it; cancelling ``run`` does not release the lease (a
dead replica's lease lapses); ``shutdown`` releases it for a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import structlog
from redis.asyncio import Redis

from cluster.lease_state import LeasePolicy, LeaseState, ShardLease
from cluster.maintenance_lease import MaintenanceLease
from config.settings import Settings
from store.db import PgPool
from store.maintenance import RunTakenOver, claim_run, finish_run, last_finished
from supervisor.maintenance_jobs import (
    JobAction,
    LeaseLost,
    RunFence,
    audit_policy,
    cleanup_policy,
    run_audit,
    run_cleanup,
)
from supervisor.maintenance_schedule import AUDIT, CLEANUP, JOBS, Job, due_jobs, next_wake
from supervisor.resilient import DEPENDENCY_ERRORS

log = structlog.get_logger("supervisor.maintenance")

Outcome = Literal["done", "failed", "skipped", "lost"]

_LEASE_LABEL = -1  # ShardLease wants a shard number; the maintenance lease has none


def utc_now() -> datetime:
    """The wall clock, aware UTC."""
    return datetime.now(UTC)


@dataclass(slots=True)
class MaintenanceScheduler:
    """One replica's maintenance scheduler."""

    pool: PgPool
    lease: MaintenanceLease
    actions: Mapping[str, JobAction]
    jobs: Sequence[Job] = JOBS
    policy: LeasePolicy = field(default_factory=LeasePolicy)
    clock: Callable[[], datetime] = utc_now
    start_delay_s: float = 60.0  # after taking the lease, before the first job
    retry_after_s: float = 300.0  # after a failed attempt
    recheck_s: float = 60.0  # the work loop looks again at least this often
    # The latest outcomes of this process's runs (bounded: the replica lives for months).
    runs: deque[tuple[str, datetime, Outcome]] = field(default_factory=lambda: deque(maxlen=100))
    _state: ShardLease | None = None
    _held_since: float | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        missing = {job.name for job in self.jobs} - set(self.actions)
        if missing:
            raise ValueError(f"no action for jobs: {', '.join(sorted(missing))}")
        self._state = ShardLease(_LEASE_LABEL, self.policy)

    @property
    def state(self) -> ShardLease:
        """This replica's view of the maintenance lease."""
        assert self._state is not None
        return self._state

    def holding(self) -> bool:
        """Whether this replica holds the lease and may write (not past its stop point)."""
        now = asyncio.get_running_loop().time()
        return self.state.holding and not self.state.must_stop(now)

    def statistics(self) -> dict[str, Any]:
        """The lease state and the outcomes of this process's runs, for operators."""
        return {
            "holder": self.lease.holder,
            "lease": self.state.state.value,
            "runs": [(job, period.isoformat(), outcome) for job, period, outcome in self.runs],
        }

    async def run(self) -> None:
        """Keep (or wait for) the lease and run due jobs while holding it, until cancelled."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._keep_lease, name="maintenance.lease")
            group.start_soon(self._work, name="maintenance.work")

    async def shutdown(self) -> None:
        """Release the lease if held, so another replica takes over at once (best effort)."""
        if not self.state.holding:
            return
        try:
            await self.lease.release()
        except DEPENDENCY_ERRORS as error:
            log.warning("maintenance lease not released", error=f"{type(error).__name__}")
        self.state.renewal_refused()
        self.state.stopped()

    async def _keep_lease(self) -> None:
        loop = asyncio.get_running_loop()
        state, timeout_s = self.state, self.policy.renew_after_s
        while True:
            now = loop.time()
            if state.state is LeaseState.STANDBY:
                state.start_claim()
                try:
                    async with asyncio.timeout(timeout_s):
                        taken = await self.lease.try_take()
                except DEPENDENCY_ERRORS:
                    taken = False
                if taken and state.claimed(now):
                    self._held_since = now
                    log.info("maintenance lease taken", holder=self.lease.holder)
                    self._changed.set()
                else:
                    state.claim_failed()
            elif state.renew_due(now):
                try:
                    async with asyncio.timeout(timeout_s):
                        renewed = await self.lease.renew()
                except DEPENDENCY_ERRORS:
                    state.renewal_failed(now)
                else:
                    if renewed:
                        state.renewed(now)
                    else:
                        state.renewal_refused()
            state.expire_if_overdue(loop.time())
            if state.state is LeaseState.LOST:
                log.warning("maintenance lease lost", reason=str(state.lost_reason))
                state.stopped()
                self._held_since = None
                self._changed.set()
            deadline = state.next_deadline()
            delay = timeout_s if deadline is None else deadline - loop.time()
            await asyncio.sleep(max(0.0, delay))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.holding() or self._held_since is None:
                self._changed.clear()
                with anyio.move_on_after(self.recheck_s):
                    await self._changed.wait()
                continue
            settle = self._held_since + self.start_delay_s - loop.time()
            if settle > 0:
                await asyncio.sleep(min(settle, self.recheck_s))
                continue
            try:
                outcomes = await self.run_due_once()
                async with self.pool.acquire() as conn:
                    finished = await last_finished(conn)
            except DEPENDENCY_ERRORS as error:
                log.warning("maintenance check failed", error=f"{type(error).__name__}: {error}")
                await asyncio.sleep(self.retry_after_s)
                continue
            if "failed" in outcomes.values():
                await asyncio.sleep(self.retry_after_s)
                continue
            now = self.clock()
            delay = (next_wake(self.jobs, now, finished) - now).total_seconds()
            await asyncio.sleep(min(max(0.0, delay), self.recheck_s))

    async def run_due_once(self) -> dict[str, Outcome]:
        """Run every job due now (while the lease is held); each job's outcome."""
        now = self.clock()
        async with self.pool.acquire() as conn:
            finished = await last_finished(conn)
        outcomes: dict[str, Outcome] = {}
        for job, period in due_jobs(self.jobs, now, finished):
            if not self.holding():
                break
            outcome = await self._run(job, period, now)
            outcomes[job.name] = outcome
            self.runs.append((job.name, period, outcome))
        return outcomes

    async def _run(self, job: Job, period: datetime, now: datetime) -> Outcome:
        holder = self.lease.holder
        claim = await claim_run(self.pool, job.name, period, holder)
        if claim == "finished":
            return "skipped"
        fence = RunFence(self.pool, job.name, period, holder, self.holding)
        loop = asyncio.get_running_loop()
        started = loop.time()
        where = {"job": job.name, "period": period.isoformat()}
        try:
            details = await self.actions[job.name](fence, now)
        except (LeaseLost, RunTakenOver) as error:
            log.warning("maintenance run abandoned", **where, reason=str(error))
            return "lost"
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            log.warning("maintenance run failed", **where, error=reason)
            # If even this fails, the row stays unfinished: the retry takes it over anyway.
            with contextlib.suppress(*DEPENDENCY_ERRORS):
                await finish_run(
                    self.pool, job.name, period, holder, outcome="failed", details={"error": reason}
                )
            return "failed"
        details = {**details, "duration_s": round(loop.time() - started, 3)}
        if not await finish_run(
            self.pool, job.name, period, holder, outcome="done", details=details
        ):
            log.warning("maintenance run taken over before it finished", **where)
            return "lost"
        log.info("maintenance run", **where, **details)
        return "done"


def scheduler_from_settings(
    settings: Settings,
    pool: PgPool,
    redis: Redis,
    *,
    lease_redis: Redis | None = None,
    providers: frozenset[str] | None = None,
) -> MaintenanceScheduler:
    """The scheduler a replica runs: both jobs, the lease on ``lease_redis`` (or ``redis``)."""
    ttl_s = settings.maintenance_lease_ttl_s
    cleanup, checks = cleanup_policy(settings), audit_policy(settings, providers)

    async def cleanup_job(fence: RunFence, now: datetime) -> dict[str, Any]:
        return await run_cleanup(fence, now, cleanup)

    async def audit_job(fence: RunFence, now: datetime) -> dict[str, Any]:
        return await run_audit(fence, now, pool, redis, checks)

    return MaintenanceScheduler(
        pool,
        MaintenanceLease(lease_redis or redis, settings.replica_id, ttl_s=ttl_s),
        {CLEANUP.name: cleanup_job, AUDIT.name: audit_job},
        policy=LeasePolicy(ttl_s=ttl_s),
        start_delay_s=settings.maintenance_start_delay_s,
    )
