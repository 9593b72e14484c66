"""Cluster-wide maintenance against real Postgres and Redis: runs, fencing, lease handover, the
cleanup's deletions and the audit's repairs. Periods follow an injected wall clock; the lease's
TTL is a fraction of a second, so handovers take real but short time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import pytest
from redis.asyncio import Redis

from cluster.inbox import parse_entry
from cluster.keys import MAINTENANCE_LEASE_KEY, notifications_key
from cluster.lease_state import LeasePolicy
from cluster.maintenance_lease import MaintenanceLease
from config.settings import load_settings
from sandbox.embedded import Services
from store.accounts import Account, create_account
from store.channels import ChannelRow, hash_token, save_channel
from store.crypto import Keyring, generate_key
from store.db import PgPool
from store.maintenance import (
    RunTakenOver,
    claim_run,
    fenced_run,
    finish_run,
    last_finished,
    list_runs,
)
from supervisor.accounts_runtime import AccountsRuntime
from supervisor.maintenance import MaintenanceScheduler
from supervisor.maintenance_audit import AuditPolicy
from supervisor.maintenance_jobs import (
    CleanupPolicy,
    LeaseLost,
    RunFence,
    run_audit,
    run_cleanup,
)
from supervisor.replica import open_replica
from supervisor.services import ServiceUrls

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NINE = datetime(2026, 3, 2, 9, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC)
TTL_S = 0.6
SHARDS = 8


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until it holds (the lease's timings are real, and short)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - state of other tasks, Postgres and Redis
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Runs and their fence


async def test_a_period_is_claimed_once_finished_once_and_fenced_against_a_former_holder(
    pool: PgPool,
) -> None:
    assert await claim_run(pool, "audit", NINE, "a/1") == "claimed"
    # "b" takes over the unfinished run (a died); from now on a's batches are refused.
    assert await claim_run(pool, "audit", NINE, "b/2") == "claimed"
    with pytest.raises(RunTakenOver):
        async with fenced_run(pool, "audit", NINE, "a/1"):
            pass
    assert not await finish_run(pool, "audit", NINE, "a/1", outcome="done", details={})
    async with fenced_run(pool, "audit", NINE, "b/2") as conn:
        assert await conn.fetchval("SELECT 1") == 1
    assert await finish_run(pool, "audit", NINE, "b/2", outcome="done", details={"findings": 0})
    # Finished: nobody claims it again, nor writes under it.
    assert await claim_run(pool, "audit", NINE, "c/3") == "finished"
    with pytest.raises(RunTakenOver):
        async with fenced_run(pool, "audit", NINE, "b/2"):
            pass
    [run] = await list_runs(pool, "audit")
    assert (run.holder, run.attempts, run.outcome, run.details) == (
        "b/2",
        2,
        "done",
        {"findings": 0},
    )
    assert await last_finished(pool) == {"audit": NINE}


async def test_a_takeover_waits_for_the_batch_in_flight(pool: PgPool) -> None:
    assert await claim_run(pool, "cleanup", MIDNIGHT, "a/1") == "claimed"
    async with fenced_run(pool, "cleanup", MIDNIGHT, "a/1"):
        takeover = asyncio.create_task(claim_run(pool, "cleanup", MIDNIGHT, "b/2"), name="takeover")
        await asyncio.sleep(0.2)
        assert not takeover.done()  # the row is held FOR SHARE until the batch commits
    assert await takeover == "claimed"


# ---------------------------------------------------------------------------------------------
# Two schedulers, one lease


@dataclass
class Recorder:
    """Job actions that record who ran which period, optionally blocking one run."""

    calls: list[tuple[str, str, datetime]] = field(default_factory=list)
    block: asyncio.Event | None = None

    def action(self, name: str, holder: Callable[[], str]) -> Any:
        async def run(fence: RunFence, now: datetime) -> dict[str, Any]:
            self.calls.append((name, holder(), fence.period_start))
            if self.block is not None and name == "cleanup":
                await self.block.wait()
            async with fence.transaction():  # a write batch, fenced
                pass
            return {"ran": name}

        return run


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


def _scheduler(
    pool: PgPool, redis: Redis, name: str, recorder: Recorder, clock: Clock
) -> MaintenanceScheduler:
    lease = MaintenanceLease(redis, name, ttl_s=TTL_S)
    return MaintenanceScheduler(
        pool,
        lease,
        {job: recorder.action(job, lambda: lease.holder) for job in ("cleanup", "audit")},
        policy=LeasePolicy(ttl_s=TTL_S),
        clock=clock,
        start_delay_s=0.0,
        retry_after_s=0.1,
        recheck_s=0.05,
    )


@pytest.fixture
async def tasks() -> AsyncIterator[dict[str, asyncio.Task[None]]]:
    running: dict[str, asyncio.Task[None]] = {}
    try:
        yield running
    finally:
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


async def test_one_holder_runs_each_period_and_a_successor_runs_only_the_next(
    pool: PgPool, redis: Redis, tasks: dict[str, asyncio.Task[None]]
) -> None:
    recorder, clock = Recorder(), Clock()
    replicas = {name: _scheduler(pool, redis, name, recorder, clock) for name in ("r1", "r2")}
    for name, scheduler in replicas.items():
        tasks[name] = asyncio.create_task(scheduler.run(), name=f"maintenance-{name}")
    await _until(lambda: len(recorder.calls) == 2)
    await asyncio.sleep(0.3)  # room for a second (wrong) run
    holders = {holder for _, holder, _ in recorder.calls}
    assert len(holders) == 1
    assert sorted((job, period) for job, _, period in recorder.calls) == [
        ("audit", NINE),
        ("cleanup", MIDNIGHT),
    ]
    first = next(name for name, s in replicas.items() if s.lease.holder in holders)
    second = next(name for name in replicas if name != first)
    assert [s.state.holding for s in replicas.values()].count(True) == 1

    # The holder dies: cancelled without releasing; its lease lapses after the TTL.
    tasks.pop(first).cancel()
    successor = replicas[second]
    await _until(successor.holding)
    assert await redis.get(MAINTENANCE_LEASE_KEY) == successor.lease.holder.encode()
    await asyncio.sleep(0.3)
    assert len(recorder.calls) == 2  # the periods already done are not run again

    clock.now = T0 + timedelta(hours=1)  # the next hour: the audit only
    await _until(lambda: len(recorder.calls) == 3)
    assert recorder.calls[2] == ("audit", successor.lease.holder, NINE + timedelta(hours=1))
    runs = await list_runs(pool)
    assert [(r.job, r.period_start, r.outcome, r.attempts) for r in runs] == [
        ("cleanup", MIDNIGHT, "done", 1),
        ("audit", NINE, "done", 1),
        ("audit", NINE + timedelta(hours=1), "done", 1),
    ]
    assert runs[0].details["ran"] == "cleanup" and "duration_s" in runs[0].details

    # A clean stop releases the lease at once.
    tasks.pop(second).cancel()
    await successor.shutdown()
    assert await redis.get(MAINTENANCE_LEASE_KEY) is None


async def test_a_run_cut_off_by_the_holders_death_is_finished_by_the_next_holder(
    pool: PgPool, redis: Redis, tasks: dict[str, asyncio.Task[None]]
) -> None:
    clock = Clock()
    stuck = Recorder(block=asyncio.Event())  # the first holder's cleanup never ends
    first = _scheduler(pool, redis, "r1", stuck, clock)
    tasks["r1"] = asyncio.create_task(first.run(), name="maintenance-r1")
    await _until(lambda: len(stuck.calls) == 1)
    tasks.pop("r1").cancel()  # dies mid-run: the row stays claimed, unfinished
    [run] = await list_runs(pool, "cleanup")
    assert (run.holder, run.finished_at) == (first.lease.holder, None)

    recorder = Recorder()
    second = _scheduler(pool, redis, "r2", recorder, clock)
    tasks["r2"] = asyncio.create_task(second.run(), name="maintenance-r2")
    await _until(lambda: len(recorder.calls) == 2)
    [run] = await list_runs(pool, "cleanup")
    assert (run.holder, run.attempts, run.outcome) == (second.lease.holder, 2, "done")
    # The dead holder's fence refuses its writes now, lease or not.
    fence = RunFence(pool, "cleanup", MIDNIGHT, first.lease.holder, lambda: True)
    with pytest.raises(RunTakenOver):
        async with fence.transaction():
            pass


async def test_a_failed_run_is_recorded_and_retried_in_its_period(
    pool: PgPool, redis: Redis, tasks: dict[str, asyncio.Task[None]]
) -> None:
    attempts: list[datetime] = []

    async def flaky(fence: RunFence, now: datetime) -> dict[str, Any]:
        attempts.append(now)
        if len(attempts) == 1:
            await pool.execute("SELECT 1/0")  # a real error from the database
        return {"attempt": len(attempts)}

    async def quiet(fence: RunFence, now: datetime) -> dict[str, Any]:
        return {}

    scheduler = MaintenanceScheduler(
        pool,
        MaintenanceLease(redis, "r1", ttl_s=TTL_S),
        {"cleanup": flaky, "audit": quiet},
        policy=LeasePolicy(ttl_s=TTL_S),
        clock=Clock(),
        start_delay_s=0.0,
        retry_after_s=0.1,
        recheck_s=0.05,
    )
    tasks["r1"] = asyncio.create_task(scheduler.run(), name="maintenance-r1")
    await _until(lambda: ("cleanup", MIDNIGHT, "done") in scheduler.runs)
    assert [outcome for job, _, outcome in scheduler.runs if job == "cleanup"] == ["failed", "done"]
    [run] = await list_runs(pool, "cleanup")
    assert (run.attempts, run.outcome, run.details["attempt"]) == (2, "done", 2)


async def test_no_write_batch_starts_without_the_lease(pool: PgPool) -> None:
    assert await claim_run(pool, "cleanup", MIDNIGHT, "a/1") == "claimed"
    fence = RunFence(pool, "cleanup", MIDNIGHT, "a/1", lambda: False)
    policy = CleanupPolicy(timedelta(days=30), timedelta(days=365), timedelta(days=30))
    with pytest.raises(LeaseLost):
        await run_cleanup(fence, T0, policy)


# ---------------------------------------------------------------------------------------------
# The cleanup


async def _account(pool: PgPool, user: str) -> Account:
    account = await create_account(
        pool, provider="google", external_user_id=user, shard_count=SHARDS
    )
    await pool.execute(
        "UPDATE accounts SET created_at = now() - interval '10 days' WHERE id = $1", account.id
    )
    return account


async def _calendar(
    pool: PgPool, account: UUID, calendar_id: str, *, window_from: datetime | None
) -> None:
    await pool.execute(
        "INSERT INTO calendars (account_id, id, window_start, window_end) VALUES ($1, $2, $3, $4)",
        account,
        calendar_id,
        window_from,
        None if window_from is None else window_from + timedelta(days=395),
    )


async def _timed(
    pool: PgPool, account: UUID, calendar: str, event: str, *, start: datetime, end: datetime
) -> None:
    await pool.execute(
        "INSERT INTO events (account_id, calendar_id, id, status, all_day, start_at, end_at)"
        " VALUES ($1, $2, $3, 'confirmed', false, $4, $5)",
        account,
        calendar,
        event,
        start,
        end,
    )


async def _all_day(
    pool: PgPool, account: UUID, calendar: str, event: str, *, start: datetime, end: datetime
) -> None:
    await pool.execute(
        "INSERT INTO events (account_id, calendar_id, id, status, all_day, start_date, end_date)"
        " VALUES ($1, $2, $3, 'confirmed', true, $4, $5)",
        account,
        calendar,
        event,
        start.date(),
        end.date(),
    )


async def _outbox_item(
    pool: PgPool, account: UUID, n: int, state: str, done_days_ago: int | None
) -> int:
    item: int = await pool.fetchval(
        "INSERT INTO outbox (account_id, operation, workspace_id, source_type, source_id,"
        " event_type, state, done_at) VALUES ($1, 'CANCEL_EVENT', 'w1', 'task', $2,"
        " 'BLOCKER_DEADLINE', $3, now() - make_interval(days => $4)) RETURNING id",
        account,
        f"t{n}",
        state,
        done_days_ago,
    )
    return item


async def _conflict(pool: PgPool, account: UUID, n: int, resolved_days_ago: int | None) -> int:
    binding = await pool.fetchval(
        "INSERT INTO event_bindings (account_id, workspace_id, source_type, source_id,"
        " event_type, calendar_id) VALUES ($1, 'w1', 'task', $2, 'BLOCKER_DEADLINE', 'primary')"
        " RETURNING id",
        account,
        f"c{n}",
    )
    conflict: int = await pool.fetchval(
        "INSERT INTO outbox_conflicts (account_id, binding_id, local, provider_copy, detected_at,"
        " resolved_at) VALUES ($1, $2, '{}', '{}', now() - interval '400 days',"
        " now() - make_interval(days => $3)) RETURNING id",
        account,
        binding,
        resolved_days_ago,
    )
    return conflict


async def test_cleanup_deletes_exactly_what_left_the_window_or_the_retention(pool: PgPool) -> None:
    account = (await _account(pool, "u1")).id
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=30)  # the window the sync would follow now starts here
    await _calendar(pool, account, "cal", window_from=cutoff - timedelta(days=6))
    await _calendar(pool, account, "unwindowed", window_from=None)
    hour = timedelta(hours=1)
    await _timed(pool, account, "cal", "old", start=cutoff - 3 * hour, end=cutoff - 2 * hour)
    await _timed(pool, account, "cal", "ends-at-cutoff", start=cutoff - hour, end=cutoff)
    await _timed(pool, account, "cal", "straddles", start=cutoff - hour, end=cutoff + hour)
    await _timed(
        pool, account, "cal", "zero-at-cutoff", start=cutoff, end=cutoff
    )  # listed, as on Graph
    await _timed(pool, account, "cal", "recent", start=now - hour, end=now)
    await _all_day(
        pool,
        account,
        "cal",
        "old-day",
        start=cutoff - timedelta(days=5),
        end=cutoff - timedelta(days=4),
    )
    # Ends at the cutoff's date: within a day of it, kept whatever the calendar's zone.
    await _all_day(pool, account, "cal", "last-day", start=cutoff - timedelta(days=1), end=cutoff)
    await _timed(
        pool,
        account,
        "unwindowed",
        "old-unwindowed",
        start=cutoff - 3 * hour,
        end=cutoff - 2 * hour,
    )
    items = {
        "old-done": await _outbox_item(pool, account, 1, "done", 31),
        "old-skipped": await _outbox_item(pool, account, 2, "skipped", 31),
        "recent-done": await _outbox_item(pool, account, 3, "done", 29),
        "pending": await _outbox_item(pool, account, 4, "pending", None),
        "dead": await _outbox_item(pool, account, 5, "dead_letter", None),
    }
    await pool.execute("UPDATE outbox SET created_at = now() - interval '400 days'")
    conflicts = {
        "old-resolved": await _conflict(pool, account, 1, 31),
        "recent-resolved": await _conflict(pool, account, 2, 29),
        "open": await _conflict(pool, account, 3, None),
    }
    changes_before = await pool.fetchval("SELECT count(*) FROM changes")

    assert await claim_run(pool, "cleanup", MIDNIGHT, "me/1") == "claimed"
    fence = RunFence(pool, "cleanup", MIDNIGHT, "me/1", lambda: True)
    policy = CleanupPolicy(timedelta(days=30), timedelta(days=365), timedelta(days=30), batch=2)
    details = await run_cleanup(fence, now, policy)

    assert details == {
        "events_deleted": 3,
        "events_cutoff": cutoff.isoformat(),
        "outbox_deleted": 2,
        "conflicts_deleted": 1,
        "retired_channels_deleted": 0,
    }
    left = await pool.fetch("SELECT id FROM events ORDER BY id")
    assert [r["id"] for r in left] == [
        "last-day",
        "old-unwindowed",
        "recent",
        "straddles",
        "zero-at-cutoff",
    ]
    outbox = {r["id"] for r in await pool.fetch("SELECT id FROM outbox")}
    assert outbox == {items["recent-done"], items["pending"], items["dead"]}
    kept = {r["id"] for r in await pool.fetch("SELECT id FROM outbox_conflicts")}
    assert kept == {conflicts["recent-resolved"], conflicts["open"]}
    # Leaving the window is nobody's deletion: the change feed says nothing.
    assert await pool.fetchval("SELECT count(*) FROM changes") == changes_before
    assert (await run_cleanup(fence, now, policy))["events_deleted"] == 0  # idempotent


async def test_cleanup_skips_a_calendar_a_sync_holds(pool: PgPool) -> None:
    account = (await _account(pool, "u1")).id
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=30)
    await _calendar(pool, account, "busy", window_from=cutoff)
    await _timed(
        pool,
        account,
        "busy",
        "old",
        start=cutoff - timedelta(days=2),
        end=cutoff - timedelta(days=1),
    )
    assert await claim_run(pool, "cleanup", MIDNIGHT, "me/1") == "claimed"
    fence = RunFence(pool, "cleanup", MIDNIGHT, "me/1", lambda: True)
    policy = CleanupPolicy(timedelta(days=30), timedelta(days=365), timedelta(days=30))
    async with pool.acquire() as sync, sync.transaction():
        # A sync page in progress locks its calendar row, as every event writer does.
        await sync.execute(
            "SELECT 1 FROM calendars WHERE account_id = $1 AND id = 'busy' FOR UPDATE", account
        )
        assert (await run_cleanup(fence, now, policy))["events_deleted"] == 0
    assert (await run_cleanup(fence, now, policy))["events_deleted"] == 1


# ---------------------------------------------------------------------------------------------
# The audit and its repairs


async def test_audit_finds_a_missing_channel_and_a_stale_sync_and_asks_for_repairs(
    pool: PgPool, redis: Redis
) -> None:
    now = datetime.now(UTC)
    no_channel = await _account(pool, "no-channel@x")
    stale = await _account(pool, "stale@x")
    healthy = await _account(pool, "healthy@x")
    disabled = await _account(pool, "disabled@x")
    await pool.execute("UPDATE accounts SET status = 'disabled' WHERE id = $1", disabled.id)
    for account, synced_ago in (
        (no_channel, timedelta(minutes=1)),
        (stale, timedelta(hours=2)),
        (healthy, timedelta(minutes=1)),
        (disabled, timedelta(days=3)),
    ):
        await _calendar(pool, account.id, "primary", window_from=now - timedelta(days=30))
        await pool.execute(
            "UPDATE calendars SET last_synced_at = $2 WHERE account_id = $1",
            account.id,
            now - synced_ago,
        )
    for account in (stale, healthy):
        await save_channel(
            pool,
            ChannelRow(
                provider="google",
                id=f"ch-{account.id}",
                account_id=account.id,
                calendar_id="primary",
                shard=account.shard,
                token_hash=hash_token("a channel token"),
                expires_at=now + timedelta(days=5),
            ),
        )
    policy = AuditPolicy(
        stale_after=timedelta(minutes=30),
        push=True,
        renewal_margin=timedelta(hours=1),
        providers=frozenset({"google"}),
    )
    assert await claim_run(pool, "audit", NINE, "me/1") == "claimed"
    fence = RunFence(pool, "audit", NINE, "me/1", lambda: True)
    details = await run_audit(fence, now, pool, redis, policy)
    assert details == {
        "findings": 2,
        "accounts": 2,
        "by_kind": {"never_synced": 0, "stale_sync": 1, "no_channel": 1, "channel_expiring": 0},
        "repairs_requested": 2,
    }
    asked: set[tuple[str, str, str]] = set()
    for shard in {no_channel.shard, stale.shard}:
        raw = cast(
            list[tuple[bytes, dict[bytes | str, bytes | str]]],
            await redis.xrange(notifications_key(shard)),
        )
        for entry_id, fields in raw:
            entry = parse_entry(shard, entry_id.decode(), fields)
            asked.add((entry.account_id, entry.calendar_id, entry.kind))
    assert asked == {
        (str(no_channel.id), "primary", "changed"),
        (str(stale.id), "primary", "changed"),
    }


# ---------------------------------------------------------------------------------------------
# In the replica


async def test_every_replica_runs_the_scheduler_and_a_clean_stop_releases_the_lease(
    pool: PgPool, database_url: str, services: Services
) -> None:
    settings = load_settings(
        database_url=database_url,
        redis_url=services.redis_url,
        shard_count=4,
        lease_ttl_s=1.0,
        monitor_enabled=False,
        replica_id="replica-maintenance",
        maintenance_lease_ttl_s=1.0,
        maintenance_start_delay_s=0.0,
    )
    urls = ServiceUrls(database_url, services.redis_url, embedded=False)
    async with open_replica(settings, urls) as replica:
        await replica.redis.flushall()
        runtime = AccountsRuntime(replica, {}, Keyring("k", {"k": generate_key()}))
        task = asyncio.create_task(runtime.run(), name="accounts-runtime")
        try:
            async with asyncio.timeout(15):
                while len(await last_finished(pool)) < 2:  # noqa: ASYNC110 - rows in Postgres
                    await asyncio.sleep(0.05)
            holder = await replica.redis.get(MAINTENANCE_LEASE_KEY)
            assert isinstance(holder, bytes) and holder.startswith(b"replica-maintenance/")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert await replica.redis.get(MAINTENANCE_LEASE_KEY) is None
    runs = await list_runs(pool)
    assert sorted(r.job for r in runs if r.outcome == "done") == ["audit", "cleanup"]
