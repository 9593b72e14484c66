"""Failover benchmark: real replica processes sharing the shards, one killed, one joining.

Setup: ``--accounts`` Google accounts (emulator users with an empty primary calendar, so each
sync is cheap) on ``--shards`` shards, ``--replicas`` real ``integration-worker supervise``
processes with a ``--lease-ttl-s`` lease TTL, one ``integration-worker gateway`` process, and the
Google emulator in this process (``sandbox.harness.cluster``). Every account syncs and opens its
push channel before anything is measured. From then until the end, people edit the calendars of
``--edit-accounts`` accounts at ``--edits-per-s`` (creates, then renames), and every edit takes
the real push path: emulator delivery -> gateway -> shard stream -> inbox -> actor -> commit.

Figures:

- ``shards_moved_on_join``: with ``--replicas`` replicas balanced, one more joins; the shards
  whose lease holder differs between the snapshot before the join and the balanced state after
  it (``assign``'s fixed point: every shard held by a live replica, nothing left to move).
  Target ``ceil(shards / (replicas + 1)) + 2``. ``join_balance`` is the most minus the least
  shards held by one replica afterwards. The newcomer then leaves on SIGTERM (its leases are
  deleted, the others take its shards back at once) and the cluster settles again.
- ``failover_s``: one replica is killed with SIGKILL (the one holding the most edited accounts);
  from the kill until every shard it held is claimed by a survivor *and* the actors of every
  account of those shards started there: the survivors' ``shard claimed`` and ``shard actors
  started`` log lines (their timestamps; ``failover_claimed_s`` is the last claim). Target
  ``lease_ttl_s + 2``. ``failover_synced_s`` goes on to every orphaned account's first sync on a
  survivor: the sync's commit sets the calendar's ``last_synced_at`` (Postgres ``now()``: the
  start of the committing transaction); the first value seen after the kill is kept per account
  (polled every 0.2 s, so an edited account that synced twice between polls counts its second).
- ``notifications_lost``: entries the gateway logged as appended that no replica acknowledged
  once the run is quiet (the emulator has nothing left to deliver, nothing is pending). An entry
  not logged as acknowledged still counts as acknowledged when Redis says so (not pending in the
  group and already delivered): a SIGKILL can fall between an XACK and its log line. Target 0.
  ``edits_not_stored`` cross-checks end to end: edited events whose last title is not the one in
  Postgres.

Invariants: a fresh database per run (created here, dropped at the end) on the configured
servers (``IW_DATABASE_URL`` and ``IW_REDIS_URL``; that Redis must hold no other cluster's leases
or streams: nothing is flushed) or on embedded ones started here; every child
process is killed in a ``finally``; the replicas' JSON logs go to a temporary directory removed
at the end (``--log-dir`` keeps them); stdout carries only the result (one JSON line with
``--json``), progress goes to stderr. No figure is asserted anywhere.

    python -m bench.failover            # human-readable table
    python -m bench.failover --json     # one JSON object of figures
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import structlog
from redis.asyncio import Redis

from bench.report import render
from bench.sync import _fresh_database, _servers
from cluster.assignment import assign
from cluster.keys import NOTIFICATIONS_GROUP, notifications_key
from config.logs import configure_logging
from sandbox.harness.cluster import Cluster, Person, logged_at, open_cluster
from store.db import DEFAULT_SCHEMA, create_pool

log = structlog.get_logger("bench.failover")


async def until(predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> float:
    """Poll ``predicate`` every 0.2 s until true; the monotonic time it was seen true."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)
    return time.monotonic()


def replica_names(count: int) -> list[str]:
    return [f"replica-{n}" for n in range(1, count + 1)]


async def balanced(cluster: Cluster, members: Iterable[str]) -> bool:
    """Every shard held by one of ``members`` and ``assign`` would move nothing more."""
    live = set(members)
    for name in live:
        process = cluster.processes[name]
        if not process.running:
            raise RuntimeError(f"{name} exited: {process.log_path.read_text()[-3000:]}")
    owners = await cluster.owners()
    if any(owner not in live for owner in owners.values()):
        return False
    return set(owners.values()) == live and assign(owners, live) == owners


