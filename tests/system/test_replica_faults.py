"""Faults injected into real replica processes, on the ``sandbox.harness.cluster`` harness.

Proven, with 16 shards and a 2 s lease TTL:
- split-brain: a replica whose fenced writes are held by the fault hook (``IW_FAULT_HOLD_FILE``)
  between reading its epoch and committing, frozen (SIGSTOP) while the other replica takes its
  shards and their epochs, then thawed with the hold released: its held commits meet the new
  epochs and are refused (counted in its log, more than none), nothing it held lands, the
  epochs in Postgres stay the new owner's, every notification is acknowledged, and Postgres
  equals the emulator's export for every account;
- Redis outage: the replicas' own Redis stopped for 30 s and restarted empty: each replica
  stops every shard it held (``lease overdue; stopping the shard``) and claims nothing while
  Redis is down, its process stays up, and after the restart both replicas claim every shard
  again by themselves; an edit made after the restart reaches Postgres, every notification
  appended after it is acknowledged, and Postgres equals the emulator;
- (found by the split-brain test) a shard given up while the inbox's backlog read of it is in
  flight does not end the inbox (it raised KeyError, which ended the replica).

Each held write's refusal is logged by the keeper as ``write refused (stale epoch)``. ``shard
taken over (stale epoch)`` only when the refusal is what gives the shard up: after a thaw the
keeper usually finds most leases overdue first, so that line alone cannot count refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.inbox import Inbox, InboxEntry
from sandbox.embedded import EmbeddedRedis, Services
from sandbox.harness.cluster import Cluster, Person, Process, logged_at, open_cluster, wait_for
from store.db import PgPool
from tests.system.test_replicas import all_acknowledged, converged

SHARDS = 16
TTL_S = 2.0
PEOPLE = 12
# Generous: Python processes start on two cores (imports, migrations, first heartbeat).
SETTLE_S = 90.0
OUTAGE_S = 30.0
REPLICAS = ["replica-a", "replica-b"]
TAKEN_OVER = "shard taken over (stale epoch)"
REFUSED = "write refused (stale epoch)"
OVERDUE = "lease overdue; stopping the shard"


@pytest.fixture
async def cluster(
    database_url: str, services: Services, redis: Redis, pool: PgPool, tmp_path: Path
) -> AsyncIterator[Cluster]:
    async with open_cluster(
        database_url, services.redis_url, redis, pool, tmp_path, shards=SHARDS, ttl_s=TTL_S
    ) as running:
        yield running


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis server of this test alone (no persistence), stopped however the test ends."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def start_watching(cluster: Cluster, **env_of: dict[str, str]) -> list[Person]:
    """``PEOPLE`` accounts and both replicas (``env_of[name]``: more settings), once they share
    the shards, every account synced and watched, and no notification is outstanding."""
    people = [await cluster.add_person(f"user{n}@example.com") for n in range(PEOPLE)]
    for name in REPLICAS:
        await cluster.start_replica(name, **env_of.get(name, {}))
    await wait_for(lambda: converged(cluster, REPLICAS), "the replicas to share", SETTLE_S)
    await wait_for(cluster.watching, "every account to sync and watch", SETTLE_S)
    await wait_for(lambda: all_acknowledged(cluster, set()), "a quiet cluster", 30)
    return people


def stored(cluster: Cluster, probes: dict[Person, str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        for person, event_id in probes.items():
            if await cluster.stored_title(person, event_id) is None:
                return False
        return True

    return check


def no_differences(cluster: Cluster) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not await cluster.differences()

    return check


def shards_logged(process: Process, event: str, since: datetime) -> set[int]:
    return {int(r["shard"]) for r in process.records(event) if logged_at(r) >= since}


async def test_a_write_held_across_a_takeover_is_refused_when_released(
    cluster: Cluster, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    people = await start_watching(cluster, **{"replica-a": {"IW_FAULT_HOLD_FILE": str(hold)}})
    held = cluster.processes["replica-a"]
    owners = await cluster.owners()
    its_shards = {s for s, owner in owners.items() if owner == held.name}
    mine = [p for p in people if p.shard in its_shards]
    assert mine, "replica-a owns no account: nothing to hold"
    epochs: dict[int, int] = {}
    for record in held.records("shard claimed"):  # the latest claim of each shard
        epochs[int(record["shard"])] = int(record["epoch"])

    probes = await hold_writes(cluster, held, mine, hold)
    frozen_at = datetime.now(UTC)
    held.send(signal.SIGSTOP)
    try:
        await take_over(cluster, its_shards, epochs, frozen_at)
        await wait_for(stored(cluster, probes), "replica-b to sync the held edits", 30)
        # Renamed now, so a held write of the old title landing after all would show.
        for person, event_id in probes.items():
            cluster.rename_event(person, event_id, "renamed while frozen")
        await wait_for(renamed(cluster, probes), "replica-b to sync the renames", 30)
    finally:
        await anyio.Path(hold).unlink(
            missing_ok=True
        )  # released first: thawed, the held writes go on at once
        thawed_at = datetime.now(UTC)
        held.send(signal.SIGCONT)

    giving_up = {"lease lost", OVERDUE, TAKEN_OVER}

    async def gave_up() -> bool:
        return its_shards <= {
            int(r["shard"])
            for r in held.records()
            if r["event"] in giving_up and logged_at(r) >= thawed_at
        }

    await wait_for(gave_up, "the thawed replica to give its shards up", 30)

    async def refused() -> bool:
        return bool(held.records(REFUSED))

    await wait_for(refused, "the held writes to be refused", 10)
    await asyncio.sleep(1.0)  # the other held writes meet their check meanwhile
    refusals = held.records(REFUSED)
    taken_over = {int(r["shard"]) for r in held.records(TAKEN_OVER)}
    refused_shards = sorted(int(r["shard"]) for r in refusals)
    print(
        f"refused: {len(refusals)} of {len(mine)} held writes, shards {refused_shards};"
        f" {len(taken_over)} shards given up on a refusal, the others as overdue"
    )
    assert 0 < len(refusals) <= len(mine)  # each held actor had one write in flight
    assert set(refused_shards) <= {p.shard for p in mine}
    assert all(r["lease"] in {"owned", "lost"} for r in refusals)  # as it was when refused
    assert taken_over <= its_shards
    assert await renamed(cluster, probes)(), "a held write landed"
    await assert_epochs_taken(cluster, its_shards, epochs)
    await wait_for(lambda: converged(cluster, REPLICAS), "replica-a to rejoin", SETTLE_S)
    await wait_for(lambda: all_acknowledged(cluster, set()), "every entry acknowledged", 30)
    await wait_for(no_differences(cluster), "Postgres to equal the emulator", 15)
    assert await cluster.differences() == []


async def hold_writes(
    cluster: Cluster, held: Process, mine: list[Person], hold: Path
) -> dict[Person, str]:
    """An event made for each of ``mine`` while ``held``'s fenced writes wait in the hook; once
    its actors read the notifications and fetched the changes, waiting to commit them."""
    await anyio.Path(hold).touch()
    consumed_before = len(held.records("notification consumed"))
    held_before = len(held.records("fenced write held (fault injection)"))
    probes = {p: cluster.create_event(p, "held") for p in mine}

    async def consumed() -> bool:
        records = held.records("notification consumed")[consumed_before:]
        return {str(p.account_id) for p in mine} <= {str(r["account_id"]) for r in records}

    await wait_for(consumed, "replica-a to read the notifications", 30)

    async def all_held() -> bool:
        # Each actor writes one thing at a time, so one held write per account means every
        # one of them is waiting in the hook (after settling, at most 1 s).
        return len(held.records("fenced write held (fault injection)")) - held_before >= len(mine)

    await wait_for(all_held, "replica-a's syncs to reach the hook", 30)
    for person, event_id in probes.items():
        assert await cluster.stored_title(person, event_id) is None, "a write was not held"
    return probes


async def take_over(
    cluster: Cluster, its_shards: set[int], epochs: dict[int, int], frozen_at: datetime
) -> None:
    """Wait until replica-b holds every shard (replica-a is frozen) and took their epochs."""
    other = cluster.processes["replica-b"]
    await wait_for(lambda: converged(cluster, ["replica-b"]), "replica-b to take over", TTL_S + 30)

    async def epochs_taken() -> bool:
        if not its_shards <= shards_logged(other, "shard claimed", frozen_at):
            return False
        with contextlib.suppress(AssertionError):
            await assert_epochs_taken(cluster, its_shards, epochs)
            return True
        return False

    await wait_for(epochs_taken, "replica-b to take the epochs", 30)


async def assert_epochs_taken(cluster: Cluster, shards: set[int], epochs: dict[int, int]) -> None:
    """Each of ``shards`` has a newer epoch than replica-a's, taken by replica-b."""
    rows = await cluster.pool.fetch(
        "SELECT shard, epoch, owner FROM shard_epochs WHERE shard = ANY($1::int[])",
        sorted(shards),
    )
    assert len(rows) == len(shards)
    for row in rows:
        assert row["owner"] == "replica-b" and row["epoch"] > epochs[row["shard"]], dict(row)


