"""The shard keeper against the real Redis and Postgres, with short leases: replicas split the
shards evenly with one owner per shard, a clean leave hands its shards over, a dead replica's
shards are taken once its leases lapse, and a replica cut off from Redis stops its shards before
they can be taken, then takes its share again when Redis answers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlparse

import pytest
from redis.asyncio import Redis

from cluster.keys import lease_key
from cluster.lease_state import LeasePolicy
from cluster.leases import LeaseStore
from cluster.shard_keeper import ShardKeeper
from sandbox.embedded import Services
from store.db import PgPool

SHARDS = 8
POLICY = LeasePolicy(ttl_s=1.0)


class Recorder:
    """A ShardOwner that records which shards run, refusing to start one twice."""

    def __init__(self) -> None:
        self.running: dict[int, int] = {}
        self.stops = 0

    async def start_shard(self, shard: int, epoch: int) -> None:
        assert shard not in self.running
        self.running[shard] = epoch

    async def stop_shard(self, shard: int) -> None:
        self.running.pop(shard, None)
        self.stops += 1


class Replica:
    def __init__(self, name: str, redis: Redis, pool: PgPool) -> None:
        self.owner = Recorder()
        self.keeper = ShardKeeper(
            LeaseStore(redis, name, ttl_s=POLICY.ttl_s),
            pool,
            self.owner,
            SHARDS,
            policy=POLICY,
            rng=random.Random(name),
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.keeper.run(), name=f"keeper[{self.keeper.replica_id}]")

    async def kill(self) -> None:
        """Stop without releasing anything, like kill -9."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def leave(self) -> None:
        await self.kill()
        await self.keeper.shutdown()


async def until(predicate: Callable[[], bool | Awaitable[bool]], what: str, s: float = 15) -> None:
    deadline = time.monotonic() + s
    while True:
        result = predicate()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def split_evenly(*replicas: Replica) -> bool:
    counts = [len(r.owner.running) for r in replicas]
    owned = [s for r in replicas for s in r.owner.running]
    return sorted(owned) == list(range(SHARDS)) and max(counts) - min(counts) <= 1


@pytest.fixture
async def replicas(redis: Redis, pool: PgPool) -> AsyncIterator[list[Replica]]:
    made: list[Replica] = []
    yield made
    for replica in made:
        await replica.kill()


async def test_replicas_split_the_shards_and_a_leaver_hands_them_over(
    redis: Redis, pool: PgPool, replicas: list[Replica]
) -> None:
    a, b = Replica("a", redis, pool), Replica("b", redis, pool)
    replicas += [a, b]
    a.start()
    b.start()
    await until(lambda: split_evenly(a, b), "an even split")
    epochs = await pool.fetch("SELECT shard, epoch, owner FROM shard_epochs ORDER BY shard")
    held = {**{s: ("a", e) for s, e in a.owner.running.items()}}
    held |= {s: ("b", e) for s, e in b.owner.running.items()}
    assert {r["shard"]: (r["owner"], r["epoch"]) for r in epochs} == held
    await b.leave()
    assert b.owner.running == {}
    await until(lambda: len(a.owner.running) == SHARDS, "a to take b's shards")


async def test_a_dead_replicas_shards_move_after_its_leases_lapse(
    redis: Redis, pool: PgPool, replicas: list[Replica]
) -> None:
    a, b = Replica("a", redis, pool), Replica("b", redis, pool)
    replicas += [a, b]
    a.start()
    b.start()
    await until(lambda: split_evenly(a, b), "an even split")
    orphans = set(b.owner.running)
    old_epochs = dict(b.owner.running)
    await b.kill()
    killed_at = time.monotonic()
    await until(lambda: orphans <= set(a.owner.running), "a to take the orphans")
    assert time.monotonic() - killed_at < POLICY.ttl_s + 2
    assert all(a.owner.running[s] > old_epochs[s] for s in orphans)  # fenced out


class SlowStops(Recorder):
    """A ShardOwner whose stops wait until the test lets them finish."""

    def __init__(self) -> None:
        super().__init__()
        self.let_stop = asyncio.Event()

    async def stop_shard(self, shard: int) -> None:
        await self.let_stop.wait()
        await super().stop_shard(shard)