class Editor:
    """People editing calendars in Google's UI, round robin: a create, then renames."""

    def __init__(self, cluster: Cluster, people: list[Person], per_s: float) -> None:
        self.cluster, self.people, self.every_s = cluster, people, 1.0 / per_s
        self.made: dict[Person, list[str]] = {p: [] for p in people}
        self.titles: dict[tuple[Person, str], str] = {}
        self.edits = 0

    async def run(self) -> None:
        start = time.monotonic()
        for n in itertools.count():
            person = self.people[n % len(self.people)]
            title = f"edit {n}"
            made = self.made[person]
            if made and n % 3:
                event_id = made[n % len(made)]
                self.cluster.rename_event(person, event_id, title)
            else:
                event_id = self.cluster.create_event(person, title)
                made.append(event_id)
            self.titles[(person, event_id)] = title
            self.edits += 1
            await asyncio.sleep(max(0.0, start + (n + 1) * self.every_s - time.monotonic()))

    async def not_stored(self) -> int:
        """Edited events whose last title is not the one stored in Postgres."""
        missing = 0
        for (person, event_id), title in self.titles.items():
            missing += await self.cluster.stored_title(person, event_id) != title
        return missing


async def add_people(cluster: Cluster, count: int, concurrency: int = 16) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await cluster.add_person(f"user{n}@example.com")

    await asyncio.gather(*(one(n) for n in range(count)))


async def lost_entries(cluster: Cluster) -> int:
    """Appended entries no replica acknowledged: not logged as acknowledged, and either still
    pending in the group or never delivered to it."""
    missing = cluster.appended_ids() - cluster.acknowledged_ids()
    lost = 0
    by_stream: dict[str, list[str]] = {}
    for stream, entry_id in missing:
        by_stream.setdefault(stream, []).append(entry_id)
    for stream, ids in by_stream.items():
        pending = {
            _text(p["message_id"])
            for p in await cluster.redis.xpending_range(
                stream, NOTIFICATIONS_GROUP, "-", "+", 1_000_000
            )
        }
        groups = {_text(g["name"]): g for g in await cluster.redis.xinfo_groups(stream)}
        delivered = (
            str(_text(groups[NOTIFICATIONS_GROUP]["last-delivered-id"]))
            if NOTIFICATIONS_GROUP in groups
            else "0-0"
        )
        lost += sum(1 for i in ids if i in pending or _entry(i) > _entry(delivered))
    return lost


async def quiet(cluster: Cluster) -> bool:
    """The emulator has nothing left to deliver and no shard stream has a pending entry."""
    if cluster.deliveries_pending():
        return False
    for shard in range(cluster.shards):
        key = notifications_key(shard)
        if await cluster.redis.exists(key) and int(
            (await cluster.redis.xpending(key, NOTIFICATIONS_GROUP))["pending"]
        ):
            return False
    return not (cluster.appended_ids() - cluster.acknowledged_ids())


def replica_env(args: argparse.Namespace) -> dict[str, str]:
    """Settings of every replica beyond the harness's: the Google quota."""
    return {"IW_GOOGLE_REQUESTS_PER_MINUTE": str(args.google_quota_per_min)}


async def measure_join(
    cluster: Cluster, members: list[str], newcomer: str, settle_s: float, env: dict[str, str]
) -> dict[str, Any]:
    before = await cluster.owners()
    t0 = time.monotonic()
    await cluster.start_replica(newcomer, **env)
    joined = [*members, newcomer]
    t1 = await until(lambda: balanced(cluster, joined), "the newcomer to get its share", settle_s)
    after = await cluster.owners()
    held = Counter(after.values())
    log.warning("joined", seconds=round(t1 - t0, 1), held=dict(held))
    return {
        "shards_moved_on_join": sum(1 for s in after if after[s] != before[s]),
        "join_balance": max(held.values()) - min(held.values()),
        "join_settle_s": round(t1 - t0, 2),
    }


