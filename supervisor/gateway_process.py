"""Run the gateway until cancelled: ``integration-worker gateway``.

Invariants:
- the schema of a configured database is never changed (the gateway needs no DDL rights;
  ``migrate`` or a replica does that); only embedded throwaway databases are migrated here;
- the listening socket, the Redis client and the pool are closed when ``serve`` returns or is
  cancelled (cleanup is shielded from the cancellation);
- aiohttp's access log is off: its lines carry query strings (Graph's validation tokens).
"""

from __future__ import annotations

import anyio
import structlog
from aiohttp import web
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.limits import DEFAULT_MAX_BODY_BYTES
from kinds import default_registry
from store.db import create_pool
from store.migrate import migrate
from supervisor.services import open_services

log = structlog.get_logger("gateway")


async def run_app(app: web.Application, *, host: str, port: int) -> None:
    """Serve ``app`` on ``host:port`` until cancelled."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("gateway listening", host=host, port=port)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def serve(
    settings: Settings, *, host: str, port: int, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> None:
    """Open Postgres and Redis from ``settings`` and serve the gateway until cancelled."""
    async with open_services(settings) as urls:
        if urls.embedded:
            await migrate(
                urls.database_url, settings.db_schema, kinds=default_registry().catalog()
            )  # a fresh throwaway database
        pool = await create_pool(urls.database_url, settings.db_schema)
        redis = Redis.from_url(urls.redis_url)
        try:
            await run_app(
                create_app(pool, redis, max_body_bytes=max_body_bytes), host=host, port=port
            )
        finally:
            with anyio.CancelScope(shield=True):
                await redis.aclose()
                await pool.close()
