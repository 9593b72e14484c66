"""Outbound writes exactly once across real crashes and a takeover, on ``sandbox.harness.cluster``.

Proven, with 16 shards, a 2 s lease TTL, polling off and one Google account per test; the
writer is held by the fault hook (``IW_FAULT_OUTBOX_HOLD_FILE``) at a named point, and the
replica process is then really killed (SIGKILL) or frozen (SIGSTOP) there:
- killed after the binding's commit and before the provider's create (the binding is
  ``creating``, the emulator has no event of it): a new replica process finishes the item; the
  emulator holds exactly one event carrying the binding id, the binding is ``live`` with that
  event's id, and Postgres mirrors it (equal to the emulator's export);
- killed after the provider's create and before our commit (the emulator already has the event,
  the binding is still ``creating``): the same, the new replica adopting the event it finds by
  binding id instead of creating a second one;
- frozen there past its lease while another replica runs: that replica takes the shard under a
  newer epoch, adopts the event and finishes the item; thawed, the frozen replica's late commit
  is refused for its stale epoch (``write refused (stale epoch)``) and changes nothing: still
  exactly one event, and the binding and the mirror are the new owner's.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import pytest
from redis.asyncio import Redis

from actors.account.pause_points import AFTER_BINDING, AFTER_PROVIDER_WRITE
from sandbox.embedded import Services
from sandbox.faults import OUTBOX_HELD
from sandbox.harness.cluster import Cluster, Person, Process, logged_at, open_cluster, wait_for
from store.db import PgPool
from tests.system.test_replicas import converged

SHARDS = 16
TTL_S = 2.0
# Generous: Python processes start on two cores (imports, migrations, first heartbeat).
SETTLE_S = 90.0
REFUSED = "write refused (stale epoch)"
TITLE = "Deadline: quarterly report"


@pytest.fixture
async def cluster(
    database_url: str, services: Services, redis: Redis, pool: PgPool, tmp_path: Path
) -> AsyncIterator[Cluster]:
    async with open_cluster(
        database_url, services.redis_url, redis, pool, tmp_path, shards=SHARDS, ttl_s=TTL_S
    ) as running:
        yield running


def hold_env(hold: Path, point: str) -> dict[str, str]:
    return {"IW_FAULT_OUTBOX_HOLD_FILE": str(hold), "IW_FAULT_OUTBOX_HOLD_AT": point}


async def settled(cluster: Cluster, names: list[str]) -> None:
    """Wait until ``names`` share the shards and the account synced and watches."""
    await wait_for(lambda: converged(cluster, names), "the replicas to share", SETTLE_S)
    await wait_for(cluster.watching, "the account to sync and watch", SETTLE_S)


async def hold_an_upsert(
    cluster: Cluster, person: Person, hold: Path, replicas: list[Process]
) -> tuple[int, Process]:
    """Enqueue an upsert while the hold file exists; its id and the replica whose writer holds
    it (a log line, not a sleep, says it got there)."""
    await anyio.Path(hold).touch()
    item_id = await cluster.enqueue_upsert(person, "t-1", TITLE)

    async def holding() -> bool:
        return any(holds(p, person) for p in replicas)

    await wait_for(holding, "the writer to reach the fault point", 30)
    (held,) = [p for p in replicas if holds(p, person)]
    return item_id, held


def holds(process: Process, person: Person) -> bool:
    return any(r.get("actor") == str(person.account_id) for r in process.records(OUTBOX_HELD))


async def binding_row(cluster: Cluster, person: Person) -> dict[str, Any]:
    row = await cluster.pool.fetchrow(
        "SELECT id, state, generation, provider_event_id FROM event_bindings"
        " WHERE account_id = $1 AND source_id = 't-1'",
        person.account_id,
    )
    assert row is not None, "no binding"
    return dict(row)


async def item_state(cluster: Cluster, item_id: int) -> str:
    return str(await cluster.pool.fetchval("SELECT state FROM outbox WHERE id = $1", item_id))


def item_done(cluster: Cluster, item_id: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await item_state(cluster, item_id) == "done"

    return check


def no_differences(cluster: Cluster) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not await cluster.differences()

    return check


async def assert_held_where(cluster: Cluster, person: Person, point: str) -> UUID:
    """The binding is committed and still ``creating``; the provider has the event only once
    the create was made. The binding's id."""
    binding = await binding_row(cluster, person)
    assert binding["state"] == "creating" and binding["provider_event_id"] is None
    made = cluster.bound_events(person, binding["id"])
    assert len(made) == (1 if point == AFTER_PROVIDER_WRITE else 0), made
    return UUID(str(binding["id"]))