async def measure_failover(
    cluster: Cluster, members: list[str], edited: list[Person], timeout_s: float
) -> dict[str, Any]:
    owners = await cluster.owners()
    by_replica = Counter(owners[p.shard] for p in edited)
    victim = cluster.processes[str(by_replica.most_common(1)[0][0]) if by_replica else members[0]]
    orphans = {s for s, owner in owners.items() if owner == victim.name}
    orphaned = [p.account_id for p in cluster.people.values() if p.shard in orphans]
    survivors = [cluster.processes[n] for n in members if n != victim.name]
    first_sync: dict[UUID, datetime] = {}
    killed_at = datetime.now(UTC)
    await victim.stop(signal.SIGKILL)

    def logged(event: str) -> dict[int, datetime]:
        return {
            int(r["shard"]): logged_at(r)
            for s in survivors
            for r in s.records(event)
            if logged_at(r) >= killed_at and int(r["shard"]) in orphans
        }

    def claims() -> dict[int, datetime]:
        return logged("shard claimed")

    def starts() -> dict[int, datetime]:
        return logged("shard actors started")

    async def replaced() -> bool:
        rows = await cluster.pool.fetch(
            "SELECT account_id, min(last_synced_at) AS at FROM calendars"
            " WHERE account_id = ANY($1::uuid[]) AND last_synced_at > $2 GROUP BY account_id",
            [a for a in orphaned if a not in first_sync],
            killed_at,
        )
        for row in rows:
            first_sync[row["account_id"]] = row["at"]
        return (
            len(first_sync) == len(orphaned)
            and orphans <= claims().keys()
            and orphans <= starts().keys()
        )

    await until(replaced, "the survivors to take over", timeout_s)
    claimed = max(claims().values(), default=killed_at)
    started = max(starts().values(), default=killed_at)
    synced = max(first_sync.values(), default=killed_at)
    return {
        "failover_s": round((max(claimed, started) - killed_at).total_seconds(), 2),
        "failover_claimed_s": round((claimed - killed_at).total_seconds(), 2),
        "failover_synced_s": round((max(claimed, synced) - killed_at).total_seconds(), 2),
        "orphaned_shards": len(orphans),
        "orphaned_accounts": len(orphaned),
        "killed": victim.name,
    }


async def run_cluster(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    members = replica_names(args.replicas)
    newcomer = f"replica-{args.replicas + 1}"
    t0 = time.monotonic()
    await add_people(cluster, args.accounts)
    t1 = time.monotonic()
    log.warning("accounts added", accounts=args.accounts, seconds=round(t1 - t0, 1))
    for name in members:
        await cluster.start_replica(name, **replica_env(args))
    await until(lambda: balanced(cluster, members), "the replicas to share", args.settle_s)
    await until(cluster.watching, "every account to sync and watch", args.settle_s)
    t2 = time.monotonic()
    log.warning("every account synced and watched", seconds=round(t2 - t1, 1))
    people = list(cluster.people.values())
    editor = Editor(cluster, people[: args.edit_accounts], args.edits_per_s)
    editing = asyncio.get_running_loop().create_task(editor.run())
    figures: dict[str, Any] = {"startup_s": round(t2 - t1, 1)}
    try:
        await asyncio.sleep(1.0)  # notifications flowing to every replica
        figures |= await measure_join(cluster, members, newcomer, args.settle_s, replica_env(args))
        await cluster.processes[newcomer].stop(signal.SIGTERM, timeout_s=args.settle_s)
        await until(lambda: balanced(cluster, members), "the newcomer's leave", args.settle_s)
        await asyncio.sleep(1.0)
        timeout_s = max(60.0, args.settle_s)
        figures |= await measure_failover(cluster, members, editor.people, timeout_s)
        log.warning("failed over", **figures)
        await asyncio.sleep(args.after_s)  # notifications to the survivors only
    finally:
        editing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await editing
    survivors = [m for m in members if m != figures["killed"]]
    await until(lambda: balanced(cluster, survivors), "the survivors to settle", args.settle_s)
    with contextlib.suppress(TimeoutError):
        await until(lambda: quiet(cluster), "every entry to be acknowledged", 60)
    figures |= {
        "notifications_appended": len(cluster.appended_ids()),
        "notifications_lost": await lost_entries(cluster),
        "edits": editor.edits,
        "edits_not_stored": await editor.not_stored(),
    }
    return figures


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM cancels the run like Ctrl-C, so the ``finally`` blocks kill every child process.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    async with (
        _servers() as (admin_dsn, redis_url, _tracked),
        _fresh_database(admin_dsn, "failover") as dsn,
    ):
        redis = Redis.from_url(redis_url)
        pool = await create_pool(dsn, DEFAULT_SCHEMA, min_size=1, max_size=16)
        try:
            with contextlib.ExitStack() as stack:
                logs = args.log_dir or stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="iw-failover-")
                )
                Path(logs).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
                async with open_cluster(
                    dsn,
                    redis_url,
                    redis,
                    pool,
                    Path(logs),
                    shards=args.shards,
                    ttl_s=args.lease_ttl_s,
                ) as cluster:
                    return await run_cluster(cluster, args)
        finally:
            await pool.close()
            await redis.aclose()


