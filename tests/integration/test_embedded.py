"""Embedded servers: real Postgres 16 and Redis on unix sockets, restartable, stopped at exit."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from sandbox.embedded import EmbeddedRedis, Services, embedded_services


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private Redis this test may stop and kill without disturbing the session one."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def no_retry_client(own_redis: EmbeddedRedis) -> AsyncIterator[Redis]:
    """A client that reports a down server at once instead of retrying with backoff."""
    client = Redis.from_url(own_redis.url, retry=Retry(NoBackoff(), 0))
    try:
        yield client
    finally:
        await client.aclose()


async def test_postgres_is_16_on_a_unix_socket_without_fsync(services: Services) -> None:
    if services.postgres is None:
        pytest.skip("external database configured")
    assert "?host=/" in services.database_url
    conn = await asyncpg.connect(services.database_url)
    try:
        version = await conn.fetchval("SELECT version()")
        listen = await conn.fetchval("SHOW listen_addresses")
        fsync = await conn.fetchval("SHOW fsync")
    finally:
        await conn.close()
    assert version.startswith("PostgreSQL 16.")
    assert listen == ""
    assert fsync == "off"  # throwaway data: speed over crash safety


async def test_redis_answers_on_a_unix_socket_only(
    own_redis: EmbeddedRedis, no_retry_client: Redis
) -> None:
    assert own_redis.url == f"unix://{own_redis.socket_path}"
    assert await no_retry_client.ping() is True
    assert await no_retry_client.config_get("port") == {"port": "0"}
    assert await no_retry_client.config_get("save") == {"save": ""}
    assert own_redis.socket_path.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_redis_down_then_back_on_the_same_socket(
    own_redis: EmbeddedRedis, no_retry_client: Redis, how: str
) -> None:
    await no_retry_client.set("k", "v")
    if how == "stop":
        own_redis.stop()
    else:
        own_redis.kill()
    assert not own_redis.running
    with pytest.raises(RedisConnectionError):
        await no_retry_client.ping()

    own_redis.start()
    # The same client reconnects; without appendonly the data went with the process.
    assert await no_retry_client.ping() is True
    assert await no_retry_client.get("k") is None


async def test_redis_appendonly_keeps_data_across_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "aof", appendonly=True).start()
    try:
        async with Redis.from_url(server.url) as client:
            await client.set("k", "v")
        server.stop()
        server.start()
        async with Redis.from_url(server.url) as client:
            assert await client.get("k") == b"v"
    finally:
        server.stop()


def test_redis_stop_is_idempotent(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r")
    server.stop()
    server.start()
    server.start()  # already running: no second process
    server.stop()
    server.stop()
    assert not server.running


def test_redis_rejects_a_socket_path_too_long_for_unix_sockets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        EmbeddedRedis(tmp_path / ("x" * 120))


def _unix_connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
        return True


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A directory outside pytest's tmp_path root.

    Run as root, postgres runs as the "pgserver" user, which must traverse every parent of PGDATA;
    a concurrently starting pytest session resets its tmp_path root to mode 700.
    """
    with tempfile.TemporaryDirectory(prefix="iw-test-") as directory:
        yield Path(directory)


async def test_embedded_services_start_serve_stop_and_keep_a_given_dir(scratch_dir: Path) -> None:
    with embedded_services(scratch_dir / "svc") as svc:
        assert svc.postgres is not None
        assert svc.redis is not None
        conn = await asyncpg.connect(svc.database_url)
        try:
            await conn.execute("CREATE TABLE kept (x int)")
        finally:
            await conn.close()
        async with Redis.from_url(svc.redis_url) as client:
            assert await client.ping() is True
        pg_socket = svc.database_url.split("?host=", 1)[1] + "/.s.PGSQL.5432"
        assert _unix_connectable(pg_socket)

    assert not svc.redis.running
    assert not _unix_connectable(pg_socket)
    assert not _unix_connectable(str(svc.redis.socket_path))

    # A given directory is kept: the next start serves the same data.
    with embedded_services(scratch_dir / "svc") as again:
        conn = await asyncpg.connect(again.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM kept") == 0
        finally:
            await conn.close()


def test_embedded_services_remove_their_temporary_directory() -> None:
    with embedded_services() as svc:
        assert svc.redis is not None
        base = svc.redis.data_dir.parent
        assert (base / "postgres" / "PG_VERSION").exists()
    assert not base.exists()