async def assert_written_once(cluster: Cluster, person: Person, item_id: int) -> None:
    """The item is done, the emulator has one event of its binding, the binding is live with it
    and Postgres mirrors the emulator."""
    assert await item_state(cluster, item_id) == "done"
    binding = await binding_row(cluster, person)
    made = cluster.bound_events(person, binding["id"])
    assert len(made) == 1, f"{len(made)} events for one source: {made}"
    (event,) = made
    assert event.get("status", "confirmed") == "confirmed" and event["summary"] == TITLE
    assert binding["state"] == "live" and binding["provider_event_id"] == event["id"]
    assert binding["generation"] == 0  # never recreated: the first create's id
    assert await cluster.stored_title(person, str(event["id"])) == TITLE
    await wait_for(no_differences(cluster), "Postgres to equal the emulator", 15)


@pytest.mark.parametrize("point", [AFTER_BINDING, AFTER_PROVIDER_WRITE])
async def test_a_replica_killed_mid_create_leaves_exactly_one_event(
    cluster: Cluster, tmp_path: Path, point: str
) -> None:
    hold = tmp_path / "hold"
    person = await cluster.add_person("ada@example.com")
    first = await cluster.start_replica("replica-a", **hold_env(hold, point))
    await settled(cluster, ["replica-a"])

    item_id, _ = await hold_an_upsert(cluster, person, hold, [first])
    await assert_held_where(cluster, person, point)
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    await anyio.Path(hold).unlink()
    assert await item_state(cluster, item_id) == "pending"

    await cluster.start_replica("replica-b")
    await wait_for(item_done(cluster, item_id), "the new replica to finish the item", SETTLE_S)
    await assert_written_once(cluster, person, item_id)


async def test_a_takeover_during_a_create_leaves_exactly_one_event(
    cluster: Cluster, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    person = await cluster.add_person("ada@example.com")
    names = ["replica-a", "replica-b"]
    replicas = [
        await cluster.start_replica(n, **hold_env(hold, AFTER_PROVIDER_WRITE)) for n in names
    ]
    await settled(cluster, names)

    item_id, held = await hold_an_upsert(cluster, person, hold, replicas)
    (other,) = [p for p in replicas if p is not held]
    assert (await cluster.owners())[person.shard] == held.name
    held_epoch = claimed_epoch(held, person.shard, None)
    await assert_held_where(cluster, person, AFTER_PROVIDER_WRITE)

    frozen_at = datetime.now(UTC)
    held.send(signal.SIGSTOP)
    try:
        await anyio.Path(hold).unlink()  # the frozen writer sees it gone only once thawed
        await wait_for(item_done(cluster, item_id), "the other replica to finish it", SETTLE_S)
        taken_epoch = claimed_epoch(other, person.shard, frozen_at)
        assert taken_epoch > held_epoch, (taken_epoch, held_epoch)
    finally:
        held.send(signal.SIGCONT)

    async def refused() -> bool:
        return any(int(r["shard"]) == person.shard for r in held.records(REFUSED))

    await wait_for(refused, "the thawed writer's late commit to be refused", 30)
    assert held.running
    await assert_written_once(cluster, person, item_id)


def claimed_epoch(process: Process, shard: int, since: datetime | None) -> int:
    """The epoch of ``process``'s latest claim of ``shard`` (since ``since``); fails if none."""
    epochs = [
        int(r["epoch"])
        for r in process.records("shard claimed")
        if int(r["shard"]) == shard and (since is None or logged_at(r) >= since)
    ]
    assert epochs, f"{process.name} did not claim shard {shard}"
    return epochs[-1]