def figures_of(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of figures, targets included."""
    return {
        "failover_s": measured["failover_s"],
        "failover_claimed_s": measured["failover_claimed_s"],
        "failover_synced_s": measured["failover_synced_s"],
        "failover_target_s": args.lease_ttl_s + 2,
        "lease_ttl_s": args.lease_ttl_s,
        "google_quota_per_min": args.google_quota_per_min,
        "orphaned_shards": measured["orphaned_shards"],
        "orphaned_accounts": measured["orphaned_accounts"],
        "shards_moved_on_join": measured["shards_moved_on_join"],
        "shards_moved_target": math.ceil(args.shards / (args.replicas + 1)) + 2,
        "join_balance": measured["join_balance"],
        "join_settle_s": measured["join_settle_s"],
        "notifications_lost": measured["notifications_lost"],
        "notifications_appended": measured["notifications_appended"],
        "edits": measured["edits"],
        "edits_not_stored": measured["edits_not_stored"],
        "accounts": args.accounts,
        "replicas": args.replicas,
        "shards": args.shards,
        "edit_accounts": min(args.edit_accounts, args.accounts),
        "edits_per_s": args.edits_per_s,
        "startup_s": measured["startup_s"],
    }


def table(figures: dict[str, Any]) -> str:
    """The headline figures against their targets, then every figure."""
    rows = [
        ("figure", "ours", "target"),
        (
            f"kill -9 -> orphaned shards claimed, actors started ({figures['orphaned_shards']}"
            f" shards, {figures['orphaned_accounts']:,} accounts)",
            f"{figures['failover_s']} s (claimed {figures['failover_claimed_s']} s,"
            f" synced {figures['failover_synced_s']} s)",
            f"<= {figures['failover_target_s']} s",
        ),
        (
            f"shards moved when replica {figures['replicas'] + 1} joins",
            f"{figures['shards_moved_on_join']} (balance +-{figures['join_balance']})",
            f"<= {figures['shards_moved_target']}",
        ),
        (
            f"notifications lost ({figures['notifications_appended']:,} appended)",
            str(figures["notifications_lost"]),
            "0",
        ),
    ]
    return render(rows, figures)


def main(argv: list[str] | None = None) -> None:
    """Run the cluster, measure, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=10_000, help="Google accounts")
    parser.add_argument("--replicas", type=int, default=4, help="replicas before the join")
    parser.add_argument("--shards", type=int, default=256, help="IW_SHARD_COUNT")
    parser.add_argument("--lease-ttl-s", type=float, default=10.0, help="IW_LEASE_TTL_S")
    parser.add_argument(
        "--google-quota-per-min",
        type=int,
        default=10_000,
        help="IW_GOOGLE_REQUESTS_PER_MINUTE: Google's default project quota; starting N accounts"
        " costs about 5N requests, so 10,000 accounts need 5 minutes at the default",
    )
    parser.add_argument("--edit-accounts", type=int, default=200, help="accounts people edit")
    parser.add_argument("--edits-per-s", type=float, default=20.0, help="people's edit rate")
    parser.add_argument("--after-s", type=float, default=2.0, help="edits after the failover")
    parser.add_argument("--settle-s", type=float, default=300.0, help="longest wait to settle")
    parser.add_argument("--log-dir", help="keep the processes' JSON logs here (default: removed)")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.replicas < 2 or args.shards < args.replicas + 1:
        parser.error("need --accounts >= 1, --replicas >= 2 and --shards > --replicas")
    if args.lease_ttl_s <= 0 or args.edits_per_s <= 0 or args.edit_accounts < 1:
        parser.error("--lease-ttl-s, --edits-per-s and --edit-accounts must be positive")
    configure_logging(args.log_level, "console", stream=sys.stderr)
    figures = figures_of(args, asyncio.run(_run(args)))
    if args.json:
        print(orjson.dumps(figures).decode())
        return
    print(table(figures))


def _entry(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


if __name__ == "__main__":
    main()
