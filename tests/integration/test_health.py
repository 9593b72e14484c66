"""``/healthz`` and ``/readyz`` of the gateway and of a replica's ops server, against real
Postgres and Redis: readiness fails when Redis is stopped or unreachable, and comes back."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from cluster.lease_state import LeasePolicy
from cluster.leases import LeaseStore
from cluster.shard_keeper import ShardKeeper
from config.settings import Settings, load_settings
from gateway.ops import create_ops_app
from sandbox.embedded import EmbeddedRedis
from store.crypto import generate_key
from store.db import PgPool, create_pool
from supervisor.ops_server import open_ops_server
from supervisor.replica import open_replica
from supervisor.services import ServiceUrls
from tests.conftest import SCHEMA


async def get(url: str) -> tuple[int, Any]:
    """(status, parsed JSON body) of a GET."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, orjson.loads(await response.read())


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the gateway ----------------------------------------------------------------------------


async def serve_gateway(pool: PgPool, redis: Redis) -> TestServer:
    server = TestServer(create_ops_app(pool, redis))
    await server.start_server()
    return server


async def test_gateway_is_ready_with_postgres_and_redis(pool: PgPool, redis: Redis) -> None:
    server = await serve_gateway(pool, redis)
    try:
        base = str(server.make_url("")).rstrip("/")
        assert await get(f"{base}/healthz") == (200, {"status": "ok"})
        status, body = await get(f"{base}/readyz")
        assert (status, body["checks"]) == (200, {"postgres": "ok", "redis": "ok"})
    finally:
        await server.close()


class CountingPool:
    """The real pool, counting the readiness queries that reach it."""

    def __init__(self, pool: PgPool) -> None:
        self.pool = pool
        self.queries = 0

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return await self.pool.fetchval(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


async def test_a_flood_of_readiness_probes_costs_one_query(pool: PgPool, redis: Redis) -> None:
    # Before: /readyz is unauthenticated and ran a query per call.
    counting = CountingPool(pool)
    server = TestServer(create_ops_app(counting, redis))
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        answers = await asyncio.gather(*(get(f"{base}/readyz") for _ in range(50)))
        assert {status for status, _ in answers} == {200}
        assert counting.queries == 1
    finally:
        await server.close()


async def test_gateway_is_not_ready_when_redis_is_unreachable(pool: PgPool) -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0")
    server = await serve_gateway(pool, unreachable)
    try:
        base = str(server.make_url("")).rstrip("/")
        status, body = await get(f"{base}/readyz")
        assert (status, body["status"], body["failed"]) == (503, "unavailable", ["redis"])
        assert body["checks"]["postgres"] == "ok"
        assert (await get(f"{base}/healthz"))[0] == 200  # alive all the same
    finally:
        await server.close()
        await unreachable.aclose()


async def test_gateway_is_not_ready_when_postgres_is_unreachable(
    database_url: str, redis: Redis
) -> None:
    closed = await create_pool(database_url, SCHEMA, max_size=1)
    await closed.close()  # every query now fails, as with a database that went away
    server = await serve_gateway(closed, redis)
    try:
        base = str(server.make_url("")).rstrip("/")
        status, body = await get(f"{base}/readyz")
        assert (status, body["failed"], body["checks"]["redis"]) == (503, ["postgres"], "ok")
        assert body["checks"]["postgres"].startswith("unreachable")
    finally:
        await server.close()


# --- a replica's ops server ------------------------------------------------------------------


class NoShards:
    """A shard owner with nothing to run (the keeper's claims need no actors here)."""

    async def start_shard(self, shard: int, epoch: int) -> None:
        return None

    async def stop_shard(self, shard: int) -> None:
        return None


def ops_settings(database_url: str, redis_url: str, **changes: Any) -> Settings:
    key = base64.urlsafe_b64encode(generate_key()).decode()
    fields: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "shard_count": 2,
        "monitor_enabled": False,
        "ops_port": 0,
        "replica_id": "replica-health",
        "encryption_keys": {"k": key},
        "encryption_key_id": "k",
    }
    return load_settings(**(fields | changes))


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own, to stop and start again."""
    with tempfile.TemporaryDirectory(prefix="iw-health-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis").start()
        try:
            yield server
        finally:
            server.stop()


async def test_replica_readiness_follows_redis_and_the_shard_keeper(
    database_url: str, own_redis: EmbeddedRedis
) -> None:
    settings = ops_settings(database_url, own_redis.url)
    urls = ServiceUrls(database_url, own_redis.url, embedded=False)
    async with open_replica(settings, urls) as replica:
        assert replica.lease_redis is not None
        keeper: ShardKeeper | None = None
        async with open_ops_server(settings, replica, lambda: keeper) as server:
            assert server is not None
            assert await get(f"{server.url}/healthz") == (200, {"status": "ok"})
            status, body = await get(f"{server.url}/readyz")  # the keeper has not started
            assert (status, body["failed"]) == (503, ["shards"])

            # A long TTL: a heartbeat slowed by a busy machine must not count as unreachable.
            store = LeaseStore(replica.lease_redis, settings.replica_id, ttl_s=10.0)
            policy = LeasePolicy(ttl_s=10.0)
            now = [0.0]  # the keeper's clock: each tick below is a heartbeat period later
            keeper = ShardKeeper(
                store, replica.pool, NoShards(), 2, policy=policy, clock=lambda: now[0]
            )
            await keeper.tick()  # one heartbeat: a live member, standing by (no shards yet)
            assert keeper.owned() == []
            status, body = await get(f"{server.url}/readyz")
            assert (status, body["checks"]) == (
                200,
                {"postgres": "ok", "redis": "ok", "shards": "ok"},
            )

            own_redis.kill()
            status, body = await get(f"{server.url}/readyz")
            assert (status, body["failed"]) == (503, ["redis"])
            now[0] += 5.0
            await keeper.tick()  # its heartbeat fails too: no longer a live member
            status, body = await get(f"{server.url}/readyz")
            assert (status, body["failed"]) == (503, ["redis", "shards"])

            own_redis.start()
            now[0] += 5.0
            await keeper.tick()
            status, body = await get(f"{server.url}/readyz")
            assert status == 200, body
            await keeper.shutdown()


async def test_ops_server_is_optional_and_a_taken_port_does_not_stop_the_replica(
    database_url: str, own_redis: EmbeddedRedis, json_logs: io.StringIO
) -> None:
    urls = ServiceUrls(database_url, own_redis.url, embedded=False)
    disabled = ops_settings(database_url, own_redis.url, ops_enabled=False)
    async with (
        open_replica(disabled, urls) as replica,
        open_ops_server(disabled, replica, lambda: None) as server,
    ):
        assert server is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        settings = ops_settings(database_url, own_redis.url, ops_port=port)
        async with (
            open_replica(settings, urls) as replica,
            open_ops_server(settings, replica, lambda: None) as server,
        ):
            assert server is None
            assert await replica.redis.ping()  # the replica itself runs on
    assert "ops server not started" in json_logs.getvalue()
