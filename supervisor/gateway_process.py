"""Run the gateway until cancelled: ``integration-worker gateway``.

Invariants:
- the schema of a configured database is never changed (the gateway needs no DDL rights;
  ``migrate`` or a replica does that); only embedded throwaway databases are migrated here;
- two listeners: the webhooks on ``host:port`` (internet-facing, bounded by
  ``supervisor.http_server``) and the probes and metrics on the ops port (``gateway.ops``,
  cluster-internal); neither serves the other's paths;
- the listening sockets, the Redis client and the pool are closed when ``serve`` returns or is
  cancelled (cleanup is shielded from the cancellation);
- the access log is off: its lines carry query strings (Graph's validation tokens).
"""

from __future__ import annotations

import anyio
import structlog
from redis.asyncio import Redis

from config.settings import Settings
from gateway.app import create_app
from gateway.limits import DEFAULT_MAX_BODY_BYTES
from gateway.ops import create_ops_app
from kinds import default_registry
from store.db import create_pool
from store.migrate import migrate
from supervisor.http_server import HttpLimits, run_app, serving_ops
from supervisor.services import open_services

log = structlog.get_logger("gateway")


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
            app = create_app(
                pool,
                redis,
                max_body_bytes=max_body_bytes,
                body_deadline_s=settings.http_request_timeout_s,
                max_bodies_in_flight=settings.http_max_bodies_in_flight,
            )
            limits = HttpLimits.from_settings(settings)
            async with serving_ops(create_ops_app(pool, redis), settings, name="gateway ops"):
                await run_app(app, host=host, port=port, limits=limits, name="gateway")
        finally:
            with anyio.CancelScope(shield=True):
                await redis.aclose()
                await pool.close()