async def test_a_slow_stop_does_not_hold_the_other_leases_renewals(
    redis: Redis, pool: PgPool, replicas: list[Replica]
) -> None:
    a, b = Replica("a", redis, pool), Replica("b", redis, pool)
    a.owner = a.keeper.owner = SlowStops()
    replicas += [a, b]
    a.start()
    await until(lambda: len(a.owner.running) == SHARDS, "a to take every shard")
    b.start()

    def releasing() -> list[int]:
        return [s for s, lease in a.keeper.leases.items() if lease.state.value == "releasing"]

    await until(lambda: len(releasing()) == SHARDS // 2, "a to start handing b its share")
    kept = set(a.keeper.owned())
    # Longer than a whole TTL: renewals of the kept leases (and of the releasing ones) must go
    # on meanwhile, else they would be overdue and lost.
    await asyncio.sleep(POLICY.ttl_s * 1.5)
    assert a.keeper.statistics.losses == 0
    assert set(a.keeper.owned()) == kept
    assert len(releasing()) == SHARDS // 2
    a.owner.let_stop.set()
    await until(lambda: split_evenly(a, b), "an even split")
    assert a.keeper.statistics.losses == 0


async def test_a_shutdown_releases_shards_whose_handover_was_under_way(
    redis: Redis, pool: PgPool, replicas: list[Replica]
) -> None:
    a, b = Replica("a", redis, pool), Replica("b", redis, pool)
    a.owner = a.keeper.owner = SlowStops()
    replicas += [a, b]
    a.start()
    await until(lambda: len(a.owner.running) == SHARDS, "a to take every shard")
    b.start()

    def releasing() -> int:
        return sum(lease.state.value == "releasing" for lease in a.keeper.leases.values())

    await until(lambda: releasing() == SHARDS // 2, "a to start handing b its share")
    await a.kill()  # the handover's stops are cut short with the loop
    a.owner.let_stop.set()
    await a.keeper.shutdown()
    assert a.owner.running == {}
    raw = await redis.mget([lease_key(s) for s in range(SHARDS)])
    holders = [h.decode() if isinstance(h, bytes) else h for h in raw]
    assert not any(h is not None and h.startswith("a/") for h in holders)  # all deleted
    await until(lambda: len(b.owner.running) == SHARDS, "b to take every shard at once")


class Proxy:
    """A TCP proxy to the Redis unix socket that the test can cut and restore."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        self.writers += [writer, up_writer]
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer), name="proxy-up"),
            asyncio.create_task(self._pipe(up_reader, writer), name="proxy-down"),
        ):
            self.links.add(task)
            task.add_done_callback(self.links.discard)

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one, in both directions."""
        assert self.server is not None
        self.server.close()
        for task in list(self.links):
            task.cancel()
        await asyncio.gather(*self.links, return_exceptions=True)
        writers, self.writers = self.writers, []
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self.server.wait_closed()


async def test_a_replica_cut_off_from_redis_stops_then_resumes(
    redis: Redis, pool: PgPool, services: Services, replicas: list[Replica]
) -> None:
    parsed = urlparse(services.redis_url)
    if parsed.scheme != "unix":
        pytest.skip("the proxy reaches the embedded Redis by its unix socket")
    proxy = Proxy(parsed.path)
    await proxy.open()
    cut_off = Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.3)
    try:
        a, b = Replica("a", redis, pool), Replica("b", cut_off, pool)
        replicas += [a, b]
        a.start()
        b.start()
        await until(lambda: split_evenly(a, b), "an even split")
        await proxy.cut()
        # b stops its shards before a can take them: never two runners of one shard.
        while len(a.owner.running) < SHARDS:
            assert not set(a.owner.running) & set(b.owner.running)
            await asyncio.sleep(0.02)
        assert b.owner.running == {}
        await proxy.open()  # Redis answers again on the same port
        await until(lambda: split_evenly(a, b), "b to take its share again")
    finally:
        await cut_off.aclose()
        await proxy.cut()