def renamed(cluster: Cluster, probes: dict[Person, str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        for person, event_id in probes.items():
            if await cluster.stored_title(person, event_id) != "renamed while frozen":
                return False
        return True

    return check


async def test_redis_outage_stops_the_shards_and_the_replicas_resume_by_themselves(
    database_url: str, pool: PgPool, tmp_path: Path, private_redis: EmbeddedRedis
) -> None:
    client = Redis.from_url(private_redis.url)
    try:
        async with open_cluster(
            database_url, private_redis.url, client, pool, tmp_path, shards=SHARDS, ttl_s=TTL_S
        ) as cluster:
            await _outage(cluster, private_redis)
    finally:
        await client.aclose()


async def _owners(cluster: Cluster) -> dict[int, str | None] | None:
    """The lease owners, or None while the test's client cannot reach Redis yet."""
    with contextlib.suppress(RedisError, OSError):
        return await cluster.owners()
    return None


async def _outage(cluster: Cluster, server: EmbeddedRedis) -> None:
    people = await start_watching(cluster)
    replicas = [cluster.processes[name] for name in REPLICAS]
    owners = await cluster.owners()
    held = {p.name: {s for s, o in owners.items() if o == p.name} for p in replicas}

    stopped_at, t0 = datetime.now(UTC), time.monotonic()
    server.stop()
    assert not server.running

    async def all_stopped() -> bool:
        return all(held[p.name] <= shards_logged(p, OVERDUE, stopped_at) for p in replicas)

    t1 = await wait_for(all_stopped, "every replica to stop its shards", OUTAGE_S)
    print(f"outage: every shard stopped {t1 - t0:.2f}s after Redis stopped")
    while time.monotonic() - t0 < OUTAGE_S:
        for process in [*replicas, cluster.processes["gateway"]]:
            assert process.running, f"{process.name} exited: {process.log_path.read_text()[-3000:]}"
        await asyncio.sleep(0.5)
    restarted_at = datetime.now(UTC)
    for process in replicas:  # nothing can be claimed without Redis
        assert shards_logged(process, "shard claimed", stopped_at) == set(), process.name
    server.start()
    t2 = time.monotonic()

    async def resumed() -> bool:
        current = await _owners(cluster)
        if current is None or not await converged(cluster, REPLICAS):
            return False
        claimed = [shards_logged(p, "shard claimed", restarted_at) for p in replicas]
        return all(claimed) and set().union(*claimed) == set(range(SHARDS))

    t3 = await wait_for(resumed, "both replicas to claim every shard again", SETTLE_S)
    print(f"outage: every shard claimed again {t3 - t2:.2f}s after Redis restarted")
    probes = {p: cluster.create_event(p, "after the outage") for p in people}
    await wait_for(stored(cluster, probes), "the edits made after the restart to sync", 30)
    await wait_for(lambda: all_acknowledged(cluster, set()), "every entry acknowledged", 30)
    await wait_for(no_differences(cluster), "Postgres to equal the emulator", 15)
    assert await cluster.differences() == []


async def test_a_shard_given_up_during_its_backlog_read_does_not_end_the_inbox(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the split-brain test: the thawed replica's keeper gave a shard up while the
    inbox's backlog read of that shard was in flight, and the reply's bookkeeping raised
    KeyError, which ended the replica."""
    routed: list[InboxEntry] = []

    def route(entry: InboxEntry) -> bool:
        routed.append(entry)
        return True

    box = Inbox(redis, "replica-a", route, lambda _: None)
    read = redis.xreadgroup

    async def given_up_meanwhile(*args: Any, **kwargs: Any) -> Any:
        box.forget(5)  # the keeper stops the shard while the read is in flight
        return await read(*args, **kwargs)

    monkeypatch.setattr(redis, "xreadgroup", given_up_meanwhile)
    assert await box.read_once([5]) == 0  # the backlog read of a newly taken shard
    assert 5 not in box._backlog
    assert routed == []
