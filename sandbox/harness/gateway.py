"""The real webhook gateway on a loopback port inside the current process, for the in-process
pipeline and the benchmarks: its own Postgres pool and Redis client, as the gateway process has.
"""

from __future__ import annotations

import contextlib

from aiohttp import web
from redis.asyncio import Redis

from gateway.app import create_app
from store.db import create_pool


async def serve_gateway(
    stack: contextlib.AsyncExitStack,
    database_url: str,
    redis_url: str,
    schema: str,
    *,
    max_pool_size: int = 4,
) -> tuple[str, web.Application]:
    """Start the gateway for the rest of ``stack``; its base URL and its application."""
    pool = await create_pool(database_url, schema, max_size=max_pool_size)
    stack.push_async_callback(pool.close)
    redis = Redis.from_url(redis_url)
    stack.push_async_callback(redis.aclose)
    app = create_app(pool, redis)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}", app
