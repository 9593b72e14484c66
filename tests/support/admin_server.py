"""A running admin API on a free loopback port, on the test's real Postgres and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from redis.asyncio import Redis

from admin.app import create_admin_app
from admin.auth import hash_token
from config.settings import Settings
from store.crypto import Keyring
from store.db import PgPool

TOKEN = "admin-test-token-0123456789"
SHARD_COUNT = 8


def admin_settings(**changes: object) -> Settings:
    """Settings accepting ``TOKEN``, with a few shards (the overview lists every one)."""
    values: dict[str, object] = {
        "api_token_hashes": [hash_token(TOKEN)],
        "shard_count": SHARD_COUNT,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running_admin(
    pool: PgPool, redis: Redis, keyring: Keyring, settings: Settings | None = None
) -> AsyncIterator[str]:
    """Serve the admin API until the block ends; yields its base URL."""
    app = create_admin_app(pool, redis, settings or admin_settings(), keyring)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
